//! CPU formats of ggml's quantized blocks: dequantization of whole rows.
//!
//! Layouts (little endian, `d`/`m`/`dmin` are f16):
//! - Q4_0: `d, qs[16]`; x = d * (q - 8), low nibbles are elements 0..16, high 16..32.
//! - Q4_1: `d, m, qs[16]`; x = d * q + m, same nibble order.
//! - Q8_0: `d, qs[32] (i8)`; x = d * q.
//! - Q4_K, Q6_K: 256-element super-blocks (see `dequantize_q4_k`, `dequantize_q6_k`).

use super::{GgmlType, ModelError};
use half::{bf16, f16};

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantizes `data` (a whole number of blocks of `ty`) into `out`, whose length is the
/// number of elements `data` holds.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), ModelError> {
    let expected = ty.bytes_for(out.len());
    if expected != Some(data.len()) {
        return Err(ModelError::Malformed(format!(
            "{} data of {} bytes cannot hold {} elements",
            ty.name(),
            data.len(),
            out.len()
        )));
    }
    let bb = ty.block_bytes();
    let be = ty.block_elems();
    for (block, dst) in data.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        match ty {
            GgmlType::F32 => dst[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            GgmlType::F16 => dst[0] = f16_at(block, 0),
            GgmlType::BF16 => dst[0] = bf16::from_le_bytes([block[0], block[1]]).to_f32(),
            GgmlType::Q4_0 => {
                let d = f16_at(block, 0);
                for (j, &q) in block[2..18].iter().enumerate() {
                    dst[j] = d * ((q & 0x0f) as f32 - 8.0);
                    dst[j + 16] = d * ((q >> 4) as f32 - 8.0);
                }
            }
            GgmlType::Q4_1 => {
                let d = f16_at(block, 0);
                let m = f16_at(block, 2);
                for (j, &q) in block[4..20].iter().enumerate() {
                    dst[j] = d * (q & 0x0f) as f32 + m;
                    dst[j + 16] = d * (q >> 4) as f32 + m;
                }
            }
            GgmlType::Q8_0 => {
                let d = f16_at(block, 0);
                for (j, &q) in block[2..34].iter().enumerate() {
                    dst[j] = d * (q as i8) as f32;
                }
            }
            GgmlType::Q4_K => dequantize_q4_k(block, dst),
            GgmlType::Q6_K => dequantize_q6_k(block, dst),
        }
    }
    Ok(())
}

/// Q4_K super-block (144 bytes): `d, dmin` (f16), `scales[12]` (eight 6-bit scales and
/// eight 6-bit mins, packed), `qs[128]` (4-bit quants). 8 sub-blocks of 32 elements;
/// x = d * sc * q - dmin * m.
fn dequantize_q4_k(block: &[u8], dst: &mut [f32]) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for pair in 0..4 {
        let (sc0, m0) = q4_k_scale_min(2 * pair, scales);
        let (sc1, m1) = q4_k_scale_min(2 * pair + 1, scales);
        let q = &qs[32 * pair..32 * pair + 32];
        let out = &mut dst[64 * pair..64 * pair + 64];
        for l in 0..32 {
            out[l] = d * sc0 as f32 * (q[l] & 0x0f) as f32 - dmin * m0 as f32;
            out[l + 32] = d * sc1 as f32 * (q[l] >> 4) as f32 - dmin * m1 as f32;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K super-block.
pub fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q6_K super-block (210 bytes): `ql[128]` (low 4 bits), `qh[64]` (high 2 bits),
/// `scales[16]` (i8), `d` (f16). x = d * scale * (q - 32).
fn dequantize_q6_k(block: &[u8], dst: &mut [f32]) {
    let ql = &block[0..128];
    let qh = &block[128..192];
    let sc = &block[192..208];
    let d = f16_at(block, 208);
    for half in 0..2 {
        let ql = &ql[64 * half..];
        let qh = &qh[32 * half..];
        let sc = &sc[8 * half..];
        let out = &mut dst[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Dot product of one row stored as `ty` (`row` holds `x.len()` elements) with `x`,
/// dequantizing block by block and summing in order (the CPU reference of every matvec).
pub fn dot(ty: GgmlType, row: &[u8], x: &[f32]) -> Result<f32, ModelError> {
    let be = ty.block_elems().max(32);
    let bb = ty.bytes_for(be).ok_or_else(|| {
        ModelError::Malformed(format!("{} has no whole blocks of {be}", ty.name()))
    })?;
    if ty.bytes_for(x.len()) != Some(row.len()) {
        return Err(ModelError::Malformed(format!(
            "{} row of {} bytes cannot hold {} elements",
            ty.name(),
            row.len(),
            x.len()
        )));
    }
    let mut buf = [0f32; 256];
    let mut acc = 0f32;
    let mut rest = x;
    let mut bytes = row;
    while !rest.is_empty() {
        let n = rest.len().min(be);
        let nb = if n == be { bb } else { bytes.len() };
        dequantize(ty, &bytes[..nb], &mut buf[..n])?;
        for (a, b) in buf[..n].iter().zip(&rest[..n]) {
            acc += a * b;
        }
        rest = &rest[n..];
        bytes = &bytes[nb..];
    }
    Ok(acc)
}

/// Quantizes `x` (a whole number of blocks) into `ty`'s format. The encoders are simple
/// (round to nearest on a max-derived scale, not llama.cpp's search); they exist so tests
/// can build quantized weights. `F32`, `F16` and `BF16` are converted.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>, ModelError> {
    if !x.len().is_multiple_of(ty.block_elems()) {
        return Err(ModelError::Malformed(format!(
            "{} elements are not whole {} blocks",
            x.len(),
            ty.name()
        )));
    }
    Ok(match ty {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => x
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => quantize_q8_0(x),
        GgmlType::Q4_0 => quantize_q4_0(x),
        GgmlType::Q4_1 => quantize_q4_1(x),
        GgmlType::Q4_K => quantize_q4_k(x),
        GgmlType::Q6_K => quantize_q6_k(x),
    })
}

fn push_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Q8_0: `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let dq = f16::from_f32(d).to_f32();
        let inv = if dq != 0.0 { 1.0 / dq } else { 0.0 };
        push_f16(&mut out, d);
        out.extend(
            b.iter()
                .map(|v| (v * inv).round().clamp(-128.0, 127.0) as i8 as u8),
        );
    }
    out
}

/// Q4_0: `d = max / -8` of the element of largest magnitude, `q = round(x / d) + 8`.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for b in x.chunks_exact(32) {
        let max = b
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let dq = f16::from_f32(d).to_f32();
        let inv = if dq != 0.0 { 1.0 / dq } else { 0.0 };
        push_f16(&mut out, d);
        let q = |v: f32| ((v * inv + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(b[j]) | (q(b[j + 16]) << 4));
        }
    }
    out
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, `q = round((x - m) / d)`.
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 20);
    for b in x.chunks_exact(32) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let dq = f16::from_f32(d).to_f32();
        let mq = f16::from_f32(min).to_f32();
        let inv = if dq != 0.0 { 1.0 / dq } else { 0.0 };
        push_f16(&mut out, d);
        push_f16(&mut out, min);
        let q = |v: f32| ((v - mq) * inv).round().clamp(0.0, 15.0) as u8;
        for j in 0..16 {
            out.push(q(b[j]) | (q(b[j + 16]) << 4));
        }
    }
    out
}

/// Q4_K: per 32-element sub-block a scale and a min, themselves 6-bit multiples of the
/// super-block's `d` and `dmin`.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 256 * 144);
    for sb in x.chunks_exact(256) {
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        for (j, sub) in sb.chunks_exact(32).enumerate() {
            let min = sub.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
            let max = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scales[j] = (max - min) / 15.0;
            mins[j] = -min;
        }
        let max_scale = scales.iter().copied().fold(0f32, f32::max);
        let max_min = mins.iter().copied().fold(0f32, f32::max);
        let d = f16::from_f32(max_scale / 63.0).to_f32();
        let dmin = f16::from_f32(max_min / 63.0).to_f32();
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for j in 0..8 {
            sc[j] = if d > 0.0 {
                (scales[j] / d).round().clamp(0.0, 63.0) as u8
            } else {
                0
            };
            mn[j] = if dmin > 0.0 {
                (mins[j] / dmin).round().clamp(0.0, 63.0) as u8
            } else {
                0
            };
        }
        push_f16(&mut out, d);
        push_f16(&mut out, dmin);
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        out.extend_from_slice(&s);
        let mut q = [0u8; 256];
        for j in 0..8 {
            let scale = d * sc[j] as f32;
            let m = dmin * mn[j] as f32;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for l in 0..32 {
                q[32 * j + l] = ((sb[32 * j + l] + m) * inv).round().clamp(0.0, 15.0) as u8;
            }
        }
        for pair in 0..4 {
            for l in 0..32 {
                out.push(q[64 * pair + l] | (q[64 * pair + 32 + l] << 4));
            }
        }
    }
    out
}

/// Q6_K: per 16-element group an i8 scale (a multiple of the super-block's `d`), 6-bit
/// quants stored as 4 low bits (`ql`) and 2 high bits (`qh`).
pub fn quantize_q6_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 256 * 210);
    for sb in x.chunks_exact(256) {
        let mut gscale = [0f32; 16];
        for (g, grp) in sb.chunks_exact(16).enumerate() {
            gscale[g] = grp.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0;
        }
        let max_scale = gscale.iter().copied().fold(0f32, f32::max);
        let d = f16::from_f32(max_scale / 127.0).to_f32();
        let mut sc = [0i8; 16];
        let mut q = [0u8; 256];
        for g in 0..16 {
            sc[g] = if d > 0.0 {
                (gscale[g] / d).round().clamp(-128.0, 127.0) as i8
            } else {
                0
            };
            let s = d * sc[g] as f32;
            let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
            for l in 0..16 {
                let v = (sb[16 * g + l] * inv).round().clamp(-32.0, 31.0) as i32;
                q[16 * g + l] = (v + 32) as u8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            for l in 0..32 {
                let e = 128 * half;
                let (q1, q2, q3, q4) = (q[e + l], q[e + l + 32], q[e + l + 64], q[e + l + 96]);
                ql[64 * half + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                ql[64 * half + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                qh[32 * half + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        push_f16(&mut out, d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 1.7) + 0.1)
            .collect()
    }

    /// Quantize-then-dequantize stays within each format's step size, and `dot` equals
    /// the dot product of the dequantized row.
    #[test]
    fn quantize_round_trips_within_step() {
        let x = wave(512, 0.3);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (ty, tol) in [
            (GgmlType::F16, 1e-3),
            (GgmlType::BF16, 1e-2),
            (GgmlType::Q8_0, amax / 127.0),
            (GgmlType::Q4_0, amax / 7.0),
            (GgmlType::Q4_1, 2.0 * amax / 15.0),
            (GgmlType::Q4_K, 2.0 * amax / 13.0),
            (GgmlType::Q6_K, amax / 25.0),
        ] {
            let q = quantize(ty, &x).expect("whole blocks");
            assert_eq!(Some(q.len()), ty.bytes_for(x.len()), "{}", ty.name());
            let mut back = vec![0f32; x.len()];
            dequantize(ty, &q, &mut back).expect("sizes match");
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                assert!((a - b).abs() <= tol, "{} elem {i}: {a} vs {b}", ty.name());
            }
            let y = wave(512, 1.1);
            let want: f32 = back.iter().zip(&y).map(|(a, b)| a * b).sum();
            let got = dot(ty, &q, &y).expect("sizes match");
            assert!(
                (want - got).abs() <= 1e-3 * want.abs().max(1.0),
                "{}",
                ty.name()
            );
        }
    }
}

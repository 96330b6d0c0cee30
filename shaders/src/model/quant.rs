//! CPU formats of ggml's quantized blocks: dequantization of whole rows.
//!
//! Layouts (little endian, `d`/`m`/`dmin` are f16), as ggml-quants.c reads them:
//! - Q4_0: `d, qs[16]`; x = d * (q - 8), low nibbles are elements 0..16, high 16..32.
//! - Q4_1: `d, m, qs[16]`; x = d * q + m, same nibble order.
//! - Q5_0: `d, qh (u32), qs[16]`; x = d * (q - 16), q = nibble | bit j of qh << 4 for
//!   element j (same nibble order).
//! - Q5_1: `d, m, qh (u32), qs[16]`; x = d * q + m, q as Q5_0's.
//! - Q8_0: `d, qs[32] (i8)`; x = d * q.
//! - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: 256-element super-blocks (see `dequantize_q2_k` and
//!   its siblings).

use super::{GgmlType, ModelError};
use half::{bf16, f16};

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// The little-endian u32 at byte `at`.
pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The 5-bit quant (0..32) of element `e` (0..32) of a Q5_0/Q5_1 block: its nibble of
/// `qs[16]` (low for e < 16, high for the rest) with bit `e` of `qh` as the fifth bit.
pub fn q5_quant(qs: &[u8], qh: u32, e: usize) -> u8 {
    let nibble = if e < 16 {
        qs[e] & 0x0f
    } else {
        qs[e - 16] >> 4
    };
    nibble | ((((qh >> e) & 1) as u8) << 4)
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
            GgmlType::Q5_0 => {
                let d = f16_at(block, 0);
                let qh = u32_at(block, 2);
                for (e, o) in dst.iter_mut().enumerate() {
                    *o = d * (q5_quant(&block[6..22], qh, e) as i32 - 16) as f32;
                }
            }
            GgmlType::Q5_1 => {
                let d = f16_at(block, 0);
                let m = f16_at(block, 2);
                let qh = u32_at(block, 4);
                for (e, o) in dst.iter_mut().enumerate() {
                    *o = d * q5_quant(&block[8..24], qh, e) as f32 + m;
                }
            }
            GgmlType::Q8_0 => {
                let d = f16_at(block, 0);
                for (j, &q) in block[2..34].iter().enumerate() {
                    dst[j] = d * (q as i8) as f32;
                }
            }
            GgmlType::Q2_K => dequantize_q2_k(block, dst),
            GgmlType::Q3_K => dequantize_q3_k(block, dst),
            GgmlType::Q4_K => dequantize_q4_k(block, dst),
            GgmlType::Q5_K => dequantize_q5_k(block, dst),
            GgmlType::Q6_K => dequantize_q6_k(block, dst),
        }
    }
    Ok(())
}

/// The 2-bit field of element `e` (0..256) in a Q2_K or Q3_K super-block's `qs[64]`:
/// each 128-element half has 32 bytes, and element `32j + l` of the half sits in bits
/// `2j..2j + 2` of byte `l`.
pub fn k_quant_2bit(qs: &[u8], e: usize) -> u8 {
    (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3
}

/// Q2_K super-block (84 bytes): `scales[16]` (per 16 elements a 4-bit scale, low nibble,
/// and a 4-bit min, high nibble), `qs[64]` (2-bit quants), `d, dmin` (f16).
/// x = d * sc * q - dmin * m.
fn dequantize_q2_k(block: &[u8], dst: &mut [f32]) {
    let (scales, qs) = (&block[0..16], &block[16..80]);
    let d = f16_at(block, 80);
    let dmin = f16_at(block, 82);
    for (g, out) in dst.chunks_exact_mut(16).enumerate() {
        // The products in f32 as ggml forms them: the GPU's scales are these values.
        let dl = d * (scales[g] & 0x0f) as f32;
        let ml = dmin * (scales[g] >> 4) as f32;
        for (l, o) in out.iter_mut().enumerate() {
            *o = dl * k_quant_2bit(qs, 16 * g + l) as f32 - ml;
        }
    }
}

/// The 6-bit scale of 16-element group `j` (0..16) of a Q3_K super-block, less 32:
/// low 4 bits in `s[j]` (j < 8, low nibble) or `s[j - 8]` (high nibble), high 2 bits
/// in bits `2 (j / 4)` of `s[8 + j % 4]`.
pub fn q3_k_scale(j: usize, s: &[u8]) -> i32 {
    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// Q3_K super-block (110 bytes): `hmask[32]` (the third bit of each quant), `qs[64]`
/// (the low 2 bits, as Q2_K's), `scales[12]` (sixteen packed 6-bit scales), `d` (f16).
/// x = d * (sc - 32) * (q - 4), q = low bits | hmask bit << 2; element `e` has its
/// hmask bit in byte `e % 32`, bit `e / 32`.
fn dequantize_q3_k(block: &[u8], dst: &mut [f32]) {
    let (hmask, qs, scales) = (&block[0..32], &block[32..96], &block[96..108]);
    let d = f16_at(block, 108);
    for (g, out) in dst.chunks_exact_mut(16).enumerate() {
        let dl = d * q3_k_scale(g, scales) as f32;
        for (l, o) in out.iter_mut().enumerate() {
            *o = dl * q3_k_quant(hmask, qs, 16 * g + l) as f32;
        }
    }
}

/// The quant (-4..4) of element `e` (0..256) of a Q3_K super-block: its 2 bits of `qs`,
/// less 4 unless its bit of `hmask` is set.
pub fn q3_k_quant(hmask: &[u8], qs: &[u8], e: usize) -> i32 {
    let high = (hmask[e % 32] >> (e / 32)) & 1;
    k_quant_2bit(qs, e) as i32 - if high == 1 { 0 } else { 4 }
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

/// Q5_K super-block (176 bytes): `d, dmin` (f16), `scales[12]` (as Q4_K's), `qh[32]`
/// (fifth bits: element `l` of sub-block `j` has bit `j` of `qh[l]`), `qs[128]` (low
/// nibbles, as Q4_K's). x = d * sc * q - dmin * m.
fn dequantize_q5_k(block: &[u8], dst: &mut [f32]) {
    let d = f16_at(block, 0);
    let dmin = f16_at(block, 2);
    let (scales, qh, qs) = (&block[4..16], &block[16..48], &block[48..176]);
    for (j, out) in dst.chunks_exact_mut(32).enumerate() {
        let (sc, m) = q4_k_scale_min(j, scales);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        for (l, o) in out.iter_mut().enumerate() {
            *o = d1 * q5_k_quant(qs, qh, j, l) as f32 - m1;
        }
    }
}

/// The 5-bit quant of element `l` of sub-block `j` (0..8) of a Q5_K super-block.
pub fn q5_k_quant(qs: &[u8], qh: &[u8], j: usize, l: usize) -> u8 {
    let byte = qs[32 * (j / 2) + l];
    let nibble = if j.is_multiple_of(2) {
        byte & 0x0f
    } else {
        byte >> 4
    };
    nibble | (((qh[l] >> j) & 1) << 4)
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
        GgmlType::Q5_0 => quantize_q5_0(x),
        GgmlType::Q5_1 => quantize_q5_1(x),
        GgmlType::Q2_K => quantize_q2_k(x),
        GgmlType::Q3_K => quantize_q3_k(x),
        GgmlType::Q4_K => quantize_q4_k(x),
        GgmlType::Q5_K => quantize_q5_k(x),
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

/// Q5_0: `d = max / -16` of the element of largest magnitude, `q = round(x / d) + 16`,
/// the fifth bits gathered into `qh`.
pub fn quantize_q5_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 22);
    for b in x.chunks_exact(32) {
        let max = b
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -16.0;
        let dq = f16::from_f32(d).to_f32();
        let inv = if dq != 0.0 { 1.0 / dq } else { 0.0 };
        push_f16(&mut out, d);
        let q: Vec<u8> = b
            .iter()
            .map(|v| ((v * inv + 16.5) as i32).clamp(0, 31) as u8)
            .collect();
        push_q5(&mut out, &q);
    }
    out
}

/// Q5_1: `d = (max - min) / 31`, `m = min`, `q = round((x - m) / d)`.
pub fn quantize_q5_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 24);
    for b in x.chunks_exact(32) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 31.0;
        let dq = f16::from_f32(d).to_f32();
        let mq = f16::from_f32(min).to_f32();
        let inv = if dq != 0.0 { 1.0 / dq } else { 0.0 };
        push_f16(&mut out, d);
        push_f16(&mut out, min);
        let q: Vec<u8> = b
            .iter()
            .map(|v| ((v - mq) * inv).round().clamp(0.0, 31.0) as u8)
            .collect();
        push_q5(&mut out, &q);
    }
    out
}

/// Appends 32 five-bit quants as Q5_0/Q5_1 store them: `qh` (bit j: element j's fifth
/// bit), then the low nibbles (elements j and j + 16 share byte j).
fn push_q5(out: &mut Vec<u8>, q: &[u8]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &v)| h | (((v >> 4) as u32 & 1) << j));
    out.extend_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        out.push((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
    }
}

/// Q2_K: per 16-element group a scale `(max - min) / 3` and a min `-min` (min capped at 0),
/// each a 4-bit multiple of the super-block's `d` and `dmin`.
pub fn quantize_q2_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 256 * 84);
    for sb in x.chunks_exact(256) {
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        for (g, grp) in sb.chunks_exact(16).enumerate() {
            let min = grp.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
            let max = grp.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scales[g] = (max - min) / 3.0;
            mins[g] = -min;
        }
        let (d, sc) = quantize_scales(&scales, 15);
        let (dmin, mn) = quantize_scales(&mins, 15);
        let mut q = [0u8; 256];
        for g in 0..16 {
            let scale = d * sc[g] as f32;
            let m = dmin * mn[g] as f32;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for l in 0..16 {
                let e = 16 * g + l;
                q[e] = ((sb[e] + m) * inv).round().clamp(0.0, 3.0) as u8;
            }
        }
        out.extend((0..16).map(|g| sc[g] | (mn[g] << 4)));
        push_2bit(&mut out, &q);
        push_f16(&mut out, d);
        push_f16(&mut out, dmin);
    }
    out
}

/// Q3_K: per 16-element group a signed scale `max / -4` (of the element of largest
/// magnitude), a 6-bit multiple (-32..31) of the super-block's `d`; `q = round(x / s)`
/// in -4..3, stored as q + 4: 2 low bits in `qs`, the third in `hmask`.
pub fn quantize_q3_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 256 * 110);
    for sb in x.chunks_exact(256) {
        let mut gscale = [0f32; 16];
        for (g, grp) in sb.chunks_exact(16).enumerate() {
            let max = grp
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            gscale[g] = max / -4.0;
        }
        let max_scale = gscale
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        // The largest scale maps to -32 (the end of -32..31 that fits it exactly).
        let d = f16::from_f32(max_scale / -32.0).to_f32();
        let mut sc = [0u8; 16];
        let mut q = [0u8; 256];
        let mut hmask = [0u8; 32];
        for g in 0..16 {
            let l = if d != 0.0 {
                (gscale[g] / d).round().clamp(-32.0, 31.0) as i32
            } else {
                0
            };
            sc[g] = (l + 32) as u8;
            let s = d * l as f32;
            let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
            for i in 0..16 {
                let e = 16 * g + i;
                let v = (sb[e] * inv).round().clamp(-4.0, 3.0) as i32 + 4;
                q[e] = (v & 3) as u8;
                hmask[e % 32] |= ((v >> 2) as u8 & 1) << (e / 32);
            }
        }
        let mut scales = [0u8; 12];
        for (j, &s) in sc.iter().enumerate() {
            if j < 8 {
                scales[j] |= s & 0x0f;
            } else {
                scales[j - 8] |= (s & 0x0f) << 4;
            }
            scales[8 + j % 4] |= (s >> 4) << (2 * (j / 4));
        }
        out.extend_from_slice(&hmask);
        push_2bit(&mut out, &q);
        out.extend_from_slice(&scales);
        push_f16(&mut out, d);
    }
    out
}

/// Appends 256 two-bit fields in Q2_K/Q3_K's `qs` order (see [`k_quant_2bit`]).
fn push_2bit(out: &mut Vec<u8>, q: &[u8]) {
    for half in 0..2 {
        let q = &q[128 * half..];
        for l in 0..32 {
            out.push(q[l] | (q[l + 32] << 2) | (q[l + 64] << 4) | (q[l + 96] << 6));
        }
    }
}

/// `values` (non-negative) as multiples of one f16 step: `(step, multiples)`, the
/// largest value `max` times the step, each multiple rounded and capped at `max`.
fn quantize_scales<const N: usize>(values: &[f32; N], max: u8) -> (f32, [u8; N]) {
    let top = values.iter().copied().fold(0f32, f32::max);
    let step = f16::from_f32(top / max as f32).to_f32();
    let mut q = [0u8; N];
    if step > 0.0 {
        for (q, v) in q.iter_mut().zip(values) {
            *q = (v / step).round().clamp(0.0, max as f32) as u8;
        }
    }
    (step, q)
}

/// The quants of a Q4_K or Q5_K super-block (`nmax`: 15 or 31): per 32-element
/// sub-block a scale and a min, themselves 6-bit multiples of the super-block's `d`
/// and `dmin`. Returns `d`, `dmin`, the packed `scales[12]` and the quants.
fn k_sub_blocks(sb: &[f32], nmax: f32) -> (f32, f32, [u8; 12], [u8; 256]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for (j, sub) in sb.chunks_exact(32).enumerate() {
        let min = sub.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
        let max = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scales[j] = (max - min) / nmax;
        mins[j] = -min;
    }
    let (d, sc) = quantize_scales(&scales, 63);
    let (dmin, mn) = quantize_scales(&mins, 63);
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
    }
    let mut q = [0u8; 256];
    for j in 0..8 {
        let scale = d * sc[j] as f32;
        let m = dmin * mn[j] as f32;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for l in 0..32 {
            q[32 * j + l] = ((sb[32 * j + l] + m) * inv).round().clamp(0.0, nmax) as u8;
        }
    }
    (d, dmin, s, q)
}

/// Q4_K: per 32-element sub-block a scale and a min, themselves 6-bit multiples of the
/// super-block's `d` and `dmin`.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 256 * 144);
    for sb in x.chunks_exact(256) {
        let (d, dmin, s, q) = k_sub_blocks(sb, 15.0);
        push_f16(&mut out, d);
        push_f16(&mut out, dmin);
        out.extend_from_slice(&s);
        for pair in 0..4 {
            for l in 0..32 {
                out.push(q[64 * pair + l] | (q[64 * pair + 32 + l] << 4));
            }
        }
    }
    out
}

/// Q5_K: Q4_K's scales and mins over 5-bit quants, the fifth bits in `qh`.
pub fn quantize_q5_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 256 * 176);
    for sb in x.chunks_exact(256) {
        let (d, dmin, s, q) = k_sub_blocks(sb, 31.0);
        push_f16(&mut out, d);
        push_f16(&mut out, dmin);
        out.extend_from_slice(&s);
        let mut qh = [0u8; 32];
        for (e, &v) in q.iter().enumerate() {
            qh[e % 32] |= (v >> 4) << (e / 32);
        }
        out.extend_from_slice(&qh);
        for pair in 0..4 {
            for l in 0..32 {
                out.push((q[64 * pair + l] & 0x0f) | ((q[64 * pair + 32 + l] & 0x0f) << 4));
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
            (GgmlType::Q5_0, amax / 15.0),
            (GgmlType::Q5_1, 2.0 * amax / 31.0),
            (GgmlType::Q5_K, 2.0 * amax / 29.0),
            // One step: -4..3 clamps the far end of a group whose largest element is
            // the other sign.
            (GgmlType::Q3_K, amax / 4.0),
            (GgmlType::Q2_K, amax / 2.5),
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

    /// Deterministic bytes for the layout test.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }

    /// ggml's loops, walked the way ggml-quants.c walks them (output pointer advancing,
    /// masks shifting, Q3_K's scales unpacked through four u32 words), over arbitrary
    /// bits: `dequantize`'s per-element indexing must give the same floats, bit for bit.
    /// The f16 fields are set to finite values (random bits could be NaN).
    #[test]
    fn dequantize_follows_ggml_loops() {
        let half = |v: f32| f16::from_f32(v).to_le_bytes();
        for seed in 0..4u64 {
            // Q5_0 and Q5_1: 8 blocks each.
            for ty in [GgmlType::Q5_0, GgmlType::Q5_1] {
                let bb = ty.block_bytes();
                let mut data = bytes(8 * bb, seed);
                let mut want = Vec::new();
                for (i, b) in data.chunks_exact_mut(bb).enumerate() {
                    b[0..2].copy_from_slice(&half(0.01 + 0.03 * i as f32));
                    let m = if ty == GgmlType::Q5_1 {
                        b[2..4].copy_from_slice(&half(-0.2 * i as f32));
                        f16_at(b, 2)
                    } else {
                        0.0
                    };
                    let d = f16_at(b, 0);
                    let at = if ty == GgmlType::Q5_1 { 4 } else { 2 };
                    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                    let qs = &b[at + 4..at + 20];
                    let mut y = [0f32; 32];
                    for j in 0..16 {
                        let xh0 = ((qh >> j) << 4) & 0x10;
                        let xh1 = (qh >> (j + 12)) & 0x10;
                        let x0 = ((qs[j] as u32 & 0x0f) | xh0) as i32;
                        let x1 = ((qs[j] as u32 >> 4) | xh1) as i32;
                        if ty == GgmlType::Q5_0 {
                            y[j] = (x0 - 16) as f32 * d;
                            y[j + 16] = (x1 - 16) as f32 * d;
                        } else {
                            y[j] = x0 as f32 * d + m;
                            y[j + 16] = x1 as f32 * d + m;
                        }
                    }
                    want.extend_from_slice(&y);
                }
                let mut got = vec![0f32; want.len()];
                dequantize(ty, &data, &mut got).expect("sizes match");
                assert_eq!(got, want, "{} seed {seed}", ty.name());
            }
            // Q2_K.
            let mut b = bytes(84, seed);
            b[80..82].copy_from_slice(&half(0.037));
            b[82..84].copy_from_slice(&half(0.011));
            let (d, min) = (f16_at(&b, 80), f16_at(&b, 82));
            let mut want = Vec::new();
            let (mut q, mut is) = (16, 0);
            for _ in 0..2 {
                for shift in [0, 2, 4, 6] {
                    for off in [0, 16] {
                        let sc = b[is];
                        is += 1;
                        let (dl, ml) = (d * (sc & 0xf) as f32, min * (sc >> 4) as f32);
                        for l in 0..16 {
                            want.push(dl * ((b[q + l + off] >> shift) & 3) as f32 - ml);
                        }
                    }
                }
                q += 32;
            }
            let mut got = vec![0f32; 256];
            dequantize(GgmlType::Q2_K, &b, &mut got).expect("sizes match");
            assert_eq!(got, want, "Q2_K seed {seed}");
            // Q3_K.
            let mut b = bytes(110, seed + 10);
            b[108..110].copy_from_slice(&half(0.021));
            let d_all = f16_at(&b, 108);
            let word = |i: usize| u32_at(&b, 96 + 4 * i);
            let (kmask1, kmask2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let tmp = word(2);
            let aux = [
                (word(0) & kmask2) | ((tmp & kmask1) << 4),
                (word(1) & kmask2) | (((tmp >> 2) & kmask1) << 4),
                ((word(0) >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
                ((word(1) >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4),
            ];
            let scales: Vec<i8> = aux
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(|v| v as i8)
                .collect();
            let mut want = Vec::new();
            let (mut q, mut is, mut m) = (32, 0, 1u8);
            for _ in 0..2 {
                for shift in [0, 2, 4, 6] {
                    for off in [0, 16] {
                        let dl = d_all * (scales[is] as i32 - 32) as f32;
                        is += 1;
                        for l in 0..16 {
                            let low = ((b[q + l + off] >> shift) & 3) as i32;
                            let h = if b[l + off] & m != 0 { 0 } else { 4 };
                            want.push(dl * (low - h) as f32);
                        }
                    }
                    m <<= 1;
                }
                q += 32;
            }
            let mut got = vec![0f32; 256];
            dequantize(GgmlType::Q3_K, &b, &mut got).expect("sizes match");
            assert_eq!(got, want, "Q3_K seed {seed}");
            // Q5_K.
            let mut b = bytes(176, seed + 20);
            b[0..2].copy_from_slice(&half(0.013));
            b[2..4].copy_from_slice(&half(0.007));
            let (d, min) = (f16_at(&b, 0), f16_at(&b, 2));
            let mut want = Vec::new();
            let (mut ql, mut is, mut u1, mut u2) = (48, 0, 1u8, 2u8);
            for _ in 0..4 {
                let (sc, m) = q4_k_scale_min(is, &b[4..16]);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = q4_k_scale_min(is + 1, &b[4..16]);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                for l in 0..32 {
                    let hi = if b[16 + l] & u1 != 0 { 16 } else { 0 };
                    want.push(d1 * ((b[ql + l] & 0xf) as i32 + hi) as f32 - m1);
                }
                for l in 0..32 {
                    let hi = if b[16 + l] & u2 != 0 { 16 } else { 0 };
                    want.push(d2 * ((b[ql + l] >> 4) as i32 + hi) as f32 - m2);
                }
                ql += 32;
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
            }
            let mut got = vec![0f32; 256];
            dequantize(GgmlType::Q5_K, &b, &mut got).expect("sizes match");
            assert_eq!(got, want, "Q5_K seed {seed}");
        }
    }
}

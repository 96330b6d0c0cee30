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

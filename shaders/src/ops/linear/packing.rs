//! The weights' layout on the GPU: a ggml tensor repacked ([`pack`]) into quants and
//! scales that start every 32-element group on a 4-byte boundary, the formats it widens
//! ([`gpu_format`]), the tiled group order ([`PackedWeight::tiled`], [`tile_rows`]) and
//! the upload ([`GpuWeight`]).

use half::f16;

use super::{Mode, Shape, Variant};
use crate::gpu::{GpuContext, GpuError};
use crate::model::quant::{
    dequantize, k_quant_2bit, q3_k_quant, q3_k_scale, q4_k_scale_min, q5_k_quant, q5_quant, u32_at,
};
use crate::model::{GgmlType, ModelError};

/// The GPU format id (`FMT` in quant.wgsl) a ggml type is packed into. Every packed
/// element is `d * q + m` with `d`, `m` its group's (or half-group's) scales, which hold
/// exactly the f32 products the CPU reference forms (`d * sc`, `dmin * m`), so the GPU
/// dequantizes to the reference's values; only the dot products' order differs.
pub fn gpu_format(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 | GgmlType::BF16 => 0,
        GgmlType::F16 => 1,
        // d * (q - 16) with d an f16: i8 quants q - 16 under Q8_0's f16 scale.
        GgmlType::Q8_0 | GgmlType::Q5_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q4_0 | GgmlType::Q4_K => 4,
        // Q3_K: a scale per 16 elements and signed quants, as Q6_K.
        GgmlType::Q6_K | GgmlType::Q3_K => 5,
        // 5-bit quants (0..32) as i8, a scale and a min per 32 elements.
        GgmlType::Q5_1 | GgmlType::Q5_K => 6,
        // 2-bit quants as nibbles, a scale and a min per 16 elements.
        GgmlType::Q2_K => 7,
    }
}

/// A weight matrix repacked for the GPU: `rows` rows of `cols` elements.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    pub fmt: u32,
    pub rows: usize,
    pub cols: usize,
    pub quants: Vec<u8>,
    pub scales: Vec<u8>,
    /// Rows per tile of the group order ([`PackedWeight::tiled`]); 0: row-major.
    pub tile: usize,
}

/// Repacks a ggml tensor of `rows × cols` (`cols` a multiple of 32) for the GPU.
pub fn pack(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<PackedWeight, ModelError> {
    if !cols.is_multiple_of(32) || !cols.is_multiple_of(ty.block_elems()) {
        return Err(ModelError::Malformed(format!(
            "{} rows of {cols} elements are not whole groups of 32",
            ty.name()
        )));
    }
    let n = rows * cols;
    if ty.bytes_for(n) != Some(data.len()) {
        return Err(ModelError::Malformed(format!(
            "{} data of {} bytes is not {rows}x{cols}",
            ty.name(),
            data.len()
        )));
    }
    let fmt = gpu_format(ty);
    let mut quants = Vec::new();
    let mut scales = Vec::new();
    match ty {
        GgmlType::F32 | GgmlType::F16 => quants.extend_from_slice(data),
        GgmlType::BF16 => {
            let mut f = vec![0f32; n];
            dequantize(ty, data, &mut f)?;
            quants = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        GgmlType::Q8_0 => {
            for b in data.chunks_exact(34) {
                scales.extend_from_slice(&b[0..2]);
                quants.extend_from_slice(&b[2..34]);
            }
        }
        GgmlType::Q4_1 => {
            for b in data.chunks_exact(20) {
                scales.extend_from_slice(&b[0..4]);
                quants.extend_from_slice(&b[4..20]);
            }
        }
        GgmlType::Q4_0 => {
            for b in data.chunks_exact(18) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                scales.extend_from_slice(&d.to_le_bytes());
                scales.extend_from_slice(&(-8.0 * d).to_le_bytes());
                quants.extend_from_slice(&b[2..18]);
            }
        }
        GgmlType::Q4_K => {
            for b in data.chunks_exact(144) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let qs = &b[16..144];
                for j in 0..8 {
                    let (sc, m) = q4_k_scale_min(j, &b[4..16]);
                    scales.extend_from_slice(&(d * sc as f32).to_le_bytes());
                    scales.extend_from_slice(&(-(dmin * m as f32)).to_le_bytes());
                    let pair = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                    let q = |l: usize| {
                        if j.is_multiple_of(2) {
                            pair[l] & 0x0f
                        } else {
                            pair[l] >> 4
                        }
                    };
                    for i in 0..16 {
                        quants.push(q(i) | (q(i + 16) << 4));
                    }
                }
            }
        }
        GgmlType::Q5_0 => {
            for b in data.chunks_exact(22) {
                scales.extend_from_slice(&b[0..2]);
                let qh = u32_at(b, 2);
                quants.extend((0..32).map(|e| (q5_quant(&b[6..22], qh, e) as i8 - 16) as u8));
            }
        }
        GgmlType::Q5_1 => {
            for b in data.chunks_exact(24) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                scales.extend_from_slice(&d.to_le_bytes());
                scales.extend_from_slice(&m.to_le_bytes());
                let qh = u32_at(b, 4);
                quants.extend((0..32).map(|e| q5_quant(&b[8..24], qh, e)));
            }
        }
        GgmlType::Q5_K => {
            for b in data.chunks_exact(176) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let (qh, qs) = (&b[16..48], &b[48..176]);
                for j in 0..8 {
                    let (sc, m) = q4_k_scale_min(j, &b[4..16]);
                    scales.extend_from_slice(&(d * sc as f32).to_le_bytes());
                    scales.extend_from_slice(&(-(dmin * m as f32)).to_le_bytes());
                    quants.extend((0..32).map(|l| q5_k_quant(qs, qh, j, l)));
                }
            }
        }
        GgmlType::Q3_K => {
            for b in data.chunks_exact(110) {
                let (hmask, qs) = (&b[0..32], &b[32..96]);
                let d = f16::from_le_bytes([b[108], b[109]]).to_f32();
                for g in 0..16 {
                    let s = d * q3_k_scale(g, &b[96..108]) as f32;
                    scales.extend_from_slice(&s.to_le_bytes());
                }
                quants.extend((0..256).map(|e| q3_k_quant(hmask, qs, e) as i8 as u8));
            }
        }
        GgmlType::Q2_K => {
            for b in data.chunks_exact(84) {
                let (sc, qs) = (&b[0..16], &b[16..80]);
                let d = f16::from_le_bytes([b[80], b[81]]).to_f32();
                let dmin = f16::from_le_bytes([b[82], b[83]]).to_f32();
                for &s in sc {
                    scales.extend_from_slice(&(d * (s & 0x0f) as f32).to_le_bytes());
                    scales.extend_from_slice(&(-(dmin * (s >> 4) as f32)).to_le_bytes());
                }
                // Each 32-element group as 16 bytes of nibbles, byte i holding element
                // i (low) and i + 16 (high): quant.wgsl's nibble order.
                for j in 0..8 {
                    let q = |l: usize| k_quant_2bit(qs, 32 * j + l);
                    quants.extend((0..16).map(|i| q(i) | (q(i + 16) << 4)));
                }
            }
        }
        GgmlType::Q6_K => {
            for b in data.chunks_exact(210) {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
                let mut q = [0i8; 256];
                for half in 0..2 {
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    for l in 0..32 {
                        let e = 128 * half + l;
                        q[e] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
                        q[e + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                        q[e + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                        q[e + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
                for &s in sc {
                    scales.extend_from_slice(&(d * (s as i8) as f32).to_le_bytes());
                }
                quants.extend(q.iter().map(|&v| v as u8));
            }
        }
    }
    Ok(PackedWeight {
        fmt,
        rows,
        cols,
        quants,
        scales,
        tile: 0,
    })
}

/// Rows per tile ([`PackedWeight::tiled`]) for `v` over a matrix of `w_rows` rows: the
/// rows one workgroup reads (its row slots, twice as many rows for q/k/v's RoPE pairs)
/// where invocations own whole row slots ([`Shape::Threads`] with one thread per row) and
/// the matrix is whole tiles; else 0 (row-major).
pub fn tile_rows(w_rows: usize, v: &Variant) -> usize {
    let Shape::Threads {
        threads_per_row: 1, ..
    } = v.shape
    else {
        return 0;
    };
    let per_wg =
        v.shape.rows_per_workgroup() as usize * if v.mode == Mode::QkvRope { 2 } else { 1 };
    if per_wg == 0 || !w_rows.is_multiple_of(per_wg) {
        return 0;
    }
    per_wg
}

impl PackedWeight {
    /// Stacks matrices of the same format and row length (q, k, v into one qkv matrix).
    pub fn concat(parts: &[PackedWeight]) -> Result<PackedWeight, ModelError> {
        let first = parts
            .first()
            .ok_or_else(|| ModelError::Malformed("concatenating no matrices".into()))?;
        let mut out = PackedWeight {
            fmt: first.fmt,
            rows: 0,
            cols: first.cols,
            quants: Vec::new(),
            scales: Vec::new(),
            tile: 0,
        };
        for p in parts {
            if p.tile != 0 {
                return Err(ModelError::Malformed(
                    "stacking a tiled matrix (tile after stacking)".into(),
                ));
            }
            if p.fmt != first.fmt || p.cols != first.cols {
                return Err(ModelError::Malformed(format!(
                    "cannot stack a {}-column format-{} matrix onto {}-column format-{}",
                    p.cols, p.fmt, first.cols, first.fmt
                )));
            }
            out.rows += p.rows;
            out.quants.extend_from_slice(&p.quants);
            out.scales.extend_from_slice(&p.scales);
        }
        Ok(out)
    }

    /// This matrix with its groups reordered into tiles of `tile` rows (0: unchanged):
    /// tile by tile, span by span (a span is the kernels' `GS` groups, 2 where a row has
    /// an even number of groups), the tile's rows in order, each row's span of groups
    /// together; `gidx` in quant.wgsl is the same map. A linear kernel whose workgroup
    /// owns a tile then reads one contiguous run of memory, span after span, where the
    /// row-major order had it read `tile` runs at once, one per row, which the CPU's
    /// prefetchers do not follow.
    pub fn tiled(self, tile: usize) -> Result<PackedWeight, ModelError> {
        if tile == 0 {
            return Ok(self);
        }
        let ng = self.cols / 32;
        let groups = self.rows * ng;
        if self.tile != 0 || !self.rows.is_multiple_of(tile) || groups == 0 {
            return Err(ModelError::Malformed(format!(
                "cannot tile {} rows (tiled: {}) by {tile}",
                self.rows, self.tile
            )));
        }
        let gs = 2 - ng % 2;
        let (qb, sb) = (self.quants.len() / groups, self.scales.len() / groups);
        let mut quants = vec![0u8; self.quants.len()];
        let mut scales = vec![0u8; self.scales.len()];
        for row in 0..self.rows {
            let r = row % tile;
            for g in 0..ng {
                let src = row * ng + g;
                let dst = (row - r) * ng + (g - g % gs) * tile + r * gs + g % gs;
                quants[dst * qb..(dst + 1) * qb]
                    .copy_from_slice(&self.quants[src * qb..(src + 1) * qb]);
                scales[dst * sb..(dst + 1) * sb]
                    .copy_from_slice(&self.scales[src * sb..(src + 1) * sb]);
            }
        }
        Ok(PackedWeight {
            quants,
            scales,
            tile,
            ..self
        })
    }

    /// Bytes the GPU will read per full pass over the matrix.
    pub fn gpu_bytes(&self) -> usize {
        self.quants.len() + self.scales.len()
    }

    pub fn upload(&self, ctx: &GpuContext, label: &str) -> Result<GpuWeight, GpuError> {
        Ok(GpuWeight {
            fmt: self.fmt,
            rows: self.rows,
            cols: self.cols,
            tile: self.tile,
            bytes: self.gpu_bytes(),
            quants: ctx.storage_init(&format!("{label} quants"), &self.quants)?,
            scales: ctx.storage_init(&format!("{label} scales"), &pad8(&self.scales))?,
        })
    }
}

/// `b` padded with zeros to whole 64-bit words (at least one): the 64-bit kernels bind
/// the scales as `array<u64>`.
fn pad8(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let len = b.len().max(8).next_multiple_of(8);
    if len == b.len() {
        return b.into();
    }
    let mut v = b.to_vec();
    v.resize(len, 0);
    v.into()
}

/// A packed matrix resident on the GPU (cloning shares the buffers).
#[derive(Debug, Clone)]
pub struct GpuWeight {
    pub fmt: u32,
    pub rows: usize,
    pub cols: usize,
    /// [`PackedWeight::tile`]: the kernels reading it are specialised to the layout.
    pub tile: usize,
    pub bytes: usize,
    pub quants: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

//! Embedding lookup (`wgsl/embed.wgsl`): rows of a table kept in its packed (quantized)
//! form, dequantized by the kernel.

use std::sync::Arc;

use super::linear::GpuWeight;
use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};
use crate::model::quant::dequantize;
use crate::model::{GgmlType, ModelError};

pub const SPEC: KernelSpec = KernelSpec {
    name: "embed",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/quant_words32.wgsl"),
        include_str!("../../wgsl/embed.wgsl")
    ),
    bindings: &[
        Binding::Uniform,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
    ],
};

pub fn kernel(ctx: &GpuContext, table: &GpuWeight) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(
        &SPEC,
        &[
            ("FMT", table.fmt as f64),
            ("K", table.cols as f64),
            ("TILE", table.tile as f64),
        ],
    )
}

pub fn groups(d: usize, n_tokens: usize) -> (u32, u32, u32) {
    ((d / 32).div_ceil(8) as u32, n_tokens as u32, 1)
}

/// CPU reference: rows `tokens` of a `ty` table with rows of `d`, into `out`.
pub fn reference(
    ty: GgmlType,
    table: &[u8],
    d: usize,
    tokens: &[u32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let rb = ty
        .bytes_for(d)
        .ok_or_else(|| ModelError::Malformed(format!("{} row of {d}", ty.name())))?;
    for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(d)) {
        let row = table
            .get(t as usize * rb..(t as usize + 1) * rb)
            .ok_or_else(|| ModelError::Malformed(format!("token {t} past the table's end")))?;
        dequantize(ty, row, o)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::quant::quantize;
    use crate::ops::linear::pack;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{assert_close, ctx, step};

    /// Tables of every packed format (each GPU format at least once, tiled too), rows of
    /// 64 (256 for the K-quants); within 1e-6 relative (Q4_0 folding aside, exact).
    #[test]
    fn gpu_matches_cpu() {
        let ctx = ctx();
        let vocab = 50;
        let tokens = [3u32, 0, 49, 3, 17];
        // Row-major, and tiled as a tied LM head's kernels read it (tiles of 10 rows).
        for (ty, tile) in [
            (GgmlType::Q8_0, 0),
            (GgmlType::Q4_1, 0),
            (GgmlType::F32, 0),
            (GgmlType::Q4_0, 0),
            (GgmlType::Q8_0, 10),
            (GgmlType::Q4_1, 10),
            (GgmlType::Q5_0, 0),
            (GgmlType::Q5_1, 0),
            (GgmlType::Q2_K, 0),
            (GgmlType::Q3_K, 0),
            (GgmlType::Q5_K, 0),
            (GgmlType::Q5_K, 10),
            (GgmlType::Q2_K, 10),
        ] {
            let d = ty.block_elems().max(64);
            let table = quantize(ty, &pseudo_random(vocab * d, 21, 1.0)).expect("q");
            let mut want = vec![0f32; tokens.len() * d];
            reference(ty, &table, d, &tokens, &mut want).expect("reference");
            let w = pack(ty, &table, vocab, d)
                .and_then(|p| p.tiled(tile))
                .expect("pack")
                .upload(&ctx, "embd")
                .expect("upload");
            let tb = ctx
                .storage_init("tokens", bytemuck::cast_slice(&tokens))
                .expect("small");
            let ob = ctx
                .storage("out", (tokens.len() * d * 4) as u64)
                .expect("small");
            let st = step(&ctx, tokens.len() as u32, 0);
            let k = kernel(&ctx, &w).expect("kernel");
            crate::ops::run_once(
                &ctx,
                &k,
                &[&st, &tb, &w.quants, &w.scales, &ob],
                groups(d, tokens.len()),
            );
            let got = ctx.read_f32(&ob, tokens.len() * d).expect("readback");
            assert_close(&format!("{} tile {tile}", ty.name()), &got, &want, 1e-6);
        }
    }
}

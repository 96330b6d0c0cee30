//! The wgpu backends: [`GpuBlocks`] (Llama blocks with per-session KV caches in GPU
//! memory, `blocks`) and [`GpuHead`] (embedding, final norm, LM head, argmax and sampling,
//! `head`), and the linear layer with its decode and prefill pipelines that both use.

use std::sync::Arc;

use super::EngineError;
use super::llama;
use crate::gpu::pipeline::dispatch;
use crate::gpu::{GpuContext, Kernel};
use crate::model::WeightSource;
use crate::ops::linear::{self, Extras, GpuWeight, PackedWeight, Variant};

mod blocks;
mod general;
mod head;

pub use blocks::GpuBlocks;
pub use head::{GpuHead, HeadOptions};

/// Rows one submission carries; longer inputs are split into chunks of this many.
pub const MAX_BATCH: usize = 32;
/// Tokens per invocation of the prefill matmul.
const PREFILL_TT: u32 = 4;

pub(super) fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// `v` with its shape fitted to a matrix of `rows` rows ([`Shape::fitted`]; idempotent).
pub(super) fn fitted(v: Variant, rows: usize) -> Variant {
    Variant {
        shape: v.shape.fitted(linear::invocation_rows(rows, v.mode)),
        ..v
    }
}

/// A linear layer on the GPU with its decode and prefill pipelines.
pub(super) struct Linear {
    pub(super) w: GpuWeight,
    pub(super) decode: (Arc<Kernel>, Variant),
    pub(super) prefill: (Arc<Kernel>, Variant),
}

impl Linear {
    /// Uploads `w` for kernels of `v` fitted to it, its groups tiled as the fitted shape
    /// reads them ([`linear::tile_rows`]).
    pub(super) fn new(
        ctx: &GpuContext,
        w: PackedWeight,
        label: &str,
        v: Variant,
    ) -> Result<Self, EngineError> {
        let v = fitted(v, w.rows);
        let tile = linear::tile_rows(w.rows, &v);
        Self::with_weight(ctx, w.tiled(tile)?.upload(ctx, label)?, v)
    }

    /// Kernels of `v` (fitted to `w`) over a weight already on the GPU, in whatever
    /// layout it has.
    pub(super) fn with_weight(
        ctx: &GpuContext,
        w: GpuWeight,
        v: Variant,
    ) -> Result<Self, EngineError> {
        let v = fitted(v, w.rows);
        let pv = Variant {
            tokens_per_invocation: PREFILL_TT,
            ..v
        };
        Ok(Self {
            decode: (linear::kernel(ctx, &w, &v)?, v),
            prefill: (linear::kernel(ctx, &w, &pv)?, pv),
            w,
        })
    }

    pub(super) fn bind(
        &self,
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        extras: Extras<'_>,
    ) -> wgpu::BindGroup {
        linear::bind(ctx, &self.decode.0, step, x, &self.w, y, extras)
    }

    pub(super) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        bind: &wgpu::BindGroup,
        n: usize,
    ) {
        let (k, v) = if n == 1 { &self.decode } else { &self.prefill };
        dispatch(pass, k, bind, linear::groups(self.w.rows, n, v));
    }
}

pub(super) fn pack_tensor(
    src: &dyn WeightSource,
    name: &str,
    inp: usize,
    out: usize,
) -> Result<PackedWeight, EngineError> {
    let t = llama::linear(src, name, inp, out)?;
    Ok(linear::pack(t.ty, t.data, out, inp)?)
}

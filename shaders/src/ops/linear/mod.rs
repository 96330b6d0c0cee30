//! Linear layers (matrix-vector for decode, matrix-matrix for prefill) with the weights
//! kept quantized on the GPU and dequantized inside the kernel (`wgsl/linear.wgsl` over
//! `wgsl/quant.wgsl`, then the entry point of the [`Shape`]: `wgsl/linear_threads.wgsl`
//! or `wgsl/linear_subgroup.wgsl`).
//!
//! - [`shape`]: how invocations map onto rows ([`Shape`]) and the word size ([`Words`]);
//! - [`specialization`]: the kernel sources and the override constants of a [`Variant`];
//! - [`packing`]: the weights repacked, tiled and uploaded for the GPU ([`pack`]);
//! - [`reference`](mod@reference): the CPU reference the tests compare against.
//!
//! Which shape and words an adapter gets is [`crate::ops::tuning`]'s call. Why these
//! shapes cost what they do on lavapipe (the measurements behind them):
//! `docs/perf/lavapipe.md`.

use std::sync::Arc;

use crate::gpu::{GpuContext, GpuError, Kernel};

pub mod packing;
pub mod reference;
pub mod shape;
pub mod specialization;
#[cfg(test)]
mod tests;

pub use packing::{GpuWeight, PackedWeight, gpu_format, pack, tile_rows};
pub use reference::reference;
pub use shape::{Shape, Words, shares_inputs};
pub use specialization::{
    Constants, SHARED_X_SPEC, SHARED_X_SPEC64, SPEC, SPEC64, SUBGROUP_SPEC, SUBGROUP_SPEC64,
    specialization,
};

/// What the kernel does with `W x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `y = W x`.
    Store = 0,
    /// `y += W x` (the residual add, fused).
    Accumulate = 1,
    /// `y = silu(W[r] x) * (W[r + rows] x)` over a `[gate; up]` matrix of `2 rows` rows.
    SwiGlu = 2,
    /// Fused q/k/v over a `[q; k; v]` matrix: RoPE on q and k (see [`Rope`]), q into `y`,
    /// k and v into the KV cache at `start_pos + t`.
    QkvRope = 3,
    /// `y = gelu_tanh(W[r] x) * (W[r + rows] x)` over a `[gate; up]` matrix (GeGLU).
    GeGlu = 4,
}

impl Mode {
    /// The gated feed-forward mode of an activation.
    pub fn gated(act: crate::model::FfnActivation) -> Self {
        match act {
            crate::model::FfnActivation::Silu => Mode::SwiGlu,
            crate::model::FfnActivation::GeluTanh => Mode::GeGlu,
        }
    }
}

/// The attention shape a [`Mode::QkvRope`] kernel rotates and stores for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rope {
    pub head_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub style: crate::model::RopeStyle,
}

/// A linear kernel's specialization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    pub mode: Mode,
    /// Token rows per invocation (1 for decode, up to 4 for prefill).
    pub tokens_per_invocation: u32,
    pub shape: Shape,
    /// Apply RMSNorm (with this epsilon, weight bound at binding 5) to the input first.
    pub norm_eps: Option<f32>,
    /// With `norm_eps`: the input is already `x ⊙ weight` and its sums of squares come
    /// as this many partials per token ([`Extras::partials`]), so the kernel only
    /// applies `1 / rms` (0: the kernel computes the norm itself).
    pub norm_partials: u32,
    /// [`Mode::Accumulate`] in a [`Shape::Threads`] shape: also writes the new residual
    /// `⊙` the next norm's weight and [`norm_out_partials`] sums of squares per token
    /// ([`Extras::norm_out`]), the input of a kernel with `norm_partials`.
    pub norm_out: bool,
    /// Required for [`Mode::QkvRope`].
    pub rope: Option<Rope>,
    /// [`Mode::Store`] into a wider output: `(row stride, offset)` in floats, so token
    /// `t`'s rows land at `t * stride + offset` (q, k and v of different formats written
    /// into one q/k/v row).
    pub output: Option<(u32, u32)>,
    pub words: Words,
}

impl Variant {
    pub fn new(mode: Mode, shape: Shape) -> Self {
        Self {
            mode,
            tokens_per_invocation: 1,
            shape,
            norm_eps: None,
            norm_partials: 0,
            norm_out: false,
            rope: None,
            output: None,
            words: Words::Widest,
        }
    }
}

/// Partials per token a [`Variant::norm_out`] kernel over `w_rows` rows writes: one per
/// invocation's run of rows.
pub fn norm_out_partials(w_rows: usize, v: &Variant) -> u32 {
    let rpi = match v.shape {
        Shape::Threads {
            rows_per_thread, ..
        } => rows_per_thread.clamp(1, 32) as usize,
        Shape::Subgroup { .. } => 1,
    };
    invocation_rows(w_rows, v.mode).div_ceil(rpi) as u32
}

/// Rows the invocations of `mode` cover over a matrix of `w_rows` rows: output rows, or
/// row pairs (SwiGLU's gate/up pairs, RoPE pairs).
pub fn invocation_rows(w_rows: usize, mode: Mode) -> usize {
    match mode {
        Mode::Store | Mode::Accumulate => w_rows,
        Mode::SwiGlu | Mode::GeGlu | Mode::QkvRope => w_rows / 2,
    }
}

/// The pipeline for `w` specialised as `v`.
pub fn kernel(ctx: &GpuContext, w: &GpuWeight, v: &Variant) -> Result<Arc<Kernel>, GpuError> {
    let (spec, c) = specialization(ctx, w, v)?;
    ctx.kernel(spec, &c)
}

/// The optional inputs of a linear kernel's bind group.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// RMSNorm weight (with [`Variant::norm_eps`]); with [`Variant::norm_out`], the next
    /// norm's weight.
    pub norm: Option<&'a wgpu::Buffer>,
    /// The sums of squares: read with [`Variant::norm_partials`], written with
    /// [`Variant::norm_out`].
    pub partials: Option<&'a wgpu::Buffer>,
    /// Where a [`Variant::norm_out`] kernel writes the residual `⊙` the next norm's weight.
    pub norm_out: Option<&'a wgpu::Buffer>,
    /// RoPE (cos, sin) table, K cache, V cache (with [`Mode::QkvRope`]).
    pub rope_kv: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

/// The bind group of a linear kernel: `step` uniform, input `x`, weights `w`, output `y`.
pub fn bind(
    ctx: &GpuContext,
    kernel: &Kernel,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    w: &GpuWeight,
    y: &wgpu::Buffer,
    extras: Extras<'_>,
) -> wgpu::BindGroup {
    let [ur, uw0, uw1, uw2, uw3] = ctx.unused_buffers();
    let norm = extras.norm.unwrap_or(ur);
    let (cs, kc, vc) = extras.rope_kv.unwrap_or((ur, uw0, uw1));
    let ssq = extras.partials.unwrap_or(uw2);
    let xn = extras.norm_out.unwrap_or(uw3);
    ctx.bind_group(
        kernel,
        &[step, x, &w.quants, &w.scales, y, norm, cs, kc, vc, ssq, xn],
    )
}

/// Workgroups for `v` over a matrix of `w_rows` rows and `n_tokens` tokens.
pub fn groups(w_rows: usize, n_tokens: usize, v: &Variant) -> (u32, u32, u32) {
    let rows_per_wg = v.shape.rows_per_workgroup() as usize;
    (
        invocation_rows(w_rows, v.mode).div_ceil(rows_per_wg) as u32,
        n_tokens.div_ceil(v.tokens_per_invocation.clamp(1, 4) as usize) as u32,
        1,
    )
}

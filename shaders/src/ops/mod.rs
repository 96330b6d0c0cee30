//! One module per kernel: WGSL source (`shaders/wgsl/<op>.wgsl`), dispatch, and a CPU
//! reference beside it (`reference`), compared by each module's tests; an op that has
//! grown is a folder of such modules ([`linear`], [`attention`]). Which variant of each
//! kernel an adapter runs is decided in [`tuning`].
//!
//! Kernels are specialised with WGSL `override` constants (shapes, weight format, kernel
//! shape); the only templating is composing sources from fragments: `quant.wgsl` (and the
//! word-size fragments) prepended to the kernels that read quantized weights,
//! `attention_softmax.wgsl` to the attention layouts. Dynamic values (token count, first
//! position) come from one small uniform, [`Step`], written once per forward.

pub mod argmax;
pub mod attention;
pub mod elementwise;
pub mod embed;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod tuning;

use crate::gpu::{GpuContext, Kernel};

/// The per-forward uniform every block kernel reads (binding 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    pub n_tokens: u32,
    pub start_pos: u32,
    pub pad: [u32; 2],
}

/// Encodes and submits one dispatch (tests and one-off calls; the backends record many
/// dispatches into one encoder instead).
pub fn run_once(
    ctx: &GpuContext,
    kernel: &Kernel,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
) {
    let bg = ctx.bind_group(kernel, buffers);
    run_bound(ctx, &[(kernel, &bg, groups)]);
}

/// Encodes dispatches over bind groups already made, in order, in one pass, and submits
/// them (tests and one-off calls).
pub fn run_bound(ctx: &GpuContext, dispatches: &[(&Kernel, &wgpu::BindGroup, (u32, u32, u32))]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for &(kernel, bg, groups) in dispatches {
            crate::gpu::pipeline::dispatch(&mut pass, kernel, bg, groups);
        }
    }
    ctx.queue.submit([enc.finish()]);
}

/// Deterministic pseudo-random floats in `[-scale, scale)` for tests and benchmarks.
pub fn pseudo_random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the kernels' GPU-vs-CPU tests.
    use std::sync::Arc;

    use crate::gpu::GpuContext;

    pub fn ctx() -> Arc<GpuContext> {
        crate::gpu::shared().expect("tests need a Vulkan adapter (lavapipe)")
    }

    pub fn upload_f32(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
        ctx.storage_init("test input", bytemuck::cast_slice(data))
            .expect("small test buffer")
    }

    pub fn step(ctx: &GpuContext, n_tokens: u32, start_pos: u32) -> wgpu::Buffer {
        let b = ctx.uniform("step", 16);
        let s = super::Step {
            n_tokens,
            start_pos,
            pad: [0; 2],
        };
        ctx.queue.write_buffer(&b, 0, bytemuck::bytes_of(&s));
        b
    }

    /// Asserts `|got - want| <= tol * (1 + |want|)` element-wise.
    pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: gpu {g} vs cpu {w} (tol {tol})"
            );
        }
    }
}

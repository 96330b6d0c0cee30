//! RMSNorm (`wgsl/rmsnorm.wgsl`): `y = x / sqrt(mean(x²) + eps) * g`, a workgroup of 8 per
//! token row; or its first half ([`partials_kernel`]), `x ⊙ g` and the sum of squares,
//! for linear kernels that apply `1 / rms` themselves.

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};

pub const SPEC: KernelSpec = KernelSpec {
    name: "rmsnorm",
    source: include_str!("../../wgsl/rmsnorm.wgsl"),
    bindings: &[
        Binding::Uniform,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        // The sums of squares ([`partials_kernel`]; unused by [`kernel`]).
        Binding::ReadWrite,
    ],
};

/// The full RMSNorm; bound as `[step, x, g, y, unused]` ([`GpuContext::unused_buffers`]).
pub fn kernel(ctx: &GpuContext, d: usize, eps: f32) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(&SPEC, &[("D", d as f64), ("EPS", eps as f64)])
}

/// `y += RMSNorm(x) ⊙ g` (a post-norm added to the residual stream `y`); bound as
/// `[step, x, g, y, unused]`.
pub fn add_kernel(ctx: &GpuContext, d: usize, eps: f32) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(&SPEC, &[("D", d as f64), ("EPS", eps as f64), ("ADD", 1.0)])
}

/// `y = x ⊙ g` and each row's sum of squares in a buffer of `partials` floats per token
/// (the total first, then zeros): the input of a linear kernel with
/// [`super::linear::Variant::norm_partials`] set to `partials`. Bound as
/// `[step, x, g, y, sums]`.
pub fn partials_kernel(ctx: &GpuContext, d: usize, partials: u32) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(&SPEC, &[("D", d as f64), ("NP", partials.max(1) as f64)])
}

pub fn groups(n_tokens: usize) -> (u32, u32, u32) {
    (n_tokens as u32, 1, 1)
}

/// CPU reference over rows of `g.len()`.
pub fn reference(x: &[f32], g: &[f32], eps: f32, y: &mut [f32]) {
    let d = g.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((y, x), g) in yr.iter_mut().zip(xr).zip(g) {
            *y = x * inv * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{assert_close, ctx, step, upload_f32};

    /// Three rows of 576, and two of 100 (not whole rounds of the 8 lanes), within 1e-5
    /// relative.
    #[test]
    fn gpu_matches_cpu() {
        let ctx = ctx();
        for (d, n) in [(576, 3), (100, 2)] {
            let x = pseudo_random(n * d, 3, 2.0);
            let g = pseudo_random(d, 4, 1.5);
            let mut want = vec![0f32; n * d];
            reference(&x, &g, 1e-5, &mut want);
            let (xb, gb, yb) = (
                upload_f32(&ctx, &x),
                upload_f32(&ctx, &g),
                upload_f32(&ctx, &vec![0.0; n * d]),
            );
            let k = kernel(&ctx, d, 1e-5).expect("kernel");
            let st = step(&ctx, n as u32, 0);
            let unused = &ctx.unused_buffers()[1];
            crate::ops::run_once(&ctx, &k, &[&st, &xb, &gb, &yb, unused], groups(n));
            assert_close(
                &format!("rmsnorm {n}x{d}"),
                &ctx.read_f32(&yb, n * d).expect("readback"),
                &want,
                1e-5,
            );
        }
    }

    /// The add kernel leaves `y + RMSNorm(x) ⊙ g` in `y`.
    #[test]
    fn add_kernel_adds_the_norm_to_y() {
        let ctx = ctx();
        let (d, n) = (640, 2);
        let x = pseudo_random(n * d, 7, 2.0);
        let g = pseudo_random(d, 8, 1.5);
        let y0 = pseudo_random(n * d, 9, 3.0);
        let mut normed = vec![0f32; n * d];
        reference(&x, &g, 1e-6, &mut normed);
        let want: Vec<f32> = y0.iter().zip(&normed).map(|(a, b)| a + b).collect();
        let (xb, gb, yb) = (
            upload_f32(&ctx, &x),
            upload_f32(&ctx, &g),
            upload_f32(&ctx, &y0),
        );
        let k = add_kernel(&ctx, d, 1e-6).expect("kernel");
        let st = step(&ctx, n as u32, 0);
        let unused = &ctx.unused_buffers()[1];
        crate::ops::run_once(&ctx, &k, &[&st, &xb, &gb, &yb, unused], groups(n));
        let got = ctx.read_f32(&yb, n * d).expect("readback");
        assert_close("rmsnorm add", &got, &want, 1e-5);
    }

    /// The partials kernel: x ⊙ g exactly, and the sum of squares first among `np`
    /// partials (zeros after it), for np below, at and above the workgroup's 8 lanes.
    #[test]
    fn partials_give_the_weighted_input_and_the_sum_of_squares() {
        let ctx = ctx();
        for (d, n, np) in [(576, 3, 32u32), (100, 2, 1), (64, 2, 8)] {
            let x = pseudo_random(n * d, 5, 2.0);
            let g = pseudo_random(d, 6, 1.5);
            let (xb, gb, yb, sb) = (
                upload_f32(&ctx, &x),
                upload_f32(&ctx, &g),
                upload_f32(&ctx, &vec![0.0; n * d]),
                upload_f32(&ctx, &vec![7.0; n * np as usize]),
            );
            let k = partials_kernel(&ctx, d, np).expect("kernel");
            let st = step(&ctx, n as u32, 0);
            crate::ops::run_once(&ctx, &k, &[&st, &xb, &gb, &yb, &sb], groups(n));
            let want: Vec<f32> = x
                .chunks(d)
                .flat_map(|r| r.iter().zip(&g).map(|(a, b)| a * b))
                .collect();
            assert_eq!(ctx.read_f32(&yb, n * d).expect("readback"), want);
            let got = ctx.read_f32(&sb, n * np as usize).expect("readback");
            for (t, row) in x.chunks(d).enumerate() {
                let ss: f32 = row.iter().map(|v| v * v).sum();
                let p = &got[t * np as usize..(t + 1) * np as usize];
                assert!((p[0] - ss).abs() <= 1e-5 * ss, "row {t}: {} vs {ss}", p[0]);
                assert!(p[1..].iter().all(|&v| v == 0.0), "row {t}: {p:?}");
            }
        }
    }
}

//! Element-wise residual add, SwiGLU and GeGLU (`wgsl/elementwise.wgsl`). The block kernels fuse
//! both into [`super::linear`]; these stand-alone forms serve other compositions.

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};

pub const SPEC: KernelSpec = KernelSpec {
    name: "elementwise",
    source: include_str!("../../wgsl/elementwise.wgsl"),
    bindings: &[Binding::Read, Binding::Read, Binding::ReadWrite],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `y = a + b`.
    Add = 0,
    /// `y = silu(a) * b`.
    SwiGlu = 1,
    /// `y = gelu_tanh(a) * b` (Gemma's GeGLU).
    GeGlu = 2,
}

pub fn kernel(ctx: &GpuContext, op: Op, n: usize) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(&SPEC, &[("N", n as f64), ("OP", op as u32 as f64)])
}

pub fn groups(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(64) as u32, 1, 1)
}

/// `x * sigmoid(x)`, as the kernels compute it.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`, as the
/// kernels compute it.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// CPU reference.
pub fn reference(op: Op, a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
        *y = match op {
            Op::Add => a + b,
            Op::SwiGlu => silu(*a) * b,
            Op::GeGlu => gelu_tanh(*a) * b,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{assert_close, ctx, upload_f32};

    /// Add is exact; SwiGLU within 1e-5 relative (exp differs by ulps).
    #[test]
    fn gpu_matches_cpu() {
        let ctx = ctx();
        let n = 1000;
        let a = pseudo_random(n, 1, 8.0);
        let b = pseudo_random(n, 2, 3.0);
        for (op, tol) in [(Op::Add, 0.0), (Op::SwiGlu, 1e-5), (Op::GeGlu, 1e-5)] {
            let mut want = vec![0f32; n];
            reference(op, &a, &b, &mut want);
            let (ab, bb, yb) = (
                upload_f32(&ctx, &a),
                upload_f32(&ctx, &b),
                upload_f32(&ctx, &vec![0.0; n]),
            );
            let k = kernel(&ctx, op, n).expect("kernel");
            crate::ops::run_once(&ctx, &k, &[&ab, &bb, &yb], groups(n));
            let got = ctx.read_f32(&yb, n).expect("readback");
            assert_close(&format!("{op:?}"), &got, &want, tol);
        }
    }
}

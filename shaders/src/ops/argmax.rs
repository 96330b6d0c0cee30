//! Argmax over logits (`wgsl/argmax.wgsl`): the lowest index among the largest values,
//! NaN never chosen.

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};

pub const SPEC: KernelSpec = KernelSpec {
    name: "argmax",
    source: include_str!("../../wgsl/argmax.wgsl"),
    bindings: &[Binding::Read, Binding::ReadWrite],
};

pub fn kernel(ctx: &GpuContext, n: usize) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(&SPEC, &[("N", n as f64)])
}

pub const GROUPS: (u32, u32, u32) = (1, 1, 1);

/// CPU reference (0 for an empty or all-NaN input).
pub fn reference(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{ctx, upload_f32};

    fn gpu(logits: &[f32]) -> u32 {
        let ctx = ctx();
        let lb = upload_f32(&ctx, logits);
        let ob = ctx.storage("argmax out", 4).expect("small");
        let k = kernel(&ctx, logits.len()).expect("kernel");
        crate::ops::run_once(&ctx, &k, &[&lb, &ob], GROUPS);
        let bytes = ctx.read_back(&ob, 4).expect("readback");
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// Random vocab-sized logits, ties (lowest index wins, across lanes too), NaN, -inf.
    #[test]
    fn gpu_matches_cpu_with_ties_and_nan() {
        let mut l = pseudo_random(49152, 8, 10.0);
        assert_eq!(gpu(&l), reference(&l));
        l[40000] = 50.0;
        l[1001] = 50.0;
        l[70] = f32::NAN;
        assert_eq!(reference(&l), 1001);
        assert_eq!(gpu(&l), 1001);
        let all_neg_inf = vec![f32::NEG_INFINITY; 100];
        assert_eq!(gpu(&all_neg_inf), 0);
        let mut nan_first = vec![f32::NAN; 130];
        nan_first[129] = -1.0;
        assert_eq!(reference(&nan_first), 129);
        assert_eq!(gpu(&nan_first), 129);
    }
}

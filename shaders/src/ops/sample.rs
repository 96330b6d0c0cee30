//! Temperature / top-k / top-p sampling (`wgsl/sample.wgsl`). The uniform random number
//! is an input, so the CPU reference and the GPU pick the same id.
//!
//! Rule (both sides): candidates are the `k` largest logits (ties: lower id first), `k =
//! top_k` clamped to `1..=64` (`0` means 64); temperature `<= 0` is greedy. Weights
//! `exp((l - l_max) / T)`; keep the shortest prefix whose cumulative weight reaches `top_p`
//! of the total; pick the first candidate whose cumulative weight exceeds `u` times the
//! kept total.

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};

pub const SPEC: KernelSpec = KernelSpec {
    name: "sample",
    source: include_str!("../../wgsl/sample.wgsl"),
    bindings: &[Binding::Uniform, Binding::Read, Binding::ReadWrite],
};

/// Most candidates the sampler considers.
pub const MAX_TOP_K: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 means [`MAX_TOP_K`].
    pub top_k: u32,
    pub top_p: f32,
}

/// The kernel's uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Uniform {
    pub temperature: f32,
    pub top_p: f32,
    pub u: f32,
    pub top_k: u32,
}

impl Uniform {
    pub fn new(p: &SamplingParams, u: f32) -> Self {
        Self {
            temperature: p.temperature,
            top_p: p.top_p,
            u,
            top_k: p.top_k,
        }
    }
}

pub fn kernel(ctx: &GpuContext, n: usize) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(&SPEC, &[("N", n as f64)])
}

pub const GROUPS: (u32, u32, u32) = (1, 1, 1);

/// CPU reference; `u` in `[0, 1)`.
pub fn reference(logits: &[f32], p: &SamplingParams, u: f32) -> u32 {
    let mut k = if p.top_k == 0 || p.top_k > MAX_TOP_K {
        MAX_TOP_K
    } else {
        p.top_k
    } as usize;
    if p.temperature <= 0.0 {
        k = 1;
    }
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cand.truncate(k);
    if cand.len() <= 1 {
        return cand.first().map_or(0, |c| c.0);
    }
    let w: Vec<f32> = cand
        .iter()
        .map(|c| ((c.1 - cand[0].1) / p.temperature).exp())
        .collect();
    let total: f32 = w.iter().sum();
    let mut kept = w.len();
    let mut cum = 0f32;
    for (j, x) in w.iter().enumerate() {
        cum += x;
        if cum >= p.top_p * total {
            kept = j + 1;
            break;
        }
    }
    let kept_total: f32 = w[..kept].iter().sum();
    let r = u * kept_total;
    let mut c = 0f32;
    for (j, x) in w[..kept].iter().enumerate() {
        c += x;
        if c > r {
            return cand[j].0;
        }
    }
    cand[kept - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{ctx, upload_f32};

    fn gpu(logits: &[f32], p: &SamplingParams, u: f32) -> u32 {
        let ctx = ctx();
        let lb = upload_f32(&ctx, logits);
        let ub = ctx.uniform("sample params", 16);
        ctx.queue
            .write_buffer(&ub, 0, bytemuck::bytes_of(&Uniform::new(p, u)));
        let ob = ctx.storage("sample out", 4).expect("small");
        let k = kernel(&ctx, logits.len()).expect("kernel");
        crate::ops::run_once(&ctx, &k, &[&ub, &lb, &ob], GROUPS);
        let b = ctx.read_back(&ob, 4).expect("readback");
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// GPU and CPU pick the same id for many (params, u); the picks spread over more than
    /// one id (the sampler is not secretly greedy) and stay inside the top-k.
    #[test]
    fn gpu_matches_cpu() {
        let logits = pseudo_random(5000, 31, 4.0);
        let greedy = crate::ops::argmax::reference(&logits);
        let us = pseudo_random(12, 5, 0.5);
        let mut seen = std::collections::BTreeSet::new();
        for p in [
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
            },
            SamplingParams {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
            },
            SamplingParams {
                temperature: 1.0,
                top_k: 5,
                top_p: 0.5,
            },
            SamplingParams {
                temperature: 0.0,
                top_k: 40,
                top_p: 0.9,
            },
        ] {
            for &u in &us {
                let u = u + 0.5;
                let want = reference(&logits, &p, u);
                assert_eq!(gpu(&logits, &p, u), want, "{p:?} u={u}");
                if p.temperature == 0.0 {
                    assert_eq!(want, greedy);
                }
                seen.insert(want);
            }
        }
        assert!(seen.len() > 3, "picks: {seen:?}");
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
        };
        let mut top: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        for u in [0.0, 0.3, 0.6, 0.999] {
            let id = reference(&logits, &p, u) as usize;
            assert!(top[..3].iter().any(|t| t.0 == id));
        }
    }
}

//! RoPE fused with the KV-cache write (`wgsl/rope.wgsl`): rotates the q and k heads of a
//! fused qkv row in place, then stores rotated k and plain v at the token's position.
//! Pairs follow [`RopeStyle`]: adjacent `(2i, 2i+1)` or NeoX `(i, i + hd/2)`. Before the
//! rotation, where the architecture has them ([`Prep`]): q/k/v biases (qwen2) and a
//! per-head RMSNorm of q and k (qwen3, gemma3). The Llama blocks fuse plain RoPE into
//! the q/k/v matmul (`linear`'s `QkvRope`); this kernel serves the other architectures.

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};
use crate::model::{RopeScaling, RopeStyle};

pub const SPEC: KernelSpec = KernelSpec {
    name: "rope",
    source: include_str!("../../wgsl/rope.wgsl"),
    bindings: &[
        Binding::Uniform,
        Binding::ReadWrite,
        Binding::Read,
        Binding::ReadWrite,
        Binding::ReadWrite,
        // Biases (a qkv row) and the q/k norm weights; placeholders when unused.
        Binding::Read,
        Binding::Read,
    ],
};

/// What the kernel applies before rotating.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prep {
    /// Add the biases bound at 5.
    pub bias: bool,
    /// RMSNorm each q and k head with this epsilon and the weights bound at 6.
    pub qk_norm_eps: Option<f32>,
}

/// Plain RoPE; bound as `[step, qkv, cs, kc, vc, unused, unused]`
/// ([`GpuContext::unused_buffers`]).
pub fn kernel(
    ctx: &GpuContext,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    style: RopeStyle,
) -> Result<Arc<Kernel>, GpuError> {
    kernel_with(ctx, head_dim, n_heads, n_kv_heads, style, Prep::default())
}

/// RoPE after `prep`; bound as `[step, qkv, cs, kc, vc, bias, qk_norm]`.
pub fn kernel_with(
    ctx: &GpuContext,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    style: RopeStyle,
    prep: Prep,
) -> Result<Arc<Kernel>, GpuError> {
    ctx.kernel(
        &SPEC,
        &[
            ("HD", head_dim as f64),
            ("NH", n_heads as f64),
            ("NKV", n_kv_heads as f64),
            ("NEOX", (style == RopeStyle::NeoX) as u32 as f64),
            ("BIAS", prep.bias as u32 as f64),
            ("QK_NORM", prep.qk_norm_eps.is_some() as u32 as f64),
            ("EPS", prep.qk_norm_eps.unwrap_or(1e-6) as f64),
        ],
    )
}

pub fn groups(n_heads: usize, n_kv_heads: usize, n_tokens: usize) -> (u32, u32, u32) {
    ((n_heads + n_kv_heads) as u32, n_tokens as u32, 1)
}

/// `(cos, sin)` per position and pair: angle `pos · theta^(-2i/head_dim)`, computed in
/// f64 and rounded once. Shared by the CPU reference and the GPU kernel.
pub fn table(head_dim: usize, theta: f32, positions: usize) -> Vec<[f32; 2]> {
    scaled_table(head_dim, theta, &RopeScaling::None, positions)
}

/// [`table`] with RoPE scaling: linear scaling divides the position, Llama 3.1+'s
/// per-pair factors (`rope_freqs.weight`) divide each pair's frequency, as llama.cpp's
/// `freq_factors` do.
pub fn scaled_table(
    head_dim: usize,
    theta: f32,
    scaling: &RopeScaling,
    positions: usize,
) -> Vec<[f32; 2]> {
    let half = head_dim / 2;
    let mut t = Vec::with_capacity(positions * half);
    for pos in 0..positions {
        for i in 0..half {
            let mut freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let mut p = pos as f64;
            match scaling {
                RopeScaling::None => {}
                RopeScaling::Linear(f) => p /= *f as f64,
                RopeScaling::FreqFactors(f) => freq /= f.get(i).copied().unwrap_or(1.0) as f64,
            }
            let a = p * freq;
            t.push([a.cos() as f32, a.sin() as f32]);
        }
    }
    t
}

/// The table block `b` of `c` rotates with: its own base (Gemma 3's local layers), and
/// the scaling on layers of the global base only (Gemma 3 scales its global layers
/// alone; every layer of the other architectures is global).
pub fn block_table(c: &crate::model::ModelConfig, b: usize, positions: usize) -> Vec<[f32; 2]> {
    let local = c.window_of(b).is_some();
    let none = RopeScaling::None;
    let scaling = if local {
        &none
    } else {
        &c.features.rope_scaling
    };
    scaled_table(c.head_dim, c.rope_theta_of(b), scaling, positions)
}

/// CPU reference: rotates each head of `x` (`n_heads × head_dim`) for position `pos`.
pub fn reference(style: RopeStyle, head_dim: usize, table: &[[f32; 2]], pos: usize, x: &mut [f32]) {
    let half = head_dim / 2;
    let cs = &table[pos * half..(pos + 1) * half];
    for head in x.chunks_exact_mut(head_dim) {
        for (i, c) in cs.iter().enumerate() {
            let (ia, ib) = match style {
                RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                RopeStyle::NeoX => (i, i + half),
            };
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * c[0] - b * c[1];
            head[ib] = a * c[1] + b * c[0];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{assert_close, ctx, step, upload_f32};

    /// Both pairings; q rotated in place, k rotated and v copied into the cache at
    /// positions start..start+n; exact up to 1e-6.
    #[test]
    fn gpu_matches_cpu_both_styles() {
        let ctx = ctx();
        let (hd, nh, nkv, n, start) = (16, 4, 2, 3, 5);
        let qkv_w = (nh + 2 * nkv) * hd;
        let kvd = nkv * hd;
        let tab = table(hd, 10000.0, 16);
        for style in [RopeStyle::Adjacent, RopeStyle::NeoX] {
            let x = pseudo_random(n * qkv_w, 9, 1.0);
            let mut want_q = Vec::new();
            let mut want_k = vec![0f32; 16 * kvd];
            let mut want_v = vec![0f32; 16 * kvd];
            for t in 0..n {
                let row = &x[t * qkv_w..(t + 1) * qkv_w];
                let mut q = row[..nh * hd].to_vec();
                reference(style, hd, &tab, start + t, &mut q);
                want_q.extend_from_slice(&q);
                let mut k = row[nh * hd..nh * hd + kvd].to_vec();
                reference(style, hd, &tab, start + t, &mut k);
                want_k[(start + t) * kvd..(start + t + 1) * kvd].copy_from_slice(&k);
                want_v[(start + t) * kvd..(start + t + 1) * kvd]
                    .copy_from_slice(&row[nh * hd + kvd..]);
            }
            let xb = upload_f32(&ctx, &x);
            let csb = ctx
                .storage_init("cs", bytemuck::cast_slice(&tab))
                .expect("small");
            let kb = upload_f32(&ctx, &vec![0.0; 16 * kvd]);
            let vb = upload_f32(&ctx, &vec![0.0; 16 * kvd]);
            let st = step(&ctx, n as u32, start as u32);
            let k = kernel(&ctx, hd, nh, nkv, style).expect("kernel");
            let [u0, u1, ..] = ctx.unused_buffers();
            let binds = [&st, &xb, &csb, &kb, &vb, u0, u1];
            crate::ops::run_once(&ctx, &k, &binds, groups(nh, nkv, n));
            let got = ctx.read_f32(&xb, n * qkv_w).expect("readback");
            let got_q: Vec<f32> = got
                .chunks_exact(qkv_w)
                .flat_map(|r| r[..nh * hd].to_vec())
                .collect();
            assert_close("q", &got_q, &want_q, 1e-6);
            assert_close(
                "k cache",
                &ctx.read_f32(&kb, 16 * kvd).expect("rb"),
                &want_k,
                1e-6,
            );
            assert_close(
                "v cache",
                &ctx.read_f32(&vb, 16 * kvd).expect("rb"),
                &want_v,
                0.0,
            );
        }
    }

    /// The two styles pair different elements (a test that would catch swapping them).
    #[test]
    fn styles_differ() {
        let tab = table(8, 10000.0, 4);
        let mut a = pseudo_random(8, 1, 1.0);
        let mut b = a.clone();
        reference(RopeStyle::Adjacent, 8, &tab, 3, &mut a);
        reference(RopeStyle::NeoX, 8, &tab, 3, &mut b);
        assert_ne!(a, b);
        let mut c = a.clone();
        reference(RopeStyle::Adjacent, 8, &tab, 0, &mut c);
        assert_eq!(a, c, "position 0 is the identity");
    }
}

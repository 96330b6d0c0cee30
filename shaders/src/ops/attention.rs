//! Causal attention with GQA over the KV cache (`wgsl/attention.wgsl`): query head `h` of
//! the token at position `p` attends positions `0..=p` (the last `window` of them in a
//! sliding-window layer, [`Options`]) of KV head `h / (n_heads / n_kv_heads)`, scale
//! `1/sqrt(head_dim)` unless the architecture says otherwise, softmax in f32. Serves prefill (many query
//! rows) and decode (one). The lanes of a workgroup split the positions and merge their
//! partial softmaxes; a workgroup serves one query head on GPUs, and on CPU adapters
//! all the query heads of a KV head that fit (each K/V load then serves all of them:
//! [`Layout`]), there with the lanes over the head dimension where subgroups allow.

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};

/// One query head per workgroup ([`Layout::HeadPerWorkgroup`]).
pub const SPEC: KernelSpec = KernelSpec {
    name: "attention",
    source: concat!(
        include_str!("../../wgsl/attention.wgsl"),
        include_str!("../../wgsl/attention_kv32.wgsl"),
        include_str!("../../wgsl/attention_heads.wgsl")
    ),
    bindings: BINDINGS,
};

/// A KV head's query heads per workgroup, lanes over the head dimension
/// ([`Layout::LanesOverDims`]); needs subgroups of 8.
pub const LANES_SPEC: KernelSpec = KernelSpec {
    name: "attention_lanes",
    source: concat!(
        include_str!("../../wgsl/attention.wgsl"),
        include_str!("../../wgsl/attention_kv32.wgsl"),
        include_str!("../../wgsl/attention_lanes.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`LANES_SPEC`] reading the KV caches as 64-bit words, on devices with
/// [`wgpu::Features::SHADER_INT64`] (half the load instructions on llvmpipe).
pub const LANES_SPEC64: KernelSpec = KernelSpec {
    name: "attention_lanes64",
    source: concat!(
        include_str!("../../wgsl/attention.wgsl"),
        include_str!("../../wgsl/attention_kv64.wgsl"),
        include_str!("../../wgsl/attention_lanes.wgsl")
    ),
    bindings: BINDINGS,
};

/// A KV head's query heads per workgroup ([`Layout::GroupPerWorkgroup`]).
pub const GROUPS_SPEC: KernelSpec = KernelSpec {
    name: "attention_groups",
    source: concat!(
        include_str!("../../wgsl/attention.wgsl"),
        include_str!("../../wgsl/attention_kv32.wgsl"),
        include_str!("../../wgsl/attention_groups.wgsl")
    ),
    bindings: BINDINGS,
};

const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
];

/// Largest head dimension the kernels' private arrays hold: 128 in the head-per-workgroup
/// and lanes layouts, 256 (Gemma 3's heads) in the grouped one ([`layout_for`]).
pub const MAX_HEAD_DIM: usize = 256;
/// Largest head dimension of the head-per-workgroup and lanes layouts.
const MAX_HEAD_DIM_WIDE: usize = 128;

/// What a layer's attention does beyond the plain causal softmax.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The logits' scale.
    pub scale: f32,
    /// Sliding window: a query attends its own and the `window - 1` positions before it
    /// (`None`: every earlier position).
    pub window: Option<usize>,
}

impl Options {
    /// The plain causal attention over heads of `head_dim`: scale `1/√head_dim`.
    pub fn causal(head_dim: usize) -> Self {
        Self {
            scale: scale(head_dim),
            window: None,
        }
    }
}

/// The layout for heads of `head_dim` on `ctx`: [`Layout::for_context`], except that
/// heads wider than 128 take the grouped layout (one query head per workgroup of 8 lanes,
/// 64 vec4s of accumulators), the only one whose private arrays hold them.
pub fn layout_for(ctx: &GpuContext, head_dim: usize) -> Layout {
    if head_dim > MAX_HEAD_DIM_WIDE {
        Layout::GroupPerWorkgroup
    } else {
        Layout::for_context(ctx)
    }
}

/// How the work is split into workgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A workgroup of 32 per (query head, token), its lanes over the positions: for GPUs.
    HeadPerWorkgroup,
    /// A workgroup of 8 per (KV head, up to 8 of its query heads, token), its lanes over
    /// the positions, each K/V row loaded once for all those query heads: for CPU
    /// adapters, where load instructions are what costs.
    GroupPerWorkgroup,
    /// As [`Layout::GroupPerWorkgroup`] with the lanes over the head dimension and the
    /// positions taken in turn, scores summed with `subgroupAdd`: for CPU adapters whose
    /// subgroups are the workgroup of 8 (lavapipe), where it keeps q and the accumulators
    /// in registers (~3x less CPU time than over positions at 256 cached positions).
    LanesOverDims,
}

impl Layout {
    pub fn for_context(ctx: &GpuContext) -> Layout {
        if ctx.is_cpu() && ctx.subgroup_sizes() == Some((8, 8)) {
            Layout::LanesOverDims
        } else if ctx.is_cpu() {
            Layout::GroupPerWorkgroup
        } else {
            Layout::HeadPerWorkgroup
        }
    }
}

/// Query heads per workgroup in [`Layout::GroupPerWorkgroup`]: the largest divisor of the
/// group size whose q and accumulators fit the kernel's 64 vec4s, at most 8.
fn heads_per_workgroup(head_dim: usize, n_heads: usize, n_kv_heads: usize) -> usize {
    let g = n_heads / n_kv_heads.max(1);
    (1..=g.min(8))
        .rev()
        .find(|c| g.is_multiple_of(*c) && c * head_dim / 4 <= 64)
        .unwrap_or(1)
}

/// The kernel in the layout suited to `ctx` ([`Layout::for_context`]).
pub fn kernel(
    ctx: &GpuContext,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<Arc<Kernel>, GpuError> {
    kernel_in(ctx, Layout::for_context(ctx), head_dim, n_heads, n_kv_heads)
}

pub fn kernel_in(
    ctx: &GpuContext,
    layout: Layout,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<Arc<Kernel>, GpuError> {
    let opts = Options::causal(head_dim);
    kernel_with(ctx, layout, head_dim, n_heads, n_kv_heads, opts)
}

/// [`kernel_in`] with a layer's own scale and window.
pub fn kernel_with(
    ctx: &GpuContext,
    layout: Layout,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    opts: Options,
) -> Result<Arc<Kernel>, GpuError> {
    let wide = ctx.has_int64();
    kernel_words(ctx, layout, head_dim, n_heads, n_kv_heads, wide, opts)
}

/// [`kernel_with`], reading the KV caches as 64-bit words in the lanes layout when `wide`.
fn kernel_words(
    ctx: &GpuContext,
    layout: Layout,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    wide: bool,
    opts: Options,
) -> Result<Arc<Kernel>, GpuError> {
    let max = match layout {
        Layout::GroupPerWorkgroup => MAX_HEAD_DIM,
        _ => MAX_HEAD_DIM_WIDE,
    };
    if head_dim > max
        || !head_dim.is_multiple_of(4)
        || n_kv_heads == 0
        || !n_heads.is_multiple_of(n_kv_heads)
    {
        return Err(GpuError::Kernel {
            kernel: "attention".into(),
            reason: format!(
                "head_dim {head_dim} (must be a multiple of 4 up to {max} in layout \
                 {layout:?}) or {n_heads} heads over {n_kv_heads} KV heads unsupported"
            ),
        });
    }
    let mut c = vec![
        ("HD", head_dim as f64),
        ("NH", n_heads as f64),
        ("NKV", n_kv_heads as f64),
        ("SCALE", opts.scale as f64),
        (
            "WINDOW",
            opts.window.unwrap_or(0).min(u32::MAX as usize) as f64,
        ),
    ];
    let spec = match layout {
        Layout::HeadPerWorkgroup => &SPEC,
        Layout::GroupPerWorkgroup | Layout::LanesOverDims => {
            c.push((
                "GC",
                heads_per_workgroup(head_dim, n_heads, n_kv_heads) as f64,
            ));
            if layout == Layout::GroupPerWorkgroup {
                &GROUPS_SPEC
            } else if ctx.subgroup_sizes() == Some((8, 8)) {
                if wide { &LANES_SPEC64 } else { &LANES_SPEC }
            } else {
                return Err(GpuError::Kernel {
                    kernel: LANES_SPEC.name.into(),
                    reason: "needs subgroups of exactly 8".into(),
                });
            }
        }
    };
    ctx.kernel(spec, &c)
}

/// Workgroups of `layout` for `n_tokens` query rows.
pub fn groups(
    layout: Layout,
    head_dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    n_tokens: usize,
) -> (u32, u32, u32) {
    let x = match layout {
        Layout::HeadPerWorkgroup => n_heads,
        Layout::GroupPerWorkgroup | Layout::LanesOverDims => {
            n_heads / heads_per_workgroup(head_dim, n_heads, n_kv_heads)
        }
    };
    (x as u32, n_tokens as u32, 1)
}

pub fn scale(head_dim: usize) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// CPU reference. `q` holds `n` rows of `n_heads × head_dim` (row stride `q_stride`);
/// `k`/`v` hold positions `0..start_pos + n` of `n_kv_heads × head_dim`; `out` gets `n`
/// rows of `n_heads × head_dim`. Two-pass softmax in f32.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    q: &[f32],
    q_stride: usize,
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    start_pos: usize,
    out: &mut [f32],
) {
    let opts = Options::causal(head_dim);
    reference_with(
        q, q_stride, k, v, n_heads, n_kv_heads, head_dim, start_pos, opts, out,
    )
}

/// [`reference`] with a layer's own scale and window.
#[allow(clippy::too_many_arguments)]
pub fn reference_with(
    q: &[f32],
    q_stride: usize,
    k: &[f32],
    v: &[f32],
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    start_pos: usize,
    opts: Options,
    out: &mut [f32],
) {
    let kvd = n_kv_heads * head_dim;
    let group = n_heads / n_kv_heads;
    let sc = opts.scale;
    let n = out.len() / (n_heads * head_dim);
    let mut scores = Vec::new();
    for t in 0..n {
        let pos = start_pos + t;
        for h in 0..n_heads {
            let qh = &q[t * q_stride + h * head_dim..][..head_dim];
            let kvh = h / group;
            scores.clear();
            let first = first_position(pos, opts.window);
            for p in first..=pos {
                let kp = &k[p * kvd + kvh * head_dim..][..head_dim];
                scores.push(qh.iter().zip(kp).map(|(a, b)| a * b).sum::<f32>() * sc);
            }
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - m).exp();
                total += *s;
            }
            let o = &mut out[(t * n_heads + h) * head_dim..][..head_dim];
            o.fill(0.0);
            for (i, s) in scores.iter().enumerate() {
                let p = first + i;
                let vp = &v[p * kvd + kvh * head_dim..][..head_dim];
                for (o, x) in o.iter_mut().zip(vp) {
                    *o += s / total * x;
                }
            }
        }
    }
}

/// The first position a query at `pos` attends in a window of `window` (or from 0).
pub fn first_position(pos: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) if w > 0 => (pos + 1).saturating_sub(w),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{assert_close, ctx, step, upload_f32};

    /// Prefill (query rows after cached positions) and decode (one row), in every layout:
    /// GQA 6/2 heads, contexts shorter and longer than the lanes that split positions;
    /// 18/2 x 16 (9 query heads per KV head: workgroups of 3) and 4/4 x 128 (one head
    /// fills the accumulators); within 1e-5.
    #[test]
    fn gpu_matches_cpu_prefill_and_decode() {
        let mut layouts = vec![Layout::HeadPerWorkgroup, Layout::GroupPerWorkgroup];
        if ctx().subgroup_sizes() == Some((8, 8)) {
            layouts.push(Layout::LanesOverDims);
        }
        for layout in layouts {
            for (hd, nh, nkv) in [(32, 6, 2), (16, 18, 2), (128, 4, 4)] {
                check(layout, hd, nh, nkv);
            }
        }
        assert_eq!(heads_per_workgroup(64, 9, 3), 3);
        assert_eq!(heads_per_workgroup(16, 18, 2), 3);
        assert_eq!(heads_per_workgroup(128, 8, 1), 2);
    }

    fn check(layout: Layout, hd: usize, nh: usize, nkv: usize) {
        let ctx = ctx();
        let qkv_w = (nh + 2 * nkv) * hd;
        let kvd = nkv * hd;
        for (start, n) in [(3usize, 4usize), (9, 1), (0, 1), (70, 3), (100, 1)] {
            let total = start + n;
            let qkv = pseudo_random(n * qkv_w, 5 + start as u64, 2.0);
            let kc = pseudo_random(total * kvd, 6, 2.0);
            let vc = pseudo_random(total * kvd, 7, 1.0);
            let mut want = vec![0f32; n * nh * hd];
            reference(&qkv, qkv_w, &kc, &vc, nh, nkv, hd, start, &mut want);
            let (qb, kb, vb) = (
                upload_f32(&ctx, &qkv),
                upload_f32(&ctx, &kc),
                upload_f32(&ctx, &vc),
            );
            let ob = upload_f32(&ctx, &vec![0.0; n * nh * hd]);
            let st = step(&ctx, n as u32, start as u32);
            // The KV caches read as 64-bit words and as f32 vec4s, where that differs.
            let wide: &[bool] = if layout == Layout::LanesOverDims && ctx.has_int64() {
                &[true, false]
            } else {
                &[false]
            };
            for &wide in wide {
                let opts = Options::causal(hd);
                let k = kernel_words(&ctx, layout, hd, nh, nkv, wide, opts).expect("kernel");
                let wg = groups(layout, hd, nh, nkv, n);
                crate::ops::run_once(&ctx, &k, &[&st, &qb, &kb, &vb, &ob], wg);
                let got = ctx.read_f32(&ob, n * nh * hd).expect("readback");
                let what =
                    format!("attention {layout:?} {nh}/{nkv}x{hd} start={start} n={n} wide={wide}");
                assert_close(&what, &got, &want, 1e-5);
            }
        }
    }

    /// Sliding windows (smaller than, equal to and past the positions) with another
    /// scale, in every layout, and Gemma 3's heads of 256 in the grouped layout.
    #[test]
    fn window_and_scale_match_cpu() {
        let ctx = ctx();
        let mut cases = vec![
            (Layout::HeadPerWorkgroup, 32, 4, 2),
            (Layout::GroupPerWorkgroup, 32, 4, 2),
            (Layout::GroupPerWorkgroup, 256, 4, 1),
        ];
        if ctx.subgroup_sizes() == Some((8, 8)) {
            cases.push((Layout::LanesOverDims, 32, 4, 2));
        }
        assert_eq!(layout_for(&ctx, 256), Layout::GroupPerWorkgroup);
        for (layout, hd, nh, nkv) in cases {
            let qkv_w = (nh + 2 * nkv) * hd;
            let kvd = nkv * hd;
            for (start, n, window) in [(9usize, 3usize, 4usize), (20, 1, 5), (2, 2, 8), (0, 1, 1)] {
                let opts = Options {
                    scale: 0.3,
                    window: Some(window),
                };
                let total = start + n;
                let qkv = pseudo_random(n * qkv_w, 11 + start as u64, 2.0);
                let kc = pseudo_random(total * kvd, 12, 2.0);
                let vc = pseudo_random(total * kvd, 13, 1.0);
                let mut want = vec![0f32; n * nh * hd];
                reference_with(&qkv, qkv_w, &kc, &vc, nh, nkv, hd, start, opts, &mut want);
                let mut unwindowed = vec![0f32; n * nh * hd];
                let plain = Options {
                    window: None,
                    ..opts
                };
                reference_with(
                    &qkv,
                    qkv_w,
                    &kc,
                    &vc,
                    nh,
                    nkv,
                    hd,
                    start,
                    plain,
                    &mut unwindowed,
                );
                if start + 1 > window {
                    assert_ne!(want, unwindowed, "the window changes the result");
                }
                let (qb, kb, vb) = (
                    upload_f32(&ctx, &qkv),
                    upload_f32(&ctx, &kc),
                    upload_f32(&ctx, &vc),
                );
                let ob = upload_f32(&ctx, &vec![0.0; n * nh * hd]);
                let st = step(&ctx, n as u32, start as u32);
                let k = kernel_with(&ctx, layout, hd, nh, nkv, opts).expect("kernel");
                let wg = groups(layout, hd, nh, nkv, n);
                crate::ops::run_once(&ctx, &k, &[&st, &qb, &kb, &vb, &ob], wg);
                let got = ctx.read_f32(&ob, n * nh * hd).expect("readback");
                let what = format!(
                    "attention {layout:?} {nh}/{nkv}x{hd} start={start} n={n} window={window}"
                );
                assert_close(&what, &got, &want, 1e-5);
            }
        }
    }

    /// A single position returns its value row unchanged, whatever the query.
    #[test]
    fn one_position_returns_v() {
        let (hd, nh, nkv) = (4, 2, 1);
        let q = pseudo_random(nh * hd, 1, 3.0);
        let k = pseudo_random(hd, 2, 1.0);
        let v = pseudo_random(hd, 3, 1.0);
        let mut out = vec![0f32; nh * hd];
        reference(&q, nh * hd, &k, &v, nh, nkv, hd, 0, &mut out);
        assert_close("head 0", &out[..hd], &v, 1e-6);
        assert_close("head 1", &out[hd..], &v, 1e-6);
    }
}

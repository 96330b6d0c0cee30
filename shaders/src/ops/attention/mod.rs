//! Causal attention with GQA over the KV cache (`wgsl/attention.wgsl`): query head `h` of
//! the token at position `p` attends positions `0..=p` (the last `window` of them in a
//! sliding-window layer, [`Options`]) of KV head `h / (n_heads / n_kv_heads)`, scale
//! `1/sqrt(head_dim)` unless the architecture says otherwise, softmax in f32 (an online
//! softmax, `wgsl/attention_softmax.wgsl`, shared by the three [`Layout`]s). Serves
//! prefill (many query rows) and decode (one). The layout an adapter runs is
//! [`crate::ops::tuning`]'s call; what the CPU layouts save on lavapipe:
//! `docs/perf/lavapipe.md`. The CPU reference is [`reference`](mod@reference).

pub mod reference;
#[cfg(test)]
mod tests;

pub use reference::{first_position, reference, reference_with};

use std::sync::Arc;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};
use crate::ops::tuning::AdapterProfile;

/// One query head per workgroup ([`Layout::HeadPerWorkgroup`]).
pub const SPEC: KernelSpec = KernelSpec {
    name: "attention",
    source: concat!(
        include_str!("../../../wgsl/attention.wgsl"),
        include_str!("../../../wgsl/attention_softmax.wgsl"),
        include_str!("../../../wgsl/attention_kv32.wgsl"),
        include_str!("../../../wgsl/attention_heads.wgsl")
    ),
    bindings: BINDINGS,
};

/// A KV head's query heads per workgroup, lanes over the head dimension
/// ([`Layout::LanesOverDims`]); needs subgroups of 8.
pub const LANES_SPEC: KernelSpec = KernelSpec {
    name: "attention_lanes",
    source: concat!(
        include_str!("../../../wgsl/attention.wgsl"),
        include_str!("../../../wgsl/attention_softmax.wgsl"),
        include_str!("../../../wgsl/attention_kv32.wgsl"),
        include_str!("../../../wgsl/attention_lanes.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`LANES_SPEC`] reading the KV caches as 64-bit words, on CPU adapters with
/// [`wgpu::Features::SHADER_INT64`] ([`AdapterProfile::attention_wide_kv`]).
pub const LANES_SPEC64: KernelSpec = KernelSpec {
    name: "attention_lanes64",
    source: concat!(
        include_str!("../../../wgsl/attention.wgsl"),
        include_str!("../../../wgsl/attention_softmax.wgsl"),
        include_str!("../../../wgsl/attention_kv64.wgsl"),
        include_str!("../../../wgsl/attention_lanes.wgsl")
    ),
    bindings: BINDINGS,
};

/// A KV head's query heads per workgroup ([`Layout::GroupPerWorkgroup`]).
pub const GROUPS_SPEC: KernelSpec = KernelSpec {
    name: "attention_groups",
    source: concat!(
        include_str!("../../../wgsl/attention.wgsl"),
        include_str!("../../../wgsl/attention_softmax.wgsl"),
        include_str!("../../../wgsl/attention_kv32.wgsl"),
        include_str!("../../../wgsl/attention_groups.wgsl")
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
pub(crate) const MAX_HEAD_DIM_WIDE: usize = 128;

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

/// The layout for heads of `head_dim` on `ctx` ([`AdapterProfile::attention_layout`]):
/// [`Layout::for_context`], except that heads wider than 128 take the grouped layout (one
/// query head per workgroup of 8 lanes, 64 vec4s of accumulators), the only one whose
/// private arrays hold them.
pub fn layout_for(ctx: &GpuContext, head_dim: usize) -> Layout {
    AdapterProfile::of(ctx).attention_layout(head_dim)
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
    /// The layout for heads of up to 128 on `ctx` ([`AdapterProfile::attention_layout`]).
    pub fn for_context(ctx: &GpuContext) -> Layout {
        AdapterProfile::of(ctx).attention_layout(MAX_HEAD_DIM_WIDE)
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
    let wide = AdapterProfile::of(ctx).attention_wide_kv(layout);
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
            } else if AdapterProfile::of(ctx).has_lanes_of_8() {
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

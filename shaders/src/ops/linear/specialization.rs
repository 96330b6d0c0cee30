//! Which WGSL source and override constants a linear [`Variant`] compiles to: the kernel
//! sources composed from their fragments ([`SPEC`] and its variants) and
//! [`specialization`], which picks one and checks the variant against the weights.

use super::{GpuWeight, Mode, Shape, Variant, invocation_rows};
use crate::gpu::{Binding, GpuContext, GpuError, KernelSpec};
use crate::ops::tuning::AdapterProfile;

/// The linear kernel in its thread shapes ([`Shape::Threads`]), reading 32-bit words.
pub const SPEC: KernelSpec = KernelSpec {
    name: "linear",
    source: concat!(
        include_str!("../../../wgsl/quant.wgsl"),
        include_str!("../../../wgsl/quant_words32.wgsl"),
        include_str!("../../../wgsl/linear_words32.wgsl"),
        include_str!("../../../wgsl/linear_x_each.wgsl"),
        include_str!("../../../wgsl/linear.wgsl"),
        include_str!("../../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SPEC`] reading 64-bit words (where [`Words::wide_on`](super::Words::wide_on) the
/// adapter: see [`AdapterProfile::wide_words`]).
pub const SPEC64: KernelSpec = KernelSpec {
    name: "linear64",
    source: concat!(
        include_str!("../../../wgsl/quant.wgsl"),
        include_str!("../../../wgsl/linear_words64.wgsl"),
        include_str!("../../../wgsl/linear_x_each.wgsl"),
        include_str!("../../../wgsl/linear.wgsl"),
        include_str!("../../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SPEC`] with the inputs loaded once per subgroup and shared by `subgroupBroadcast`
/// (`wgsl/linear_x_shared.wgsl`): where [`AdapterProfile::linear_shares_inputs`].
pub const SHARED_X_SPEC: KernelSpec = KernelSpec {
    name: "linear_shared_x",
    source: concat!(
        include_str!("../../../wgsl/quant.wgsl"),
        include_str!("../../../wgsl/quant_words32.wgsl"),
        include_str!("../../../wgsl/linear_words32.wgsl"),
        include_str!("../../../wgsl/linear_x_shared.wgsl"),
        include_str!("../../../wgsl/linear.wgsl"),
        include_str!("../../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SHARED_X_SPEC`] reading 64-bit words.
pub const SHARED_X_SPEC64: KernelSpec = KernelSpec {
    name: "linear_shared_x64",
    source: concat!(
        include_str!("../../../wgsl/quant.wgsl"),
        include_str!("../../../wgsl/linear_words64.wgsl"),
        include_str!("../../../wgsl/linear_x_shared.wgsl"),
        include_str!("../../../wgsl/linear.wgsl"),
        include_str!("../../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// The linear kernel in its subgroup shape ([`Shape::Subgroup`]); compiles only on a
/// device with [`wgpu::Features::SUBGROUP`].
pub const SUBGROUP_SPEC: KernelSpec = KernelSpec {
    name: "linear_subgroup",
    source: concat!(
        include_str!("../../../wgsl/quant.wgsl"),
        include_str!("../../../wgsl/quant_words32.wgsl"),
        include_str!("../../../wgsl/linear_words32.wgsl"),
        include_str!("../../../wgsl/linear_x_each.wgsl"),
        include_str!("../../../wgsl/linear.wgsl"),
        include_str!("../../../wgsl/linear_subgroup.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SUBGROUP_SPEC`] reading 64-bit words.
pub const SUBGROUP_SPEC64: KernelSpec = KernelSpec {
    name: "linear_subgroup64",
    source: concat!(
        include_str!("../../../wgsl/quant.wgsl"),
        include_str!("../../../wgsl/linear_words64.wgsl"),
        include_str!("../../../wgsl/linear_x_each.wgsl"),
        include_str!("../../../wgsl/linear.wgsl"),
        include_str!("../../../wgsl/linear_subgroup.wgsl")
    ),
    bindings: BINDINGS,
};

const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
];

/// WGSL override constants, by name.
pub type Constants = Vec<(&'static str, f64)>;

/// Which kernel source [`kernel`] compiles for `w` as `v`, and its override constants
/// (for benches that wrap the same kernel in another entry point).
pub fn specialization(
    ctx: &GpuContext,
    w: &GpuWeight,
    v: &Variant,
) -> Result<(&'static KernelSpec, Constants), GpuError> {
    let mut c = vec![
        ("FMT", w.fmt as f64),
        ("K", w.cols as f64),
        ("ROWS", invocation_rows(w.rows, v.mode) as f64),
        ("MODE", v.mode as u32 as f64),
        ("TT", v.tokens_per_invocation.clamp(1, 4) as f64),
        ("TILE", w.tile as f64),
        ("Y_STRIDE", v.output.map_or(0, |o| o.0) as f64),
        ("Y_OFFSET", v.output.map_or(0, |o| o.1) as f64),
    ];
    if v.output.is_some() && v.mode != Mode::Store {
        return Err(GpuError::Kernel {
            kernel: SPEC.name.into(),
            reason: format!("an output stride needs the store mode: {v:?}"),
        });
    }
    let profile = AdapterProfile::of(ctx);
    let wide = v.words.wide_on(&profile);
    if wide && !profile.int64 {
        return Err(GpuError::Kernel {
            kernel: SPEC64.name.into(),
            reason: "64-bit words need the SHADER_INT64 feature".into(),
        });
    }
    let spec = match v.shape {
        Shape::Threads {
            threads_per_row,
            workgroup,
            rows_per_thread,
        } => {
            c.push(("TPR", threads_per_row.max(1) as f64));
            c.push(("RPI", rows_per_thread.clamp(1, 32) as f64));
            c.push(("WG", workgroup as f64));
            match (profile.linear_shares_inputs(&v.shape), wide) {
                (true, true) => &SHARED_X_SPEC64,
                (true, false) => &SHARED_X_SPEC,
                (false, true) => &SPEC64,
                (false, false) => &SPEC,
            }
        }
        Shape::Subgroup {
            workgroup,
            rows_per_workgroup,
        } => {
            let bad = |reason: String| GpuError::Kernel {
                kernel: SUBGROUP_SPEC.name.into(),
                reason,
            };
            let (_, max) = profile
                .subgroups
                .ok_or_else(|| bad("the adapter has no subgroups".into()))?;
            if workgroup == 0 || !workgroup.is_multiple_of(max) {
                return Err(bad(format!(
                    "workgroup of {workgroup} is not a multiple of the subgroup size {max}"
                )));
            }
            c.push(("WG", workgroup as f64));
            c.push(("RPW", rows_per_workgroup.max(1) as f64));
            if wide {
                &SUBGROUP_SPEC64
            } else {
                &SUBGROUP_SPEC
            }
        }
    };
    if let Some(eps) = v.norm_eps {
        if v.norm_partials > 0 {
            c.push(("NORM_IN", v.norm_partials as f64));
        } else {
            c.push(("NORM", 1.0));
        }
        c.push(("EPS", eps as f64));
    }
    if v.norm_out {
        if v.mode != Mode::Accumulate || !matches!(v.shape, Shape::Threads { .. }) {
            return Err(GpuError::Kernel {
                kernel: "linear".into(),
                reason: format!("norm output needs the residual mode in a thread shape: {v:?}"),
            });
        }
        c.push(("NORM_OUT", 1.0));
    }
    if v.mode == Mode::QkvRope {
        let r = v.rope.ok_or_else(|| GpuError::Kernel {
            kernel: "linear".into(),
            reason: "q/k/v mode needs the attention shape".into(),
        })?;
        if (r.n_heads + 2 * r.n_kv_heads) * r.head_dim != w.rows || !r.head_dim.is_multiple_of(2) {
            return Err(GpuError::Kernel {
                kernel: "linear".into(),
                reason: format!("{} rows are not q/k/v heads of {r:?}", w.rows),
            });
        }
        c.push(("HD", r.head_dim as f64));
        c.push(("NH", r.n_heads as f64));
        c.push(("NKV", r.n_kv_heads as f64));
        c.push((
            "NEOX",
            (r.style == crate::model::RopeStyle::NeoX) as u32 as f64,
        ));
    }
    Ok((spec, c))
}

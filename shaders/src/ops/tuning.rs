//! Which kernel variant each adapter runs: one [`AdapterProfile`], built from what the
//! adapter reports (CPU or GPU, subgroup sizes, features, limits), answers every op's
//! choice of shape, layout and word size, so that a choice measured on one kind of
//! adapter is made for that kind only.
//!
//! The rule: a variant measured only on lavapipe/llvmpipe (Mesa's CPU Vulkan driver; see
//! `docs/perf/lavapipe.md`) is taken only where [`AdapterProfile::is_cpu`]. A real GPU
//! gets the conventional shapes (subgroups or workgroup reductions, one query head per
//! workgroup, 32-bit words), whatever features it also has.

use crate::gpu::GpuContext;
use crate::ops::attention::Layout;
use crate::ops::linear::Shape;

/// Whether an adapter is a GPU or runs on the CPU (lavapipe, llvmpipe, SwiftShader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    Cpu,
    Gpu,
}

/// What the kernels' choices depend on, read from the adapter once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterProfile {
    pub kind: AdapterKind,
    /// (smallest, largest) subgroup size, where the device has [`wgpu::Features::SUBGROUP`].
    pub subgroups: Option<(u32, u32)>,
    /// [`wgpu::Features::SHADER_INT64`]: kernels may read `u64` words.
    pub int64: bool,
    /// [`wgpu::Features::SHADER_F16`].
    pub f16: bool,
    /// The largest buffer one storage binding may cover.
    pub max_storage_binding: u64,
}

impl AdapterProfile {
    /// The profile of an adapter from its info, the features its device was opened with
    /// and its limits.
    pub fn new(info: &wgpu::AdapterInfo, features: wgpu::Features, limits: &wgpu::Limits) -> Self {
        let subgroups = features
            .contains(wgpu::Features::SUBGROUP)
            .then_some((info.subgroup_min_size, info.subgroup_max_size));
        Self {
            kind: if info.device_type == wgpu::DeviceType::Cpu {
                AdapterKind::Cpu
            } else {
                AdapterKind::Gpu
            },
            subgroups,
            int64: features.contains(wgpu::Features::SHADER_INT64),
            f16: features.contains(wgpu::Features::SHADER_F16),
            max_storage_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
        }
    }

    /// The profile of `ctx`'s adapter.
    pub fn of(ctx: &GpuContext) -> Self {
        Self::new(ctx.adapter_info(), ctx.features(), ctx.limits())
    }

    pub fn is_cpu(&self) -> bool {
        self.kind == AdapterKind::Cpu
    }

    /// Whether kernels read their weights, inputs and KV caches as 64-bit words
    /// (`linear_words64.wgsl`, `attention_kv64.wgsl`): on CPU adapters with
    /// `SHADER_INT64` only. Measured on lavapipe only (Mesa 25.0, where a load costs by
    /// its components whatever their width, so a `vec2<u64>` brings 16 bytes in half the
    /// instructions of a `vec4<u32>`); a GPU's loads do not work that way.
    pub fn wide_words(&self) -> bool {
        self.is_cpu() && self.int64
    }

    /// The linear kernels' shape: on CPU adapters one invocation per up to 24 rows
    /// ([`Shape::ROW_PER_INVOCATION`], measured fastest on lavapipe); on GPUs the subgroup
    /// shape where there are subgroups, else workgroup reduction.
    pub fn linear_shape(&self) -> Shape {
        if self.is_cpu() {
            Shape::ROW_PER_INVOCATION
        } else {
            self.linear_subgroup_shape()
                .unwrap_or(Shape::WORKGROUP_REDUCE)
        }
    }

    /// The linear kernels' subgroup shape, where there are subgroups: on GPUs workgroups
    /// of 256 (or one subgroup where subgroups are larger) with a slot per subgroup of
    /// the smallest size; on a CPU adapter one subgroup per workgroup and 16 slots.
    pub fn linear_subgroup_shape(&self) -> Option<Shape> {
        let (min, max) = self.subgroups?;
        Some(if self.is_cpu() {
            Shape::Subgroup {
                workgroup: max,
                rows_per_workgroup: 16,
            }
        } else {
            let workgroup = max.max(256);
            Shape::Subgroup {
                workgroup,
                rows_per_workgroup: workgroup / min.max(1),
            }
        })
    }

    /// Whether a linear kernel of `shape` loads its inputs once per subgroup and shares
    /// them with `subgroupBroadcast` (`linear_x_shared.wgsl`): on CPU adapters, for one
    /// invocation per row slots in a workgroup that is one subgroup of 8 or more lanes
    /// (lavapipe's). Measured on lavapipe only, where a load costs per lane.
    pub fn linear_shares_inputs(&self, shape: &Shape) -> bool {
        match *shape {
            Shape::Threads {
                threads_per_row: 1,
                workgroup,
                ..
            } => self.is_cpu() && workgroup >= 8 && self.subgroups == Some((workgroup, workgroup)),
            _ => false,
        }
    }

    /// The attention layout for heads of `head_dim`: heads wider than
    /// [`attention::MAX_HEAD_DIM_WIDE`](crate::ops::attention) take the grouped layout,
    /// the only one whose private arrays hold them; else on CPU adapters with subgroups
    /// of exactly 8 (lavapipe) the lanes over the head dimension, on other CPU adapters a
    /// KV head's query heads per workgroup (each K/V load serving all of them), on GPUs
    /// one query head per workgroup.
    pub fn attention_layout(&self, head_dim: usize) -> Layout {
        if head_dim > crate::ops::attention::MAX_HEAD_DIM_WIDE {
            Layout::GroupPerWorkgroup
        } else if self.is_cpu() && self.has_lanes_of_8() {
            Layout::LanesOverDims
        } else if self.is_cpu() {
            Layout::GroupPerWorkgroup
        } else {
            Layout::HeadPerWorkgroup
        }
    }

    /// Whether the attention's lanes layout ([`Layout::LanesOverDims`]) can run: its
    /// workgroup of 8 must be one subgroup.
    pub fn has_lanes_of_8(&self) -> bool {
        self.subgroups == Some((8, 8))
    }

    /// Whether attention in `layout` reads the KV caches as 64-bit words: the lanes
    /// layout where [`AdapterProfile::wide_words`].
    pub fn attention_wide_kv(&self, layout: Layout) -> bool {
        layout == Layout::LanesOverDims && self.wide_words()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::linear::Words;

    fn lavapipe() -> AdapterProfile {
        AdapterProfile {
            kind: AdapterKind::Cpu,
            subgroups: Some((8, 8)),
            int64: true,
            f16: true,
            max_storage_binding: 1 << 31,
        }
    }

    /// A GPU with every feature lavapipe has gets none of lavapipe's variants: no 64-bit
    /// words, no shared inputs, the subgroup shape, one query head per workgroup.
    #[test]
    fn a_gpu_never_takes_a_lavapipe_variant() {
        for subgroups in [Some((8, 8)), Some((32, 32)), Some((4, 64)), None] {
            let gpu = AdapterProfile {
                kind: AdapterKind::Gpu,
                subgroups,
                ..lavapipe()
            };
            assert!(!gpu.wide_words(), "{gpu:?}");
            assert!(!Words::Widest.wide_on(&gpu));
            assert!(Words::Wide.wide_on(&gpu));
            assert_ne!(gpu.linear_shape(), Shape::ROW_PER_INVOCATION);
            assert!(!gpu.linear_shares_inputs(&Shape::ROW_PER_INVOCATION));
            assert_eq!(gpu.attention_layout(64), Layout::HeadPerWorkgroup);
            assert_eq!(gpu.attention_layout(256), Layout::GroupPerWorkgroup);
            for layout in [
                Layout::HeadPerWorkgroup,
                Layout::GroupPerWorkgroup,
                Layout::LanesOverDims,
            ] {
                assert!(!gpu.attention_wide_kv(layout));
            }
        }
        let gpu = AdapterProfile {
            kind: AdapterKind::Gpu,
            subgroups: Some((32, 32)),
            ..lavapipe()
        };
        assert_eq!(
            gpu.linear_shape(),
            Shape::Subgroup {
                workgroup: 256,
                rows_per_workgroup: 8
            }
        );
        let plain = AdapterProfile {
            subgroups: None,
            ..gpu
        };
        assert_eq!(plain.linear_shape(), Shape::WORKGROUP_REDUCE);
    }

    /// lavapipe (subgroups of 8, `SHADER_INT64`) keeps the variants measured on it; a CPU
    /// adapter without those features falls back to what it can run.
    #[test]
    fn lavapipe_keeps_its_variants() {
        let cpu = lavapipe();
        assert!(cpu.wide_words());
        assert!(Words::Widest.wide_on(&cpu));
        assert!(!Words::Narrow.wide_on(&cpu));
        assert_eq!(cpu.linear_shape(), Shape::ROW_PER_INVOCATION);
        assert!(cpu.linear_shares_inputs(&Shape::ROW_PER_INVOCATION));
        assert!(!cpu.linear_shares_inputs(&Shape::WORKGROUP_REDUCE));
        assert_eq!(cpu.attention_layout(64), Layout::LanesOverDims);
        assert_eq!(cpu.attention_layout(256), Layout::GroupPerWorkgroup);
        assert!(cpu.attention_wide_kv(Layout::LanesOverDims));
        assert!(!cpu.attention_wide_kv(Layout::GroupPerWorkgroup));
        let bare = AdapterProfile {
            subgroups: None,
            int64: false,
            ..cpu
        };
        assert!(!bare.wide_words());
        assert_eq!(bare.linear_shape(), Shape::ROW_PER_INVOCATION);
        assert!(!bare.linear_shares_inputs(&Shape::ROW_PER_INVOCATION));
        assert_eq!(bare.attention_layout(64), Layout::GroupPerWorkgroup);
        assert_eq!(bare.linear_subgroup_shape(), None);
    }
}

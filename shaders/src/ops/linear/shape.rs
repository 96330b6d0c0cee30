//! How a linear kernel's invocations map onto the matrix ([`Shape`]) and which words it
//! reads ([`Words`]); which of them an adapter runs is [`crate::ops::tuning`]'s call.

use crate::gpu::GpuContext;
use crate::ops::tuning::AdapterProfile;

/// Whether a [`Shape::Threads`] kernel on `ctx` loads its inputs once per subgroup
/// ([`SHARED_X_SPEC`](super::SHARED_X_SPEC)) rather than in every invocation
/// ([`SPEC`](super::SPEC)): [`AdapterProfile::linear_shares_inputs`].
pub fn shares_inputs(ctx: &GpuContext, shape: &Shape) -> bool {
    AdapterProfile::of(ctx).linear_shares_inputs(shape)
}

/// The word size a linear kernel reads its input and quants in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Words {
    /// The adapter's choice ([`AdapterProfile::wide_words`]): 64-bit words on CPU adapters
    /// with [`wgpu::Features::SHADER_INT64`], else 32-bit.
    #[default]
    Widest,
    /// 64-bit words whatever the adapter (needs `SHADER_INT64`): for tests and benches
    /// that cover both word sizes.
    Wide,
    /// 32-bit words whatever the device has.
    Narrow,
}

impl Words {
    /// Whether a kernel on `profile`'s adapter reads 64-bit words.
    pub fn wide_on(self, profile: &AdapterProfile) -> bool {
        match self {
            Words::Widest => profile.wide_words(),
            Words::Wide => true,
            Words::Narrow => false,
        }
    }
}

/// How invocations map onto row slots (output rows, or the row pairs of SwiGLU and RoPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `threads_per_row` invocations per `rows_per_thread` consecutive slots (1 to 32:
    /// each group of inputs is loaded once for all of them), `workgroup /
    /// threads_per_row * rows_per_thread` slots per workgroup; more than one thread per
    /// slot reduce through workgroup memory.
    Threads {
        threads_per_row: u32,
        workgroup: u32,
        rows_per_thread: u32,
    },
    /// A subgroup per slot at a time, its lanes over consecutive groups of the row (lane
    /// l: groups l, l + S, ...), summed with `subgroupAdd`; a workgroup owns
    /// `rows_per_workgroup` slots, which its subgroups take in turn. Needs the
    /// `SUBGROUP` feature and a `workgroup` that is a multiple of the subgroup size.
    Subgroup {
        workgroup: u32,
        rows_per_workgroup: u32,
    },
}

impl Shape {
    /// One invocation per up to 24 rows, no barriers: the fastest shape measured on
    /// llvmpipe. The backends fit the rows per invocation to each matrix
    /// ([`Shape::fitted`]).
    pub const ROW_PER_INVOCATION: Shape = Shape::Threads {
        threads_per_row: 1,
        workgroup: 8,
        rows_per_thread: 24,
    };
    /// 32 invocations per row reducing through workgroup memory: for GPUs without
    /// subgroups.
    pub const WORKGROUP_REDUCE: Shape = Shape::Threads {
        threads_per_row: 32,
        workgroup: 256,
        rows_per_thread: 1,
    };

    /// The subgroup shape for `ctx`, when it has subgroups
    /// ([`AdapterProfile::linear_subgroup_shape`]).
    pub fn subgroup_for(ctx: &GpuContext) -> Option<Shape> {
        AdapterProfile::of(ctx).linear_subgroup_shape()
    }

    /// The shape the backends use on `ctx` ([`AdapterProfile::linear_shape`]).
    pub fn for_context(ctx: &GpuContext) -> Shape {
        AdapterProfile::of(ctx).linear_shape()
    }

    /// This shape fitted to a matrix of `slots` row slots ([`invocation_rows`](super::invocation_rows)): with one
    /// invocation per row slots, the most rows per invocation, up to `rows_per_thread`,
    /// that cut the slots into an even number of whole workgroups (no invocation
    /// recomputes a row past the end, and two CPU threads get equal shares); unchanged
    /// where none does, and for the other shapes.
    pub fn fitted(self, slots: usize) -> Shape {
        let Shape::Threads {
            threads_per_row: 1,
            workgroup,
            rows_per_thread,
        } = self
        else {
            return self;
        };
        let wg = workgroup.max(1) as usize;
        let fits = |r: usize| slots.is_multiple_of(wg * r) && (slots / (wg * r)).is_multiple_of(2);
        match (1..=rows_per_thread.clamp(1, 32) as usize)
            .rev()
            .find(|&r| fits(r))
        {
            Some(r) => Shape::Threads {
                threads_per_row: 1,
                workgroup,
                rows_per_thread: r as u32,
            },
            None => self,
        }
    }

    /// Row slots one workgroup covers.
    pub fn rows_per_workgroup(&self) -> u32 {
        match *self {
            Shape::Threads {
                threads_per_row,
                workgroup,
                rows_per_thread,
            } => (workgroup / threads_per_row.max(1)).max(1) * rows_per_thread.clamp(1, 32),
            Shape::Subgroup {
                rows_per_workgroup, ..
            } => rows_per_workgroup.max(1),
        }
    }

    /// Whether the backends fuse RMSNorm into the linear kernels of this shape: where
    /// several invocations share a row they split the norm's sum of squares; with one
    /// invocation per row a separate norm dispatch is cheaper.
    pub fn fuses_norm(&self) -> bool {
        match *self {
            Shape::Threads {
                threads_per_row, ..
            } => threads_per_row > 1,
            Shape::Subgroup { .. } => true,
        }
    }
}

//! Linear layers (matrix-vector for decode, matrix-matrix for prefill) with the weights
//! kept quantized on the GPU and dequantized inside the kernel (`wgsl/linear.wgsl` over
//! `wgsl/quant.wgsl`, then the entry point of the [`Shape`]: `wgsl/linear_threads.wgsl`
//! or `wgsl/linear_subgroup.wgsl`).
//!
//! At upload a ggml tensor is repacked ([`pack`]) into two byte arrays, quants and scales,
//! so that every group of 32 elements starts on a 4-byte boundary (Q8_0's 34-byte blocks
//! do not). Q8_0 and Q4_1 keep their exact size (scales stay f16); Q4_0, Q4_K and Q6_K are
//! expanded to f32 scales, and Q5_0, Q5_1, Q5_K, Q3_K and Q2_K to i8 quants or nibbles
//! with f32 scales (see [`gpu_format`]; correct, not tuned).
//!
//! Why these shapes (measured on llvmpipe, Mesa 25.0.7 / LLVM 15, 256-bit, 2 Zen 4
//! cores; `cargo bench --bench kernels`, GB/s of packed weights per CPU-second): a
//! workgroup runs on one thread, 8 invocations to a SIMD vector, and a load whose
//! address differs between lanes, or that sits inside a loop or a lane-dependent branch,
//! becomes a gather of 8 scalar loads. The inputs `x` are loaded that way as often as
//! the weights, so what pays is reusing each loaded group of inputs for several rows:
//! one invocation per 8 rows ran Q4_1 matvecs at ~2 and the Q8_0 LM head at ~2.2,
//! against ~0.85 and 1.2 with one row per invocation, and 16-30 rows
//! ([`Shape::ROW_PER_INVOCATION`], fitted to each matrix by [`Shape::fitted`]) ~3-3.5
//! for both (`cargo bench --bench kernels -- rows`, best of interleaved rounds). The
//! subgroup shape (lanes over consecutive groups of one row, `subgroupAdd`) reads
//! coalesced on GPUs, where it is the default, but on llvmpipe every lane gathers its
//! own inputs: 0.55-1.0. Making llvmpipe's loads lane-uniform (each lane selecting its
//! words out of whole-group loads, x cached in private arrays, loops unrolled through
//! array indexing) measured 0.15-0.5. On `subgroupAdd`: it sums the lanes active where
//! it is called, so inside a loop whose trip count differs between lanes, or under
//! `if lane == 0`, lanes get partial sums (`subgroup_add_sums_the_active_lanes`);
//! llvmpipe's subgroups are 8 consecutive invocations and correct.
//!
//! The cost model behind these shapes (`cargo bench --bench kernels -- loads`, Mesa 25.0.7):
//! every storage-buffer load instruction of a SIMD vector costs about the same, ~6-7
//! CPU-ns, whether its lanes share one address, read consecutive words or gather from
//! rows apart; a vec4 load costs ~17-18 (4.5 per word). Loads from a uniform buffer or
//! from workgroup memory cost the same, lane-uniform address or not: llvmpipe has no
//! cheaper path for inputs every lane shares. So what counts is bytes per load
//! instruction: a gather of one word per lane brings 32 bytes, a lane-uniform load 4.
//! Hence lanes over rows (gathers), quants read 16 bytes per lane at a time (the `wq`
//! binding is `array<vec4<u32>>`: ~10-20% more GB/s per CPU-second than word loads),
//! and not lanes sharing uniform weight loads: a lane shape where each lane took its own
//! nibble of a uniformly loaded word measured 0.4-0.5 GB/s per CPU-second (its inputs
//! sat in private arrays indexed by loop counters, which llvmpipe keeps in per-lane
//! scratch memory, every access a gather or scatter).
//!
//! Why 64-bit words ([`Words`]): llvmpipe (Mesa 25.0) takes its cheap scalar-load path
//! only for addresses that are compile-time constants (`nir_src_is_always_uniform`);
//! every other storage load becomes a loop over the 8 lanes and over the components,
//! one bounds-checked scalar load each, whatever the component's width. So a
//! `vec2<u64>` brings the 16 bytes of a `vec4<u32>` in half the iterations: the load
//! probe measured ~17-23 CPU-ns against ~28-33 (a `vec4<u64>` cost more than two
//! `vec2<u64>`s, ~45-70). Where the device has `SHADER_INT64` the input, the quants and
//! the scales are read as 64-bit words (`linear_words64.wgsl`) and split in registers,
//! and a row's groups are taken in pairs (`GS`) so that two groups' scales come from
//! one load. With the attention's KV caches read the same way (`ops::attention`), the
//! default model's decode went from ~9.5 to ~11.5-17.7 tok/s and its prefill from
//! ~15-22 to ~25-33 tok/s on a 2-core machine under load ~5 (`cargo bench --bench
//! decode`, old and new binaries interleaved).
//!
//! What the compiled kernels look like (`GALLIVM_DEBUG=asm` with
//! `MESA_SHADER_CACHE_DISABLE=true` prints llvmpipe's x86 code, also from Debian's
//! release build): each lane of each storage load tests its exec-mask bit (every load
//! sits in a loop, and llvmpipe 25.0 masks all loops), reloads the buffer's base and size
//! from the descriptor, then per 64-bit component compares, branches, loads and blends
//! into the vector: ~19 instructions and 3 branches a lane for a `vec2<u64>`, about three
//! quarters of a Q4_1 group's instructions. The group dot products are explicit `fma`s:
//! written as `s += a * b` they compiled to a separate `vmulps` and `vaddps` (the Q8_0 LM
//! head went from ~13-19 to ~11-12 CPU-ms a token in `kernels -- breakdown`). Since a
//! load costs per lane, the 8 lanes no longer each load the same inputs: each loads one
//! vec4 of a group and `subgroupBroadcast` shares them ([`SHARED_X_SPEC`]; gate/up ~480-540
//! to ~360-450 CPU-us). And the weights are tiled ([`PackedWeight::tiled`]) so that a
//! workgroup reads one run of memory rather than one per row (the LM head, read from
//! memory every token, ~17.5-19 to ~14.7-15.6 CPU-ms). A `vec4<u64>` load of two groups'
//! nibbles measured slower than two `vec2<u64>`, as the load probe predicts.

use std::sync::Arc;

use half::f16;

use crate::gpu::{Binding, GpuContext, GpuError, Kernel, KernelSpec};
use crate::model::quant::{
    dequantize, k_quant_2bit, q3_k_quant, q3_k_scale, q4_k_scale_min, q5_k_quant, q5_quant, u32_at,
};
use crate::model::{GgmlType, ModelError};

/// The linear kernel in its thread shapes ([`Shape::Threads`]), reading 32-bit words.
pub const SPEC: KernelSpec = KernelSpec {
    name: "linear",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/quant_words32.wgsl"),
        include_str!("../../wgsl/linear_words32.wgsl"),
        include_str!("../../wgsl/linear_x_each.wgsl"),
        include_str!("../../wgsl/linear.wgsl"),
        include_str!("../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SPEC`] reading 64-bit words ([`Words::Widest`] on a device with
/// [`wgpu::Features::SHADER_INT64`]).
pub const SPEC64: KernelSpec = KernelSpec {
    name: "linear64",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/linear_words64.wgsl"),
        include_str!("../../wgsl/linear_x_each.wgsl"),
        include_str!("../../wgsl/linear.wgsl"),
        include_str!("../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SPEC`] with the inputs loaded once per subgroup and shared by `subgroupBroadcast`
/// (`wgsl/linear_x_shared.wgsl`): for one invocation per row slots in a workgroup that is
/// one subgroup of 8 or more lanes ([`shares_inputs`]).
pub const SHARED_X_SPEC: KernelSpec = KernelSpec {
    name: "linear_shared_x",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/quant_words32.wgsl"),
        include_str!("../../wgsl/linear_words32.wgsl"),
        include_str!("../../wgsl/linear_x_shared.wgsl"),
        include_str!("../../wgsl/linear.wgsl"),
        include_str!("../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SHARED_X_SPEC`] reading 64-bit words.
pub const SHARED_X_SPEC64: KernelSpec = KernelSpec {
    name: "linear_shared_x64",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/linear_words64.wgsl"),
        include_str!("../../wgsl/linear_x_shared.wgsl"),
        include_str!("../../wgsl/linear.wgsl"),
        include_str!("../../wgsl/linear_threads.wgsl")
    ),
    bindings: BINDINGS,
};

/// Whether a [`Shape::Threads`] kernel on `ctx` loads its inputs once per subgroup
/// ([`SHARED_X_SPEC`]): one invocation per row slots, and the workgroup one subgroup of
/// 8 or more lanes (llvmpipe's). Elsewhere every invocation loads them ([`SPEC`]).
pub fn shares_inputs(ctx: &GpuContext, shape: &Shape) -> bool {
    match *shape {
        Shape::Threads {
            threads_per_row: 1,
            workgroup,
            ..
        } => workgroup >= 8 && ctx.subgroup_sizes() == Some((workgroup, workgroup)),
        _ => false,
    }
}

/// The linear kernel in its subgroup shape ([`Shape::Subgroup`]); compiles only on a
/// device with [`wgpu::Features::SUBGROUP`].
pub const SUBGROUP_SPEC: KernelSpec = KernelSpec {
    name: "linear_subgroup",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/quant_words32.wgsl"),
        include_str!("../../wgsl/linear_words32.wgsl"),
        include_str!("../../wgsl/linear_x_each.wgsl"),
        include_str!("../../wgsl/linear.wgsl"),
        include_str!("../../wgsl/linear_subgroup.wgsl")
    ),
    bindings: BINDINGS,
};

/// [`SUBGROUP_SPEC`] reading 64-bit words.
pub const SUBGROUP_SPEC64: KernelSpec = KernelSpec {
    name: "linear_subgroup64",
    source: concat!(
        include_str!("../../wgsl/quant.wgsl"),
        include_str!("../../wgsl/linear_words64.wgsl"),
        include_str!("../../wgsl/linear_x_each.wgsl"),
        include_str!("../../wgsl/linear.wgsl"),
        include_str!("../../wgsl/linear_subgroup.wgsl")
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

/// What the kernel does with `W x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `y = W x`.
    Store = 0,
    /// `y += W x` (the residual add, fused).
    Accumulate = 1,
    /// `y = silu(W[r] x) * (W[r + rows] x)` over a `[gate; up]` matrix of `2 rows` rows.
    SwiGlu = 2,
    /// Fused q/k/v over a `[q; k; v]` matrix: RoPE on q and k (see [`Rope`]), q into `y`,
    /// k and v into the KV cache at `start_pos + t`.
    QkvRope = 3,
    /// `y = gelu_tanh(W[r] x) * (W[r + rows] x)` over a `[gate; up]` matrix (GeGLU).
    GeGlu = 4,
}

impl Mode {
    /// The gated feed-forward mode of an activation.
    pub fn gated(act: crate::model::FfnActivation) -> Self {
        match act {
            crate::model::FfnActivation::Silu => Mode::SwiGlu,
            crate::model::FfnActivation::GeluTanh => Mode::GeGlu,
        }
    }
}

/// The attention shape a [`Mode::QkvRope`] kernel rotates and stores for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rope {
    pub head_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub style: crate::model::RopeStyle,
}

/// The word size a linear kernel reads its input and quants in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Words {
    /// 64-bit words where the device has [`wgpu::Features::SHADER_INT64`], else 32-bit:
    /// on llvmpipe a vec2<u64> load costs ~0.6 of a vec4<u32> load of the same 16 bytes.
    #[default]
    Widest,
    /// 32-bit words whatever the device has.
    Narrow,
}

/// A linear kernel's specialization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    pub mode: Mode,
    /// Token rows per invocation (1 for decode, up to 4 for prefill).
    pub tokens_per_invocation: u32,
    pub shape: Shape,
    /// Apply RMSNorm (with this epsilon, weight bound at binding 5) to the input first.
    pub norm_eps: Option<f32>,
    /// With `norm_eps`: the input is already `x ⊙ weight` and its sums of squares come
    /// as this many partials per token ([`Extras::partials`]), so the kernel only
    /// applies `1 / rms` (0: the kernel computes the norm itself).
    pub norm_partials: u32,
    /// [`Mode::Accumulate`] in a [`Shape::Threads`] shape: also writes the new residual
    /// `⊙` the next norm's weight and [`norm_out_partials`] sums of squares per token
    /// ([`Extras::norm_out`]), the input of a kernel with `norm_partials`.
    pub norm_out: bool,
    /// Required for [`Mode::QkvRope`].
    pub rope: Option<Rope>,
    /// [`Mode::Store`] into a wider output: `(row stride, offset)` in floats, so token
    /// `t`'s rows land at `t * stride + offset` (q, k and v of different formats written
    /// into one q/k/v row).
    pub output: Option<(u32, u32)>,
    pub words: Words,
}

impl Variant {
    pub fn new(mode: Mode, shape: Shape) -> Self {
        Self {
            mode,
            tokens_per_invocation: 1,
            shape,
            norm_eps: None,
            norm_partials: 0,
            norm_out: false,
            rope: None,
            output: None,
            words: Words::Widest,
        }
    }
}

/// Partials per token a [`Variant::norm_out`] kernel over `w_rows` rows writes: one per
/// invocation's run of rows.
pub fn norm_out_partials(w_rows: usize, v: &Variant) -> u32 {
    let rpi = match v.shape {
        Shape::Threads {
            rows_per_thread, ..
        } => rows_per_thread.clamp(1, 32) as usize,
        Shape::Subgroup { .. } => 1,
    };
    invocation_rows(w_rows, v.mode).div_ceil(rpi) as u32
}

/// Rows the invocations of `mode` cover over a matrix of `w_rows` rows: output rows, or
/// row pairs (SwiGLU's gate/up pairs, RoPE pairs).
pub fn invocation_rows(w_rows: usize, mode: Mode) -> usize {
    match mode {
        Mode::Store | Mode::Accumulate => w_rows,
        Mode::SwiGlu | Mode::GeGlu | Mode::QkvRope => w_rows / 2,
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

    /// The subgroup shape for `ctx`, when it has subgroups: workgroups of 256 (or one
    /// subgroup where subgroups are larger) with a slot per subgroup of the smallest
    /// size; on a CPU adapter one subgroup per workgroup and 16 slots.
    pub fn subgroup_for(ctx: &GpuContext) -> Option<Shape> {
        let (min, max) = ctx.subgroup_sizes()?;
        Some(if ctx.is_cpu() {
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

    /// The shape the backends use on `ctx`: on CPU adapters one row per invocation
    /// (measured fastest there, see the module doc); on GPUs the subgroup shape where
    /// there are subgroups, else workgroup reduction.
    pub fn for_context(ctx: &GpuContext) -> Shape {
        if ctx.is_cpu() {
            Self::ROW_PER_INVOCATION
        } else {
            Self::subgroup_for(ctx).unwrap_or(Self::WORKGROUP_REDUCE)
        }
    }

    /// This shape fitted to a matrix of `slots` row slots ([`invocation_rows`]): with one
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

/// The GPU format id (`FMT` in quant.wgsl) a ggml type is packed into. Every packed
/// element is `d * q + m` with `d`, `m` its group's (or half-group's) scales, which hold
/// exactly the f32 products the CPU reference forms (`d * sc`, `dmin * m`), so the GPU
/// dequantizes to the reference's values; only the dot products' order differs.
pub fn gpu_format(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 | GgmlType::BF16 => 0,
        GgmlType::F16 => 1,
        // d * (q - 16) with d an f16: i8 quants q - 16 under Q8_0's f16 scale.
        GgmlType::Q8_0 | GgmlType::Q5_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q4_0 | GgmlType::Q4_K => 4,
        // Q3_K: a scale per 16 elements and signed quants, as Q6_K.
        GgmlType::Q6_K | GgmlType::Q3_K => 5,
        // 5-bit quants (0..32) as i8, a scale and a min per 32 elements.
        GgmlType::Q5_1 | GgmlType::Q5_K => 6,
        // 2-bit quants as nibbles, a scale and a min per 16 elements.
        GgmlType::Q2_K => 7,
    }
}

/// A weight matrix repacked for the GPU: `rows` rows of `cols` elements.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    pub fmt: u32,
    pub rows: usize,
    pub cols: usize,
    pub quants: Vec<u8>,
    pub scales: Vec<u8>,
    /// Rows per tile of the group order ([`PackedWeight::tiled`]); 0: row-major.
    pub tile: usize,
}

/// Repacks a ggml tensor of `rows × cols` (`cols` a multiple of 32) for the GPU.
pub fn pack(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<PackedWeight, ModelError> {
    if !cols.is_multiple_of(32) || !cols.is_multiple_of(ty.block_elems()) {
        return Err(ModelError::Malformed(format!(
            "{} rows of {cols} elements are not whole groups of 32",
            ty.name()
        )));
    }
    let n = rows * cols;
    if ty.bytes_for(n) != Some(data.len()) {
        return Err(ModelError::Malformed(format!(
            "{} data of {} bytes is not {rows}x{cols}",
            ty.name(),
            data.len()
        )));
    }
    let fmt = gpu_format(ty);
    let mut quants = Vec::new();
    let mut scales = Vec::new();
    match ty {
        GgmlType::F32 | GgmlType::F16 => quants.extend_from_slice(data),
        GgmlType::BF16 => {
            let mut f = vec![0f32; n];
            dequantize(ty, data, &mut f)?;
            quants = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        GgmlType::Q8_0 => {
            for b in data.chunks_exact(34) {
                scales.extend_from_slice(&b[0..2]);
                quants.extend_from_slice(&b[2..34]);
            }
        }
        GgmlType::Q4_1 => {
            for b in data.chunks_exact(20) {
                scales.extend_from_slice(&b[0..4]);
                quants.extend_from_slice(&b[4..20]);
            }
        }
        GgmlType::Q4_0 => {
            for b in data.chunks_exact(18) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                scales.extend_from_slice(&d.to_le_bytes());
                scales.extend_from_slice(&(-8.0 * d).to_le_bytes());
                quants.extend_from_slice(&b[2..18]);
            }
        }
        GgmlType::Q4_K => {
            for b in data.chunks_exact(144) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let qs = &b[16..144];
                for j in 0..8 {
                    let (sc, m) = q4_k_scale_min(j, &b[4..16]);
                    scales.extend_from_slice(&(d * sc as f32).to_le_bytes());
                    scales.extend_from_slice(&(-(dmin * m as f32)).to_le_bytes());
                    let pair = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                    let q = |l: usize| {
                        if j.is_multiple_of(2) {
                            pair[l] & 0x0f
                        } else {
                            pair[l] >> 4
                        }
                    };
                    for i in 0..16 {
                        quants.push(q(i) | (q(i + 16) << 4));
                    }
                }
            }
        }
        GgmlType::Q5_0 => {
            for b in data.chunks_exact(22) {
                scales.extend_from_slice(&b[0..2]);
                let qh = u32_at(b, 2);
                quants.extend((0..32).map(|e| (q5_quant(&b[6..22], qh, e) as i8 - 16) as u8));
            }
        }
        GgmlType::Q5_1 => {
            for b in data.chunks_exact(24) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                scales.extend_from_slice(&d.to_le_bytes());
                scales.extend_from_slice(&m.to_le_bytes());
                let qh = u32_at(b, 4);
                quants.extend((0..32).map(|e| q5_quant(&b[8..24], qh, e)));
            }
        }
        GgmlType::Q5_K => {
            for b in data.chunks_exact(176) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let (qh, qs) = (&b[16..48], &b[48..176]);
                for j in 0..8 {
                    let (sc, m) = q4_k_scale_min(j, &b[4..16]);
                    scales.extend_from_slice(&(d * sc as f32).to_le_bytes());
                    scales.extend_from_slice(&(-(dmin * m as f32)).to_le_bytes());
                    quants.extend((0..32).map(|l| q5_k_quant(qs, qh, j, l)));
                }
            }
        }
        GgmlType::Q3_K => {
            for b in data.chunks_exact(110) {
                let (hmask, qs) = (&b[0..32], &b[32..96]);
                let d = f16::from_le_bytes([b[108], b[109]]).to_f32();
                for g in 0..16 {
                    let s = d * q3_k_scale(g, &b[96..108]) as f32;
                    scales.extend_from_slice(&s.to_le_bytes());
                }
                quants.extend((0..256).map(|e| q3_k_quant(hmask, qs, e) as i8 as u8));
            }
        }
        GgmlType::Q2_K => {
            for b in data.chunks_exact(84) {
                let (sc, qs) = (&b[0..16], &b[16..80]);
                let d = f16::from_le_bytes([b[80], b[81]]).to_f32();
                let dmin = f16::from_le_bytes([b[82], b[83]]).to_f32();
                for &s in sc {
                    scales.extend_from_slice(&(d * (s & 0x0f) as f32).to_le_bytes());
                    scales.extend_from_slice(&(-(dmin * (s >> 4) as f32)).to_le_bytes());
                }
                // Each 32-element group as 16 bytes of nibbles, byte i holding element
                // i (low) and i + 16 (high): quant.wgsl's nibble order.
                for j in 0..8 {
                    let q = |l: usize| k_quant_2bit(qs, 32 * j + l);
                    quants.extend((0..16).map(|i| q(i) | (q(i + 16) << 4)));
                }
            }
        }
        GgmlType::Q6_K => {
            for b in data.chunks_exact(210) {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
                let mut q = [0i8; 256];
                for half in 0..2 {
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    for l in 0..32 {
                        let e = 128 * half + l;
                        q[e] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
                        q[e + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                        q[e + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                        q[e + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
                for &s in sc {
                    scales.extend_from_slice(&(d * (s as i8) as f32).to_le_bytes());
                }
                quants.extend(q.iter().map(|&v| v as u8));
            }
        }
    }
    Ok(PackedWeight {
        fmt,
        rows,
        cols,
        quants,
        scales,
        tile: 0,
    })
}

/// Rows per tile ([`PackedWeight::tiled`]) for `v` over a matrix of `w_rows` rows: the
/// rows one workgroup reads (its row slots, twice as many rows for q/k/v's RoPE pairs)
/// where invocations own whole row slots ([`Shape::Threads`] with one thread per row) and
/// the matrix is whole tiles; else 0 (row-major).
pub fn tile_rows(w_rows: usize, v: &Variant) -> usize {
    let Shape::Threads {
        threads_per_row: 1, ..
    } = v.shape
    else {
        return 0;
    };
    let per_wg =
        v.shape.rows_per_workgroup() as usize * if v.mode == Mode::QkvRope { 2 } else { 1 };
    if per_wg == 0 || !w_rows.is_multiple_of(per_wg) {
        return 0;
    }
    per_wg
}

impl PackedWeight {
    /// Stacks matrices of the same format and row length (q, k, v into one qkv matrix).
    pub fn concat(parts: &[PackedWeight]) -> Result<PackedWeight, ModelError> {
        let first = parts
            .first()
            .ok_or_else(|| ModelError::Malformed("concatenating no matrices".into()))?;
        let mut out = PackedWeight {
            fmt: first.fmt,
            rows: 0,
            cols: first.cols,
            quants: Vec::new(),
            scales: Vec::new(),
            tile: 0,
        };
        for p in parts {
            if p.tile != 0 {
                return Err(ModelError::Malformed(
                    "stacking a tiled matrix (tile after stacking)".into(),
                ));
            }
            if p.fmt != first.fmt || p.cols != first.cols {
                return Err(ModelError::Malformed(format!(
                    "cannot stack a {}-column format-{} matrix onto {}-column format-{}",
                    p.cols, p.fmt, first.cols, first.fmt
                )));
            }
            out.rows += p.rows;
            out.quants.extend_from_slice(&p.quants);
            out.scales.extend_from_slice(&p.scales);
        }
        Ok(out)
    }

    /// This matrix with its groups reordered into tiles of `tile` rows (0: unchanged):
    /// tile by tile, span by span (a span is the kernels' `GS` groups, 2 where a row has
    /// an even number of groups), the tile's rows in order, each row's span of groups
    /// together; `gidx` in quant.wgsl is the same map. A linear kernel whose workgroup
    /// owns a tile then reads one contiguous run of memory, span after span, where the
    /// row-major order had it read `tile` runs at once, one per row, which the CPU's
    /// prefetchers do not follow.
    pub fn tiled(self, tile: usize) -> Result<PackedWeight, ModelError> {
        if tile == 0 {
            return Ok(self);
        }
        let ng = self.cols / 32;
        let groups = self.rows * ng;
        if self.tile != 0 || !self.rows.is_multiple_of(tile) || groups == 0 {
            return Err(ModelError::Malformed(format!(
                "cannot tile {} rows (tiled: {}) by {tile}",
                self.rows, self.tile
            )));
        }
        let gs = 2 - ng % 2;
        let (qb, sb) = (self.quants.len() / groups, self.scales.len() / groups);
        let mut quants = vec![0u8; self.quants.len()];
        let mut scales = vec![0u8; self.scales.len()];
        for row in 0..self.rows {
            let r = row % tile;
            for g in 0..ng {
                let src = row * ng + g;
                let dst = (row - r) * ng + (g - g % gs) * tile + r * gs + g % gs;
                quants[dst * qb..(dst + 1) * qb]
                    .copy_from_slice(&self.quants[src * qb..(src + 1) * qb]);
                scales[dst * sb..(dst + 1) * sb]
                    .copy_from_slice(&self.scales[src * sb..(src + 1) * sb]);
            }
        }
        Ok(PackedWeight {
            quants,
            scales,
            tile,
            ..self
        })
    }

    /// Bytes the GPU will read per full pass over the matrix.
    pub fn gpu_bytes(&self) -> usize {
        self.quants.len() + self.scales.len()
    }

    pub fn upload(&self, ctx: &GpuContext, label: &str) -> Result<GpuWeight, GpuError> {
        Ok(GpuWeight {
            fmt: self.fmt,
            rows: self.rows,
            cols: self.cols,
            tile: self.tile,
            bytes: self.gpu_bytes(),
            quants: ctx.storage_init(&format!("{label} quants"), &self.quants)?,
            scales: ctx.storage_init(&format!("{label} scales"), &pad8(&self.scales))?,
        })
    }
}

/// `b` padded with zeros to whole 64-bit words (at least one): the 64-bit kernels bind
/// the scales as `array<u64>`.
fn pad8(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let len = b.len().max(8).next_multiple_of(8);
    if len == b.len() {
        return b.into();
    }
    let mut v = b.to_vec();
    v.resize(len, 0);
    v.into()
}

/// A packed matrix resident on the GPU (cloning shares the buffers).
#[derive(Debug, Clone)]
pub struct GpuWeight {
    pub fmt: u32,
    pub rows: usize,
    pub cols: usize,
    /// [`PackedWeight::tile`]: the kernels reading it are specialised to the layout.
    pub tile: usize,
    pub bytes: usize,
    pub quants: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

/// The pipeline for `w` specialised as `v`.
pub fn kernel(ctx: &GpuContext, w: &GpuWeight, v: &Variant) -> Result<Arc<Kernel>, GpuError> {
    let (spec, c) = specialization(ctx, w, v)?;
    ctx.kernel(spec, &c)
}

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
    let wide = v.words == Words::Widest && ctx.has_int64();
    let spec = match v.shape {
        Shape::Threads {
            threads_per_row,
            workgroup,
            rows_per_thread,
        } => {
            c.push(("TPR", threads_per_row.max(1) as f64));
            c.push(("RPI", rows_per_thread.clamp(1, 32) as f64));
            c.push(("WG", workgroup as f64));
            match (shares_inputs(ctx, &v.shape), wide) {
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
            let (_, max) = ctx
                .subgroup_sizes()
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

/// The optional inputs of a linear kernel's bind group.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// RMSNorm weight (with [`Variant::norm_eps`]); with [`Variant::norm_out`], the next
    /// norm's weight.
    pub norm: Option<&'a wgpu::Buffer>,
    /// The sums of squares: read with [`Variant::norm_partials`], written with
    /// [`Variant::norm_out`].
    pub partials: Option<&'a wgpu::Buffer>,
    /// Where a [`Variant::norm_out`] kernel writes the residual `⊙` the next norm's weight.
    pub norm_out: Option<&'a wgpu::Buffer>,
    /// RoPE (cos, sin) table, K cache, V cache (with [`Mode::QkvRope`]).
    pub rope_kv: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

/// The bind group of a linear kernel: `step` uniform, input `x`, weights `w`, output `y`.
pub fn bind(
    ctx: &GpuContext,
    kernel: &Kernel,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    w: &GpuWeight,
    y: &wgpu::Buffer,
    extras: Extras<'_>,
) -> wgpu::BindGroup {
    let [ur, uw0, uw1, uw2, uw3] = ctx.unused_buffers();
    let norm = extras.norm.unwrap_or(ur);
    let (cs, kc, vc) = extras.rope_kv.unwrap_or((ur, uw0, uw1));
    let ssq = extras.partials.unwrap_or(uw2);
    let xn = extras.norm_out.unwrap_or(uw3);
    ctx.bind_group(
        kernel,
        &[step, x, &w.quants, &w.scales, y, norm, cs, kc, vc, ssq, xn],
    )
}

/// Workgroups for `v` over a matrix of `w_rows` rows and `n_tokens` tokens.
pub fn groups(w_rows: usize, n_tokens: usize, v: &Variant) -> (u32, u32, u32) {
    let rows_per_wg = v.shape.rows_per_workgroup() as usize;
    (
        invocation_rows(w_rows, v.mode).div_ceil(rows_per_wg) as u32,
        n_tokens.div_ceil(v.tokens_per_invocation.clamp(1, 4) as usize) as u32,
        1,
    )
}

/// CPU reference: `x` is `n × cols`, `y` is `n × out_rows`; `w` is `rows × cols` of `ty`
/// (`rows = 2 out_rows` for SwiGLU). Rows are dequantized exactly and dotted in f32.
pub fn reference(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    mode: Mode,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), ModelError> {
    let row_bytes = ty
        .bytes_for(cols)
        .ok_or_else(|| ModelError::Malformed(format!("{} row of {cols}", ty.name())))?;
    if w.len() != row_bytes * rows || !x.len().is_multiple_of(cols) {
        return Err(ModelError::Malformed(format!(
            "linear reference: {} bytes of weights for {rows}x{cols}, {} inputs",
            w.len(),
            x.len()
        )));
    }
    let n = x.len() / cols;
    if mode == Mode::QkvRope {
        return Err(ModelError::Malformed(
            "the q/k/v mode's reference is the composition in engine::cpu".into(),
        ));
    }
    let out_rows = invocation_rows(rows, mode);
    let mut row = vec![0f32; cols];
    let mut wx = vec![0f32; n * rows];
    for r in 0..rows {
        dequantize(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut row)?;
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            wx[t * rows + r] = row.iter().zip(xt).map(|(a, b)| a * b).sum();
        }
    }
    for t in 0..n {
        for r in 0..out_rows {
            let o = &mut y[t * out_rows + r];
            let v = wx[t * rows + r];
            match mode {
                Mode::Store => *o = v,
                Mode::Accumulate => *o += v,
                Mode::SwiGlu => *o = super::elementwise::silu(v) * wx[t * rows + r + out_rows],
                Mode::GeGlu => *o = super::elementwise::gelu_tanh(v) * wx[t * rows + r + out_rows],
                Mode::QkvRope => unreachable!("rejected above"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::quant::quantize;
    use crate::ops::pseudo_random;
    use crate::ops::testing::{assert_close, ctx, step, upload_f32};

    fn run(ty: GgmlType, rows: usize, cols: usize, n: usize, mode: Mode, tt: u32, shape: Shape) {
        run_norm(ty, rows, cols, n, mode, tt, shape, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_norm(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        n: usize,
        mode: Mode,
        tt: u32,
        shape: Shape,
        norm: bool,
    ) {
        let ctx = ctx();
        let wf = pseudo_random(rows * cols, 7 + rows as u64, 1.0);
        let w = quantize(ty, &wf).expect("whole blocks");
        let x = pseudo_random(n * cols, 11, 1.0);
        let g = pseudo_random(cols, 12, 2.0);
        let out_rows = invocation_rows(rows, mode);
        let y0 = pseudo_random(n * out_rows, 13, 1.0);
        let mut want = y0.clone();
        let mut xin = x.clone();
        if norm {
            crate::ops::rmsnorm::reference(&x, &g, 1e-5, &mut xin);
        }
        reference(ty, &w, rows, cols, mode, &xin, &mut want).expect("reference");
        let gw = pack(ty, &w, rows, cols)
            .expect("pack")
            .upload(&ctx, "w")
            .expect("upload");
        // Both word sizes where the device reads 64-bit words (the default there), for
        // the shapes the backends use (the other shapes once: each variant is a pipeline
        // that lavapipe compiles, and compiling dominates these tests' time).
        let primary =
            shape == Shape::ROW_PER_INVOCATION || Shape::subgroup_for(&ctx) == Some(shape);
        let words: &[Words] = if ctx.has_int64() && primary {
            &[Words::Widest, Words::Narrow]
        } else {
            &[Words::Widest]
        };
        for &words in words {
            let v = Variant {
                tokens_per_invocation: tt,
                norm_eps: norm.then_some(1e-5),
                words,
                ..Variant::new(mode, shape)
            };
            let k = kernel(&ctx, &gw, &v).expect("kernel");
            let xb = upload_f32(&ctx, &x);
            let gb = upload_f32(&ctx, &g);
            let yb = upload_f32(&ctx, &y0);
            let st = step(&ctx, n as u32, 0);
            let extras = Extras {
                norm: norm.then_some(&gb),
                ..Default::default()
            };
            let bg = bind(&ctx, &k, &st, &xb, &gw, &yb, extras);
            crate::ops::run_bound(&ctx, &[(&k, &bg, groups(rows, n, &v))]);
            let got = ctx.read_f32(&yb, n * out_rows).expect("readback");
            let what = format!(
                "{} {mode:?} n={n} tt={tt} norm={norm} {shape:?} {words:?}",
                ty.name()
            );
            assert_close(&what, &got, &want, 2e-4);
        }
    }

    /// Every shape the tests cover: the two thread shapes, a thread shape with 4
    /// threads per row, and where the adapter has subgroups the adapter's subgroup shape
    /// plus subgroup shapes with several subgroups per workgroup taking slots in turn
    /// (slot counts that do not divide the rows, and more slots than rows).
    fn all_shapes() -> Vec<Shape> {
        let ctx = ctx();
        let mut v = vec![
            Shape::ROW_PER_INVOCATION,
            Shape::WORKGROUP_REDUCE,
            Shape::Threads {
                threads_per_row: 4,
                workgroup: 64,
                rows_per_thread: 3,
            },
            Shape::Threads {
                threads_per_row: 1,
                workgroup: 8,
                rows_per_thread: 1,
            },
            Shape::ROW_PER_INVOCATION.fitted(48),
        ];
        if let Some((_, max)) = ctx.subgroup_sizes() {
            v.extend(Shape::subgroup_for(&ctx));
            for (subgroups, rows) in [(1, 3), (4, 7), (2, 64)] {
                v.push(Shape::Subgroup {
                    workgroup: max * subgroups,
                    rows_per_workgroup: rows,
                });
            }
        }
        v
    }

    /// The fused RMSNorm input (norm weight at binding 5) matches norm-then-linear.
    #[test]
    fn fused_norm_matches() {
        for shape in all_shapes() {
            for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
                run_norm(ty, 64, 576, 1, Mode::Store, 1, shape, true);
                run_norm(ty, 64, 128, 3, Mode::SwiGlu, 4, shape, true);
            }
        }
    }

    /// The norm chain: a residual kernel with `norm_out` (576 rows over inputs of 1536,
    /// as the down projection) leaves the new residual, its product with the next norm's
    /// weight and partial sums of squares; a SwiGLU kernel with `norm_partials` reads
    /// them. Against the CPU composition (residual add, RMSNorm, SwiGLU), for decode and
    /// a prefill of 5 tokens (4 a thread, a partial run), both word sizes.
    #[test]
    fn norm_chain_matches_residual_then_rmsnorm_then_linear() {
        let ctx = ctx();
        let (d, f, ty) = (576, 1536, GgmlType::Q4_1);
        let down = quantize(ty, &pseudo_random(d * f, 21, 1.0)).expect("blocks");
        let gate_up = quantize(ty, &pseudo_random(2 * f * d, 22, 0.25)).expect("blocks");
        let g = pseudo_random(d, 23, 2.0);
        let down_w = pack(ty, &down, d, f)
            .expect("pack")
            .upload(&ctx, "down")
            .expect("up");
        let gu_w = pack(ty, &gate_up, 2 * f, d)
            .expect("pack")
            .upload(&ctx, "gu")
            .expect("up");
        let words: &[Words] = if ctx.has_int64() {
            &[Words::Widest, Words::Narrow]
        } else {
            &[Words::Widest]
        };
        for (n, tt) in [(1, 1), (5, 4)] {
            let h = pseudo_random(n * f, 24, 1.0);
            let x0 = pseudo_random(n * d, 25, 3.0);
            let mut x1 = x0.clone();
            reference(ty, &down, d, f, Mode::Accumulate, &h, &mut x1).expect("reference");
            let mut normed = vec![0f32; n * d];
            crate::ops::rmsnorm::reference(&x1, &g, 1e-5, &mut normed);
            let mut want = vec![0f32; n * f];
            reference(ty, &gate_up, 2 * f, d, Mode::SwiGlu, &normed, &mut want).expect("ref");
            for &words in words {
                let residual = Variant {
                    tokens_per_invocation: tt,
                    norm_out: true,
                    words,
                    ..Variant::new(Mode::Accumulate, Shape::ROW_PER_INVOCATION.fitted(d))
                };
                let partials = norm_out_partials(d, &residual);
                let normed_v = Variant {
                    tokens_per_invocation: tt,
                    norm_eps: Some(1e-5),
                    norm_partials: partials,
                    words,
                    ..Variant::new(Mode::SwiGlu, Shape::ROW_PER_INVOCATION.fitted(f))
                };
                let (hb, xb, gb) = (
                    upload_f32(&ctx, &h),
                    upload_f32(&ctx, &x0),
                    upload_f32(&ctx, &g),
                );
                let xn = upload_f32(&ctx, &vec![0.0; n * d]);
                let ssq = upload_f32(&ctx, &vec![0.0; n * partials as usize]);
                let yb = upload_f32(&ctx, &vec![0.0; n * f]);
                let st = step(&ctx, n as u32, 0);
                let k1 = kernel(&ctx, &down_w, &residual).expect("kernel");
                let k2 = kernel(&ctx, &gu_w, &normed_v).expect("kernel");
                let chain = Extras {
                    norm: Some(&gb),
                    partials: Some(&ssq),
                    norm_out: Some(&xn),
                    ..Default::default()
                };
                let reads = Extras {
                    partials: Some(&ssq),
                    ..Default::default()
                };
                let bg1 = bind(&ctx, &k1, &st, &hb, &down_w, &xb, chain);
                let bg2 = bind(&ctx, &k2, &st, &xn, &gu_w, &yb, reads);
                crate::ops::run_bound(
                    &ctx,
                    &[
                        (&k1, &bg1, groups(d, n, &residual)),
                        (&k2, &bg2, groups(2 * f, n, &normed_v)),
                    ],
                );
                let what = format!("norm chain n={n} {words:?}");
                let got_x = ctx.read_f32(&xb, n * d).expect("readback");
                assert_close(&format!("{what} residual"), &got_x, &x1, 2e-4);
                let want_xn: Vec<f32> = x1
                    .chunks(d)
                    .flat_map(|r| r.iter().zip(&g).map(|(a, b)| a * b))
                    .collect();
                let got_xn = ctx.read_f32(&xn, n * d).expect("readback");
                assert_close(&format!("{what} x * weight"), &got_xn, &want_xn, 2e-4);
                let got_ss = ctx.read_f32(&ssq, n * partials as usize).expect("readback");
                for (t, row) in x1.chunks(d).enumerate() {
                    let ss: f32 = row.iter().map(|v| v * v).sum();
                    let p: f32 = got_ss[t * partials as usize..][..partials as usize]
                        .iter()
                        .sum();
                    assert!((p - ss).abs() <= 1e-4 * ss, "{what} token {t}: {p} vs {ss}");
                }
                let got = ctx.read_f32(&yb, n * f).expect("readback");
                assert_close(&format!("{what} swiglu"), &got, &want, 2e-4);
            }
        }
    }

    /// Every weight format in every shape, decode (n=1) and prefill (n=5, 4 tokens per
    /// invocation), GPU within 2e-4·(1+|y|) of the CPU reference. 40 rows of 288: 9
    /// groups, so a subgroup's lanes get unequal numbers of groups.
    #[test]
    fn gpu_matches_cpu_for_every_format() {
        for shape in all_shapes() {
            for ty in [
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
                GgmlType::Q5_0,
                GgmlType::Q5_1,
                GgmlType::Q2_K,
                GgmlType::Q3_K,
                GgmlType::Q5_K,
            ] {
                let cols = if ty.block_elems() == 256 { 512 } else { 288 };
                run(ty, 40, cols, 1, Mode::Store, 1, shape);
                run(ty, 40, cols, 5, Mode::Store, 4, shape);
            }
        }
    }

    /// The fused residual add, SwiGLU and GeGLU modes, in every shape.
    #[test]
    fn fused_modes_and_shapes() {
        for shape in all_shapes() {
            for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
                run(ty, 48, 96, 1, Mode::Accumulate, 1, shape);
                run(ty, 48, 96, 3, Mode::SwiGlu, 2, shape);
                run(ty, 48, 96, 3, Mode::GeGlu, 2, shape);
                run(ty, 200, 576, 6, Mode::Store, 4, shape);
                run(ty, 1536, 576, 1, Mode::Store, 1, shape);
            }
        }
    }

    /// The subgroup facts [`Shape::Subgroup`] relies on, checked on the adapter itself
    /// (a probe kernel, 18 values over subgroups of S lanes, as a 576-wide row's 18
    /// groups): `subgroup_size` lies in the adapter's range and subgroups are runs of S
    /// consecutive invocations; `subgroupAdd` after a loop whose trip count differs
    /// between lanes sums every lane (what the kernel does); inside such a loop, or
    /// under `if lane == 0`, it sums only the lanes still active there, so lanes that
    /// left the loop early get partial sums. That last form is how a probe of this
    /// shape read wrong sums for some rows: llvmpipe is right, the probe was not.
    #[test]
    fn subgroup_add_sums_the_active_lanes() {
        const PROBE: KernelSpec = KernelSpec {
            name: "subgroup probe",
            source: r#"
override WG: u32 = 8u;
override N: u32 = 18u;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) li: u32, @builtin(subgroup_size) sgs: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let o = li * 5u;
    out[o] = sgs;
    out[o + 1u] = subgroupBroadcastFirst(li);
    var after = 0u;
    for (var g = lane; g < N; g += sgs) {
        after += g + 1u;
    }
    out[o + 2u] = subgroupAdd(after);
    var inside = 0u;
    for (var g = lane; g < N; g += sgs) {
        inside += subgroupAdd(g + 1u);
    }
    out[o + 3u] = inside;
    var branch = 0u;
    if lane == 0u {
        branch = subgroupAdd(1u);
    }
    out[o + 4u] = branch;
}
"#,
            bindings: &[Binding::ReadWrite],
        };
        let ctx = ctx();
        let Some((min, max)) = ctx.subgroup_sizes() else {
            assert!(Shape::subgroup_for(&ctx).is_none());
            return;
        };
        let n = 18u32;
        for wg in [max, 4 * max] {
            let k = ctx
                .kernel(&PROBE, &[("WG", wg as f64), ("N", n as f64)])
                .expect("probe kernel");
            let out = ctx
                .storage("probe", (wg * 5 * 4) as u64)
                .expect("probe buffer");
            crate::ops::run_once(&ctx, &k, &[&out], (1, 1, 1));
            let bytes = ctx.read_back(&out, (wg * 5 * 4) as u64).expect("readback");
            let v: Vec<u32> = bytemuck::cast_slice(&bytes).to_vec();
            let full = n * (n + 1) / 2;
            for li in 0..wg {
                let r = &v[(li * 5) as usize..(li * 5 + 5) as usize];
                let (s, lane) = (r[0], li % r[0].max(1));
                assert!(
                    (min..=max).contains(&s),
                    "subgroup size {s} not in {min}..={max}"
                );
                assert_eq!(
                    r[1],
                    li - lane,
                    "invocation {li}: subgroups are consecutive runs"
                );
                assert_eq!(r[2], full, "invocation {li}: add after the loop");
                // Inside the loop: iteration k adds the lanes m with m + kS < N.
                let inside: u32 = (0..)
                    .map(|k| k * s)
                    .take_while(|&base| lane + base < n)
                    .map(|base| {
                        (0..s)
                            .filter(|m| m + base < n)
                            .map(|m| m + base + 1)
                            .sum::<u32>()
                    })
                    .sum();
                assert_eq!(r[3], inside, "invocation {li}: add inside the loop");
                assert_eq!(
                    r[4],
                    u32::from(lane == 0),
                    "invocation {li}: add under a branch"
                );
            }
            // Lanes past N mod S leave the loop one iteration early: their in-loop sums
            // are short, the after-loop ones are not.
            if !n.is_multiple_of(max) {
                assert!(v[(max - 1) as usize * 5 + 3] < full);
            }
        }
    }

    /// The rows per invocation fitted to the default model's matrices: whole workgroups
    /// in even numbers, as many rows per invocation as allowed; other shapes, and row
    /// counts with no such split, unchanged.
    #[test]
    fn fitted_shapes_split_rows_evenly() {
        let rpi = |slots| match Shape::ROW_PER_INVOCATION.fitted(slots) {
            Shape::Threads {
                rows_per_thread, ..
            } => rows_per_thread,
            s => panic!("{s:?}"),
        };
        assert_eq!(rpi(576), 18);
        assert_eq!(rpi(1536), 24);
        assert_eq!(rpi(480), 15);
        assert_eq!(rpi(49152), 24);
        assert_eq!(rpi(40), 24);
        assert_eq!(Shape::WORKGROUP_REDUCE.fitted(576), Shape::WORKGROUP_REDUCE);
        for slots in [576, 1536, 480, 49152] {
            let v = Variant::new(Mode::Store, Shape::ROW_PER_INVOCATION.fitted(slots));
            let (wgs, ..) = groups(slots, 1, &v);
            assert_eq!(wgs as usize * v.shape.rows_per_workgroup() as usize, slots);
            assert!(wgs.is_multiple_of(2));
        }
    }

    /// Tiled weights ([`PackedWeight::tiled`] by [`tile_rows`]) give the row-major
    /// results: Q4_1 rows of 576 (spans of 2 groups), Q8_0 rows of 288 (9 groups,
    /// spans of 1) and Q2_K rows of 512 (16 bytes of scales a group), storing, SwiGLU
    /// and prefill, both word sizes; tiling moves every
    /// group exactly once, and what cannot be tiled is refused.
    #[test]
    fn tiled_weights_match_row_major() {
        let ctx = ctx();
        let words: &[Words] = if ctx.has_int64() {
            &[Words::Widest, Words::Narrow]
        } else {
            &[Words::Widest]
        };
        let shape = Shape::ROW_PER_INVOCATION;
        for (ty, rows, cols, mode, n, tt) in [
            (GgmlType::Q4_1, 384, 576, Mode::Store, 1, 1),
            (GgmlType::Q8_0, 2 * 192, 288, Mode::SwiGlu, 5, 4),
            // Four f32 scales a group.
            (GgmlType::Q2_K, 384, 512, Mode::Store, 5, 4),
        ] {
            let w = quantize(ty, &pseudo_random(rows * cols, 31, 1.0)).expect("blocks");
            let x = pseudo_random(n * cols, 32, 1.0);
            let out_rows = invocation_rows(rows, mode);
            let mut want = vec![0f32; n * out_rows];
            reference(ty, &w, rows, cols, mode, &x, &mut want).expect("reference");
            for &words in words {
                let v = Variant {
                    tokens_per_invocation: tt,
                    words,
                    ..Variant::new(mode, shape.fitted(out_rows))
                };
                let tile = tile_rows(rows, &v);
                assert!(tile > 0, "{rows} rows tile for {v:?}");
                let packed = pack(ty, &w, rows, cols).expect("pack");
                let tiled = packed.clone().tiled(tile).expect("whole tiles");
                let mut q = tiled.quants.clone();
                q.sort_unstable();
                let mut q0 = packed.quants.clone();
                q0.sort_unstable();
                assert_eq!(q, q0, "a permutation of the quants");
                assert!(packed.clone().tiled(tile + 1).is_err());
                assert!(tiled.clone().tiled(tile).is_err());
                assert!(PackedWeight::concat(std::slice::from_ref(&tiled)).is_err());
                let gw = tiled.upload(&ctx, "w").expect("upload");
                let k = kernel(&ctx, &gw, &v).expect("kernel");
                let (xb, yb) = (
                    upload_f32(&ctx, &x),
                    upload_f32(&ctx, &vec![0.0; n * out_rows]),
                );
                let st = step(&ctx, n as u32, 0);
                let bg = bind(&ctx, &k, &st, &xb, &gw, &yb, Extras::default());
                crate::ops::run_bound(&ctx, &[(&k, &bg, groups(rows, n, &v))]);
                let got = ctx.read_f32(&yb, n * out_rows).expect("readback");
                assert_close(
                    &format!("tiled {} {mode:?} {words:?}", ty.name()),
                    &got,
                    &want,
                    2e-4,
                );
            }
        }
    }

    /// Q8_0 and Q4_1 keep their on-disk size on the GPU; stacking concatenates rows.
    #[test]
    fn packing_sizes_and_concat() {
        let w = quantize(GgmlType::Q8_0, &pseudo_random(64 * 3, 1, 1.0)).expect("q8");
        let p = pack(GgmlType::Q8_0, &w, 3, 64).expect("pack");
        assert_eq!(p.gpu_bytes(), w.len());
        let w1 = quantize(GgmlType::Q4_1, &pseudo_random(64 * 2, 2, 1.0)).expect("q4");
        let p1 = pack(GgmlType::Q4_1, &w1, 2, 64).expect("pack");
        assert_eq!(p1.gpu_bytes(), w1.len());
        assert!(PackedWeight::concat(&[p.clone(), p1.clone()]).is_err());
        let both = PackedWeight::concat(&[p.clone(), p]).expect("same format");
        assert_eq!(both.rows, 6);
        assert!(pack(GgmlType::Q8_0, &w[..30], 3, 64).is_err());
    }

    /// GPU bytes per 32-element group of the types whose quants are widened (file bytes
    /// per group in the comments): what a model in these types costs in GPU memory.
    #[test]
    fn widened_formats_bytes_per_group() {
        for (ty, fmt, bytes) in [
            (GgmlType::Q5_0, 2, 34), // 22
            (GgmlType::Q5_1, 6, 40), // 24
            (GgmlType::Q5_K, 6, 40), // 22
            (GgmlType::Q3_K, 5, 40), // 13.75
            (GgmlType::Q2_K, 7, 32), // 10.5
        ] {
            let (rows, cols) = (3, 512);
            let w = quantize(ty, &pseudo_random(rows * cols, 3, 1.0)).expect("blocks");
            let p = pack(ty, &w, rows, cols).expect("pack");
            assert_eq!(p.fmt, fmt, "{}", ty.name());
            assert_eq!(p.gpu_bytes(), rows * cols / 32 * bytes, "{}", ty.name());
            assert!(
                pack(ty, &w, rows, 256).is_err(),
                "{}: wrong shape",
                ty.name()
            );
        }
    }
}

//! The GPU blocks of the architectures beyond the plain Llama block (qwen2, qwen3,
//! gemma3, and llama with RoPE scaling): each step its own dispatch, so every feature of
//! [`crate::model::BlockFeatures`] has a place to go.
//!
//! It also runs plain Llama blocks whose q, k, v (or gate, up) come in different formats
//! ([`formats_differ`]), which the fused path cannot stack.
//!
//! A block: RMSNorm → q/k/v matmul → `rope` (biases, per-head QK-norm, RoPE with the
//! block's own table, KV-cache write) → attention (the block's scale and window) → o
//! (added to the residual, or normed first and added by `rmsnorm`'s add kernel where the
//! block has post-norms) → RMSNorm → gate/up with the gated activation → down (likewise).
//! 8 to 10 dispatches, against the fused Llama path's 5 ([`super::blocks`]), which the
//! plain Llama block keeps: its fusions (RoPE inside the q/k/v matmul, the norms riding
//! the residual kernels) have no room for a norm between the matmul and the rotation.

use std::ops::Range;

use super::{Linear, MAX_BATCH, f32_bytes, pack_tensor};
use crate::engine::EngineError;
use crate::engine::llama::{self, BlockExtras, RopeTables, block_tensor};
use crate::gpu::pipeline::dispatch;
use crate::gpu::{GpuContext, Kernel};
use crate::model::{FfnActivation, ModelConfig, WeightSource};
use crate::ops::linear::{Extras, Mode, PackedWeight, Shape, Variant};
use crate::ops::{attention, elementwise, rmsnorm, rope};

/// Buffers every block of a range shares (allocated for [`MAX_BATCH`] rows).
pub(super) struct Scratch<'a> {
    pub step: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub qkv: &'a wgpu::Buffer,
    pub att: &'a wgpu::Buffer,
}

/// q, k and v: one stacked matrix where their formats agree, else one matrix each,
/// writing its part of the q/k/v row (`Variant::output`).
type Parts = Vec<(Linear, wgpu::BindGroup)>;

/// The gated feed-forward's first half: `[gate; up]` stacked with the activation fused,
/// or (formats that differ) gate and up apart, then the activation as its own dispatch.
enum GateUp {
    Stacked(Box<(Linear, wgpu::BindGroup)>),
    Apart {
        gate: Box<(Linear, wgpu::BindGroup)>,
        up: Box<(Linear, wgpu::BindGroup)>,
        act: wgpu::BindGroup,
    },
}

/// Whether blocks `blocks` need this path although the architecture is plain Llama: q,
/// k and v (or gate and up) in different GPU formats cannot be stacked into the fused
/// path's matrices (a Q4_K_M file keeps some `attn_v` and `ffn_down` in Q6_K).
pub(super) fn formats_differ(
    src: &dyn WeightSource,
    blocks: Range<usize>,
) -> Result<bool, EngineError> {
    for b in blocks {
        let fmt = |w: &str| -> Result<u32, EngineError> {
            Ok(crate::ops::linear::gpu_format(
                src.tensor(&block_tensor(b, w))?.ty,
            ))
        };
        let qkv = [fmt("attn_q")?, fmt("attn_k")?, fmt("attn_v")?];
        if qkv.iter().any(|f| *f != qkv[0]) || fmt("ffn_gate")? != fmt("ffn_up")? {
            return Ok(true);
        }
    }
    Ok(false)
}

struct Block {
    qkv: Parts,
    o: Linear,
    gate_up: GateUp,
    down: Linear,
    /// `[step, x, attn_norm, xn]` and `[step, x, ffn_norm, xn]`.
    attn_norm: wgpu::BindGroup,
    ffn_norm: wgpu::BindGroup,
    o_bind: wgpu::BindGroup,
    down_bind: wgpu::BindGroup,
    /// The post-norm add kernels' bind groups (after o, after down).
    post: Option<(wgpu::BindGroup, wgpu::BindGroup)>,
    /// Biases (a qkv row) and q/k norm weights for the `rope` kernel.
    bias: Option<wgpu::Buffer>,
    qk_norm: Option<wgpu::Buffer>,
    /// Index into [`GeneralBlocks::tables`] and [`GeneralBlocks::attention`].
    table: usize,
    attention: usize,
}

/// Blocks of a general architecture on the GPU (see the module doc).
pub(super) struct GeneralBlocks {
    blocks: Vec<Block>,
    norm: std::sync::Arc<Kernel>,
    add_norm: std::sync::Arc<Kernel>,
    /// The gated activation, for blocks whose gate and up are apart.
    act: std::sync::Arc<Kernel>,
    rope: std::sync::Arc<Kernel>,
    /// RoPE tables by [`RopeTables`] index, built for `table_positions` positions and
    /// rebuilt longer when a session needs more ([`GeneralBlocks::session_binds`]).
    rope_tables: RopeTables,
    tables: Vec<wgpu::Buffer>,
    table_positions: usize,
    config: ModelConfig,
    /// Attention kernels and their options, one per distinct (scale, window).
    attention: Vec<(std::sync::Arc<Kernel>, attention::Options)>,
    layout: attention::Layout,
    _xn: wgpu::Buffer,
    _tmp: wgpu::Buffer,
    _ffh: wgpu::Buffer,
    _gate_up_apart: (wgpu::Buffer, wgpu::Buffer),
    pub weight_bytes: usize,
}

impl GeneralBlocks {
    pub fn new(
        g: &GpuContext,
        src: &dyn WeightSource,
        c: &ModelConfig,
        blocks: Range<usize>,
        shape: Shape,
        s: &Scratch<'_>,
    ) -> Result<Self, EngineError> {
        let (d, f, qd, kvd) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
        let xn = g.storage("normed", (MAX_BATCH * d * 4) as u64)?;
        let tmp = g.storage("block output", (MAX_BATCH * d * 4) as u64)?;
        let ffh = g.storage("ffn hidden", (MAX_BATCH * f * 4) as u64)?;
        // Gate and up apart (blocks whose formats differ); small until one needs them.
        let apart = |label| g.storage(label, (MAX_BATCH * f * 4) as u64);
        let needs_apart = (blocks.clone()).any(|b| {
            let fmt = |w: &str| {
                src.tensor(&block_tensor(b, w))
                    .map(|t| crate::ops::linear::gpu_format(t.ty))
                    .ok()
            };
            fmt("ffn_gate") != fmt("ffn_up")
        });
        let gate_up_apart = if needs_apart {
            (apart("ffn gate")?, apart("ffn up")?)
        } else {
            (g.storage("ffn gate", 4)?, g.storage("ffn up", 4)?)
        };
        let act_op = match c.features.ffn_activation {
            FfnActivation::Silu => elementwise::Op::SwiGlu,
            FfnActivation::GeluTanh => elementwise::Op::GeGlu,
        };
        let act = elementwise::kernel(g, act_op, MAX_BATCH * f)?;
        let norm = rmsnorm::kernel(g, d, c.rms_eps)?;
        let add_norm = rmsnorm::add_kernel(g, d, c.rms_eps)?;
        let prep = rope::Prep {
            bias: c.features.qkv_bias,
            qk_norm_eps: c.features.qk_norm.then_some(c.rms_eps),
        };
        let rope = rope::kernel_with(g, c.head_dim, c.n_heads, c.n_kv_heads, c.rope_style, prep)?;
        let layout = attention::layout_for(g, c.head_dim);
        let mut tables = RopeTables::default();
        let mut attention_kernels: Vec<(std::sync::Arc<Kernel>, attention::Options)> = Vec::new();
        let unused = &g.unused_buffers()[1];
        let store = Variant::new(Mode::Store, shape);
        let mut out = Vec::new();
        let mut weight_bytes = 0;
        for b in blocks {
            // The previous block's pages are uploaded: let them leave the resident set
            // (the file's pages would otherwise all count at the peak of loading).
            src.release_pages();
            let name = |w: &str| block_tensor(b, w);
            let extras = BlockExtras::read(src, c, b)?;
            let upload = |label: &str, v: &[f32]| g.storage_init(label, f32_bytes(v));
            let attn_norm_w = upload("attn_norm", &llama::norm(src, &name("attn_norm"), d)?)?;
            let ffn_norm_w = upload("ffn_norm", &llama::norm(src, &name("ffn_norm"), d)?)?;
            let none = Extras::default();
            let qkv_parts = [
                pack_tensor(src, &name("attn_q"), d, qd)?,
                pack_tensor(src, &name("attn_k"), d, kvd)?,
                pack_tensor(src, &name("attn_v"), d, kvd)?,
            ];
            weight_bytes += qkv_parts.iter().map(|p| p.gpu_bytes()).sum::<usize>();
            let qkv = if qkv_parts.iter().all(|p| p.fmt == qkv_parts[0].fmt) {
                let w = PackedWeight::concat(&qkv_parts)?;
                let l = Linear::new(g, w, &name("attn_qkv"), store)?;
                let bind = l.bind(g, s.step, &xn, s.qkv, none);
                vec![(l, bind)]
            } else {
                let width = (qd + 2 * kvd) as u32;
                let offsets = [0, qd as u32, (qd + kvd) as u32];
                let mut parts = Vec::new();
                for (w, off) in qkv_parts.into_iter().zip(offsets) {
                    let v = Variant {
                        output: Some((width, off)),
                        ..store
                    };
                    let l = Linear::new(g, w, &name("attn_qkv part"), v)?;
                    let bind = l.bind(g, s.step, &xn, s.qkv, none);
                    parts.push((l, bind));
                }
                parts
            };
            let (gate_w, up_w) = (
                pack_tensor(src, &name("ffn_gate"), d, f)?,
                pack_tensor(src, &name("ffn_up"), d, f)?,
            );
            weight_bytes += gate_w.gpu_bytes() + up_w.gpu_bytes();
            let gated = Variant::new(Mode::gated(c.features.ffn_activation), shape);
            let gate_up = if gate_w.fmt == up_w.fmt {
                let w = PackedWeight::concat(&[gate_w, up_w])?;
                let l = Linear::new(g, w, &name("ffn_gate_up"), gated)?;
                let bind = l.bind(g, s.step, &xn, &ffh, none);
                GateUp::Stacked(Box::new((l, bind)))
            } else {
                let (gb, ub) = (&gate_up_apart.0, &gate_up_apart.1);
                let gate = Linear::new(g, gate_w, &name("ffn_gate"), store)?;
                let up = Linear::new(g, up_w, &name("ffn_up"), store)?;
                let (bg, bu) = (
                    gate.bind(g, s.step, &xn, gb, none),
                    up.bind(g, s.step, &xn, ub, none),
                );
                GateUp::Apart {
                    gate: Box::new((gate, bg)),
                    up: Box::new((up, bu)),
                    act: g.bind_group(&act, &[gb, ub, &ffh]),
                }
            };
            let o_w = pack_tensor(src, &name("attn_output"), qd, d)?;
            let down_w = pack_tensor(src, &name("ffn_down"), f, d)?;
            weight_bytes += o_w.gpu_bytes() + down_w.gpu_bytes();
            let post = extras.post_norms.is_some();
            // With post-norms the block outputs go to `tmp` to be normed and added.
            let residual = Variant::new(if post { Mode::Store } else { Mode::Accumulate }, shape);
            let out_buf = if post { &tmp } else { s.x };
            let o = Linear::new(g, o_w, &name("attn_output"), residual)?;
            let down = Linear::new(g, down_w, &name("ffn_down"), residual)?;
            let post_binds = match &extras.post_norms {
                Some((pa, pf)) => {
                    let pa = upload("post_attention_norm", pa)?;
                    let pf = upload("post_ffw_norm", pf)?;
                    Some((
                        g.bind_group(&add_norm, &[s.step, &tmp, &pa, s.x, unused]),
                        g.bind_group(&add_norm, &[s.step, &tmp, &pf, s.x, unused]),
                    ))
                }
                None => None,
            };
            let bias = match &extras.qkv_bias {
                Some((bq, bk, bv)) => {
                    let row: Vec<f32> = bq.iter().chain(bk).chain(bv).copied().collect();
                    Some(upload("qkv bias", &row)?)
                }
                None => None,
            };
            let qk_norm = match &extras.qk_norm {
                Some((nq, nk)) => {
                    let w: Vec<f32> = nq.iter().chain(nk).copied().collect();
                    Some(upload("qk norm", &w)?)
                }
                None => None,
            };
            let opts = llama::attention_options(c, b);
            let attention = match attention_kernels.iter().position(|(_, o)| *o == opts) {
                Some(i) => i,
                None => {
                    let k = attention::kernel_with(
                        g,
                        layout,
                        c.head_dim,
                        c.n_heads,
                        c.n_kv_heads,
                        opts,
                    )?;
                    attention_kernels.push((k, opts));
                    attention_kernels.len() - 1
                }
            };
            out.push(Block {
                attn_norm: g.bind_group(&norm, &[s.step, s.x, &attn_norm_w, &xn, unused]),
                ffn_norm: g.bind_group(&norm, &[s.step, s.x, &ffn_norm_w, &xn, unused]),
                o_bind: o.bind(g, s.step, s.att, out_buf, none),
                down_bind: down.bind(g, s.step, &ffh, out_buf, none),
                post: post_binds,
                bias,
                qk_norm,
                table: tables.index_of(c, b),
                attention,
                qkv,
                o,
                gate_up,
                down,
            });
        }
        Ok(Self {
            rope_tables: tables,
            tables: Vec::new(),
            table_positions: 0,
            config: c.clone(),
            blocks: out,
            norm,
            add_norm,
            act,
            rope,
            attention: attention_kernels,
            layout,
            _xn: xn,
            _tmp: tmp,
            _ffh: ffh,
            _gate_up_apart: gate_up_apart,
            weight_bytes,
        })
    }

    /// Makes the RoPE tables cover `positions` (a session about to open), rebuilding them
    /// longer if they do not; sessions already open keep the tables they were bound to.
    pub fn ensure_positions(
        &mut self,
        g: &GpuContext,
        positions: usize,
    ) -> Result<(), EngineError> {
        if positions <= self.table_positions && !self.tables.is_empty() {
            return Ok(());
        }
        let n = llama::table_positions(&self.config, positions);
        self.tables = self
            .rope_tables
            .build(&self.config, n)
            .iter()
            .map(|t| g.storage_init("rope table", bytemuck::cast_slice(t)))
            .collect::<Result<_, _>>()?;
        self.table_positions = n;
        Ok(())
    }

    /// A session's bind groups for block `i` of the range: the `rope` kernel's (with the
    /// block's table and KV caches) and the attention kernel's. Call
    /// [`GeneralBlocks::ensure_positions`] for the session first.
    pub fn session_binds(
        &self,
        g: &GpuContext,
        i: usize,
        s: &Scratch<'_>,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
    ) -> (wgpu::BindGroup, wgpu::BindGroup) {
        let blk = &self.blocks[i];
        let [ur, uw0, ..] = g.unused_buffers();
        let bias = blk.bias.as_ref().unwrap_or(ur);
        let qkn = blk.qk_norm.as_ref().unwrap_or(uw0);
        let table = &self.tables[blk.table];
        let rope = g.bind_group(&self.rope, &[s.step, s.qkv, table, k, v, bias, qkn]);
        let att = g.bind_group(
            &self.attention[blk.attention].0,
            &[s.step, s.qkv, k, v, s.att],
        );
        (rope, att)
    }

    /// Records blocks `span` (offsets into the range) for `n` rows of a session whose
    /// bind groups are `rope_binds` and `attn_binds` (by block offset).
    pub fn record(
        &self,
        c: &ModelConfig,
        pass: &mut wgpu::ComputePass<'_>,
        span: &Range<usize>,
        rope_binds: &[wgpu::BindGroup],
        attn_binds: &[wgpu::BindGroup],
        n: usize,
    ) {
        let blocks = self
            .blocks
            .iter()
            .enumerate()
            .take(span.end)
            .skip(span.start);
        for (i, b) in blocks {
            dispatch(pass, &self.norm, &b.attn_norm, rmsnorm::groups(n));
            for (l, bind) in &b.qkv {
                l.record(pass, bind, n);
            }
            dispatch(
                pass,
                &self.rope,
                &rope_binds[i],
                rope::groups(c.n_heads, c.n_kv_heads, n),
            );
            let groups = attention::groups(self.layout, c.head_dim, c.n_heads, c.n_kv_heads, n);
            dispatch(pass, &self.attention[b.attention].0, &attn_binds[i], groups);
            b.o.record(pass, &b.o_bind, n);
            if let Some((after_o, _)) = &b.post {
                dispatch(pass, &self.add_norm, after_o, rmsnorm::groups(n));
            }
            dispatch(pass, &self.norm, &b.ffn_norm, rmsnorm::groups(n));
            match &b.gate_up {
                GateUp::Stacked(stacked) => stacked.0.record(pass, &stacked.1, n),
                GateUp::Apart { gate, up, act } => {
                    gate.0.record(pass, &gate.1, n);
                    up.0.record(pass, &up.1, n);
                    dispatch(pass, &self.act, act, elementwise::groups(n * c.d_ff));
                }
            }
            b.down.record(pass, &b.down_bind, n);
            if let Some((_, after_down)) = &b.post {
                dispatch(pass, &self.add_norm, after_down, rmsnorm::groups(n));
            }
        }
    }
}

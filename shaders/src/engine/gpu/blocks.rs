//! [`GpuBlocks`]: blocks `[start, end)` with per-session KV caches in GPU memory. The
//! plain Llama block takes the fused path below; the other architectures the general
//! one ([`super::general`]).
//!
//! Weights are uploaded once, packed but still quantized; q/k/v are stacked into one
//! matrix and gate/up into another so a block is 5 dispatches: RMSNorm + q/k/v + RoPE +
//! KV-cache write, attention, o (+ residual), RMSNorm + gate/up + SwiGLU, down
//! (+ residual). On GPUs the normed kernels compute the norm themselves. On CPU adapters,
//! where one invocation per row would recompute it for every row, the norms ride on a
//! chain ([`NormChain`]): o and down also leave the residual `⊙` the next norm's weight
//! and partial sums of squares, and q/k/v and gate/up only apply `1 / rms`; a span's
//! first block gets one norm dispatch of its own. (Before the chain, the 2 RMSNorm
//! dispatches a block cost ~42 us each on lavapipe, ~2.5 ms of a decode token.)
//! Pipelines, bind groups and buffers are created at construction (KV buffers and their
//! bind groups at `open_session`); a forward writes the input rows and one [`Step`]
//! uniform, records every block into one command encoder, submits once and reads back
//! only the output.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use super::general::{GeneralBlocks, Scratch};
use super::{Linear, MAX_BATCH, f32_bytes, pack_tensor};
use crate::engine::llama::{self, block_tensor};
use crate::engine::{BlockBackend, EngineError, SessionId};
use crate::gpu::pipeline::dispatch;
use crate::gpu::{GpuContext, Kernel, Readback};
use crate::model::{ModelConfig, WeightSource};
use crate::ops::linear::{self, Extras, Mode, PackedWeight, Rope, Shape, Variant};
use crate::ops::{Step, attention, rmsnorm, rope};

struct Block {
    attn_norm: wgpu::Buffer,
    /// The norm chain's first dispatch when a span starts at this block.
    prenorm: Option<wgpu::BindGroup>,
    qkv: Linear,
    o: Linear,
    o_bind: wgpu::BindGroup,
    gate_up: Linear,
    gate_up_bind: wgpu::BindGroup,
    down: Linear,
    down_bind: wgpu::BindGroup,
}

struct Session {
    max: usize,
    cached: usize,
    _kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    qkv: Vec<wgpu::BindGroup>,
    attn: Vec<wgpu::BindGroup>,
}

/// Where one invocation per row makes an in-kernel RMSNorm dear (CPU adapters): the
/// residual kernels (o, down) also write the residual `⊙` the next norm's weight to `xn`
/// and partial sums of squares to `ssq`, and the normed kernels (q/k/v, gate/up) read
/// those and apply `1 / rms` to their sums. Only a span's first block needs a norm
/// dispatch of its own (`prenorm`, the partials RMSNorm): 5 dispatches a block, not 7.
struct NormChain {
    prenorm: Arc<Kernel>,
    xn: wgpu::Buffer,
    ssq: wgpu::Buffer,
}

/// Blocks `[start, end)` on the GPU.
pub struct GpuBlocks {
    ctx: Arc<GpuContext>,
    config: ModelConfig,
    range: Range<usize>,
    shape: Shape,
    step: wgpu::Buffer,
    x: wgpu::Buffer,
    qkv: wgpu::Buffer,
    att: wgpu::Buffer,
    readback: Readback,
    path: Path,
    sessions: HashMap<SessionId, Session>,
    weight_bytes: usize,
}

/// How the blocks are computed: the plain Llama block's fused kernels, or one dispatch
/// per step for the other architectures ([`GeneralBlocks`]).
enum Path {
    Fused(Fused),
    General(Box<GeneralBlocks>),
}

/// The fused Llama path's kernels and weights.
struct Fused {
    /// Built for `table_positions` positions, rebuilt longer when a session needs more
    /// (open sessions keep theirs).
    rope_table: wgpu::Buffer,
    table_positions: usize,
    attention: Arc<Kernel>,
    attention_layout: attention::Layout,
    /// The norm chain, when norms are not fused into the linear kernels.
    norm: Option<NormChain>,
    blocks: Vec<Block>,
}

impl GpuBlocks {
    /// Uploads blocks `blocks` of `src`, with the kernel shape suited to the adapter.
    pub fn new(
        ctx: Arc<GpuContext>,
        src: &dyn WeightSource,
        blocks: Range<usize>,
    ) -> Result<Self, EngineError> {
        let shape = Shape::for_context(&ctx);
        Self::with_shape(ctx, src, blocks, shape)
    }

    /// As [`GpuBlocks::new`] with an explicit linear-kernel shape (benchmarks compare them).
    pub fn with_shape(
        ctx: Arc<GpuContext>,
        src: &dyn WeightSource,
        blocks: Range<usize>,
        shape: Shape,
    ) -> Result<Self, EngineError> {
        let c = src.config().clone();
        llama::check_range(&c, &blocks)?;
        let (d, qd, kvd) = (c.d_model, c.q_dim(), c.kv_dim());
        let g = &*ctx;
        let step = g.uniform("step", 16);
        let x = g.storage("hidden", (MAX_BATCH * d * 4) as u64)?;
        let qkv = g.storage("q", (MAX_BATCH * (qd + 2 * kvd) * 4) as u64)?;
        let att = g.storage("attention out", (MAX_BATCH * qd * 4) as u64)?;
        let readback = Readback::new(g, "hidden readback", (MAX_BATCH * d * 4) as u64);
        let scratch = Scratch {
            step: &step,
            x: &x,
            qkv: &qkv,
            att: &att,
        };
        let (path, weight_bytes) = if !c.features.is_plain_llama(c.head_dim)
            || super::general::formats_differ(src, blocks.clone())?
        {
            let general = GeneralBlocks::new(g, src, &c, blocks.clone(), shape, &scratch)?;
            let bytes = general.weight_bytes;
            (Path::General(Box::new(general)), bytes)
        } else {
            let (fused, bytes) = Fused::new(g, src, &c, blocks.clone(), shape, &scratch)?;
            (Path::Fused(fused), bytes)
        };
        src.release_pages();
        Ok(Self {
            config: c,
            range: blocks,
            shape,
            step,
            x,
            qkv,
            att,
            readback,
            path,
            sessions: HashMap::new(),
            weight_bytes,
            ctx,
        })
    }

    /// The linear kernels' shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Bytes of packed weights one token's forward reads.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn forward_chunk(
        &mut self,
        id: SessionId,
        start_pos: usize,
        rows: &mut [f32],
        span: &Range<usize>,
    ) -> Result<(), EngineError> {
        let c = &self.config;
        let n = rows.len() / c.d_model;
        let s = self
            .sessions
            .get(&id)
            .ok_or(EngineError::UnknownSession(id))?;
        let g = &*self.ctx;
        let step = Step {
            n_tokens: n as u32,
            start_pos: start_pos as u32,
            pad: [0; 2],
        };
        g.queue
            .write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
        g.queue.write_buffer(&self.x, 0, f32_bytes(rows));
        let mut enc = g.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            match &self.path {
                Path::Fused(f) => f.record(c, &mut pass, span, s, n),
                Path::General(gb) => gb.record(c, &mut pass, span, &s.qkv, &s.attn, n),
            }
        }
        let bytes = (rows.len() * 4) as u64;
        self.readback.copy_from(&mut enc, &self.x, bytes);
        g.queue.submit([enc.finish()]);
        let out = self.readback.read_f32(g, rows.len())?;
        rows.copy_from_slice(&out);
        Ok(())
    }
}

impl Fused {
    /// The fused path's kernels and weights for blocks `blocks`, and the bytes of packed
    /// weights one token's forward reads.
    fn new(
        g: &GpuContext,
        src: &dyn WeightSource,
        c: &ModelConfig,
        blocks: Range<usize>,
        shape: Shape,
        s: &Scratch<'_>,
    ) -> Result<(Self, usize), EngineError> {
        let (d, f, qd, kvd) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
        let ffh = g.storage("ffn hidden", (MAX_BATCH * f * 4) as u64)?;
        let positions = llama::table_positions(c, 256);
        let table = rope::table(c.head_dim, c.rope_theta, positions);
        let rope_table = g.storage_init("rope table", bytemuck::cast_slice(&table))?;
        let attention_layout = attention::Layout::for_context(g);
        let attention =
            attention::kernel_in(g, attention_layout, c.head_dim, c.n_heads, c.n_kv_heads)?;
        let rope = Rope {
            head_dim: c.head_dim,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            style: c.rope_style,
        };
        let fuse_norm = shape.fuses_norm();
        // The residual kernels' variant, whose partials the normed kernels read.
        let residual = Variant {
            norm_out: !fuse_norm,
            ..Variant::new(Mode::Accumulate, shape.fitted(d))
        };
        let partials = linear::norm_out_partials(d, &residual);
        let norm = if fuse_norm {
            None
        } else {
            Some(NormChain {
                prenorm: rmsnorm::partials_kernel(g, d, partials)?,
                xn: g.storage("normed", (MAX_BATCH * d * 4) as u64)?,
                ssq: g.storage(
                    "sums of squares",
                    (MAX_BATCH * partials as usize * 4) as u64,
                )?,
            })
        };
        let normed = |mode| Variant {
            norm_eps: Some(c.rms_eps),
            norm_partials: if fuse_norm { 0 } else { partials },
            ..Variant::new(mode, shape)
        };
        // The input of the normed linears: the hidden state (fused) or x ⊙ weight.
        let norm_in = norm.as_ref().map_or(s.x, |n| &n.xn);
        let mut norm_weights = Vec::new();
        for b in blocks.clone() {
            let name = |w: &str| block_tensor(b, w);
            norm_weights.push((
                g.storage_init(
                    "attn_norm",
                    f32_bytes(&llama::norm(src, &name("attn_norm"), d)?),
                )?,
                g.storage_init(
                    "ffn_norm",
                    f32_bytes(&llama::norm(src, &name("ffn_norm"), d)?),
                )?,
            ));
        }
        // The residual kernels' extras: the next norm's weight and where its input goes.
        let chain_out = |next_norm| match &norm {
            Some(n) => Extras {
                norm: Some(next_norm),
                partials: Some(&n.ssq),
                norm_out: Some(&n.xn),
                ..Default::default()
            },
            None => Extras::default(),
        };
        let mut out = Vec::new();
        let mut weight_bytes = 0;
        for (i, b) in blocks.clone().enumerate() {
            // The previous block's pages are uploaded: let them leave the resident set
            // (the file's pages would otherwise all count at the peak of loading).
            src.release_pages();
            let name = |w: &str| block_tensor(b, w);
            let (attn_norm, ffn_norm) = &norm_weights[i];
            // After the range's last block nothing reads the down kernel's norm output.
            let next_attn_norm = &norm_weights.get(i + 1).unwrap_or(&norm_weights[i]).0;
            let qkv_w = PackedWeight::concat(&[
                pack_tensor(src, &name("attn_q"), d, qd)?,
                pack_tensor(src, &name("attn_k"), d, kvd)?,
                pack_tensor(src, &name("attn_v"), d, kvd)?,
            ])?;
            let gu_w = PackedWeight::concat(&[
                pack_tensor(src, &name("ffn_gate"), d, f)?,
                pack_tensor(src, &name("ffn_up"), d, f)?,
            ])?;
            let o_w = pack_tensor(src, &name("attn_output"), qd, d)?;
            let down_w = pack_tensor(src, &name("ffn_down"), f, d)?;
            weight_bytes +=
                qkv_w.gpu_bytes() + gu_w.gpu_bytes() + o_w.gpu_bytes() + down_w.gpu_bytes();
            let qkv_l = Linear::new(
                g,
                qkv_w,
                &name("attn_qkv"),
                Variant {
                    rope: Some(rope),
                    ..normed(Mode::QkvRope)
                },
            )?;
            let o = Linear::new(g, o_w, &name("attn_output"), residual)?;
            let gate_up = Linear::new(g, gu_w, &name("ffn_gate_up"), normed(Mode::SwiGlu))?;
            let down = Linear::new(g, down_w, &name("ffn_down"), residual)?;
            for l in [&o, &down] {
                let p = linear::norm_out_partials(d, &l.decode.1);
                if l.decode.1.norm_out && p != partials {
                    return Err(EngineError::Gpu(format!(
                        "linear: {p} norm partials where {partials} are read"
                    )));
                }
            }
            out.push(Block {
                prenorm: norm
                    .as_ref()
                    .map(|n| g.bind_group(&n.prenorm, &[s.step, s.x, attn_norm, &n.xn, &n.ssq])),
                o_bind: o.bind(g, s.step, s.att, s.x, chain_out(ffn_norm)),
                gate_up_bind: gate_up.bind(
                    g,
                    s.step,
                    norm_in,
                    &ffh,
                    Extras {
                        norm: fuse_norm.then_some(ffn_norm),
                        partials: norm.as_ref().map(|n| &n.ssq),
                        ..Default::default()
                    },
                ),
                down_bind: down.bind(g, s.step, &ffh, s.x, chain_out(next_attn_norm)),
                attn_norm: attn_norm.clone(),
                qkv: qkv_l,
                o,
                gate_up,
                down,
            });
        }
        Ok((
            Self {
                rope_table,
                table_positions: positions,
                attention,
                attention_layout,
                norm,
                blocks: out,
            },
            weight_bytes,
        ))
    }

    /// Records blocks `span` (offsets into the range) for `n` rows of session `s`.
    fn record(
        &self,
        c: &ModelConfig,
        pass: &mut wgpu::ComputePass<'_>,
        span: &Range<usize>,
        s: &Session,
        n: usize,
    ) {
        if let (Some(chain), Some(first)) = (&self.norm, self.blocks.get(span.start))
            && let Some(bg) = &first.prenorm
        {
            dispatch(pass, &chain.prenorm, bg, rmsnorm::groups(n));
        }
        let groups = attention::groups(
            self.attention_layout,
            c.head_dim,
            c.n_heads,
            c.n_kv_heads,
            n,
        );
        for (i, b) in self
            .blocks
            .iter()
            .enumerate()
            .take(span.end)
            .skip(span.start)
        {
            b.qkv.record(pass, &s.qkv[i], n);
            dispatch(pass, &self.attention, &s.attn[i], groups);
            b.o.record(pass, &b.o_bind, n);
            b.gate_up.record(pass, &b.gate_up_bind, n);
            b.down.record(pass, &b.down_bind, n);
        }
    }
}

impl BlockBackend for GpuBlocks {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn blocks(&self) -> Range<usize> {
        self.range.clone()
    }

    fn open_session(&mut self, id: SessionId, max_positions: usize) -> Result<(), EngineError> {
        if self.sessions.contains_key(&id) {
            return Err(EngineError::SessionExists(id));
        }
        llama::check_session_size(&self.config, max_positions)?;
        let g = &*self.ctx;
        match &mut self.path {
            Path::Fused(f) if f.table_positions < max_positions => {
                let n = llama::table_positions(&self.config, max_positions);
                let c = &self.config;
                let table = rope::table(c.head_dim, c.rope_theta, n);
                f.rope_table = g.storage_init("rope table", bytemuck::cast_slice(&table))?;
                f.table_positions = n;
            }
            Path::General(gb) => gb.ensure_positions(g, max_positions)?,
            Path::Fused(_) => {}
        }
        let bytes = (max_positions * self.config.kv_dim() * 4) as u64;
        let mut kv = Vec::new();
        let mut qkv_bg = Vec::new();
        let mut attn_bg = Vec::new();
        for (i, b) in self.range.clone().enumerate() {
            let k = g.storage(&format!("blk.{b} K cache"), bytes)?;
            let v = g.storage(&format!("blk.{b} V cache"), bytes)?;
            let (qkv, attn) = match &self.path {
                Path::Fused(f) => {
                    let blk = &f.blocks[i];
                    let extras = Extras {
                        norm: f.norm.is_none().then_some(&blk.attn_norm),
                        partials: f.norm.as_ref().map(|n| &n.ssq),
                        rope_kv: Some((&f.rope_table, &k, &v)),
                        ..Default::default()
                    };
                    let input = f.norm.as_ref().map_or(&self.x, |n| &n.xn);
                    let binds = [&self.step, &self.qkv, &k, &v, &self.att];
                    (
                        blk.qkv.bind(g, &self.step, input, &self.qkv, extras),
                        g.bind_group(&f.attention, &binds),
                    )
                }
                Path::General(gb) => {
                    let scratch = Scratch {
                        step: &self.step,
                        x: &self.x,
                        qkv: &self.qkv,
                        att: &self.att,
                    };
                    gb.session_binds(g, i, &scratch, &k, &v)
                }
            };
            qkv_bg.push(qkv);
            attn_bg.push(attn);
            kv.push((k, v));
        }
        self.sessions.insert(
            id,
            Session {
                max: max_positions,
                cached: 0,
                _kv: kv,
                qkv: qkv_bg,
                attn: attn_bg,
            },
        );
        Ok(())
    }

    fn close_session(&mut self, id: SessionId) {
        self.sessions.remove(&id);
    }

    fn forward_span(
        &mut self,
        id: SessionId,
        start_pos: usize,
        hidden: &mut [f32],
        span: Range<usize>,
    ) -> Result<(), EngineError> {
        let span = crate::engine::local_span(&span, &self.range, self.config.n_blocks)?;
        let d = self.config.d_model;
        let n = llama::rows(hidden, d)?;
        let s = self
            .sessions
            .get(&id)
            .ok_or(EngineError::UnknownSession(id))?;
        llama::check_positions(start_pos, n, s.cached, s.max)?;
        for (i, chunk) in hidden.chunks_mut(MAX_BATCH * d).enumerate() {
            self.forward_chunk(id, start_pos + i * MAX_BATCH, chunk, &span)?;
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.cached = start_pos + n;
        }
        Ok(())
    }
}

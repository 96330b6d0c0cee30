//! The wgpu backends: [`GpuBlocks`] (Llama blocks with per-session KV caches in GPU
//! memory) and [`GpuHead`] (embedding, final norm, LM head, argmax and sampling).
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

use super::cpu::{check_len, check_tokens};
use super::llama::{self, block_tensor};
use super::{BlockBackend, EngineError, HeadBackend, SessionId};
use crate::gpu::pipeline::dispatch;
use crate::gpu::{GpuContext, Kernel, Readback};
use crate::model::{ModelConfig, WeightSource};
use crate::ops::linear::{self, Extras, GpuWeight, Mode, PackedWeight, Rope, Shape, Variant};
use crate::ops::sample::{self, SamplingParams};
use crate::ops::{Step, argmax, attention, embed, rmsnorm, rope};

/// Rows one submission carries; longer inputs are split into chunks of this many.
pub const MAX_BATCH: usize = 32;
/// Tokens per invocation of the prefill matmul.
const PREFILL_TT: u32 = 4;

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// `v` with its shape fitted to a matrix of `rows` rows ([`Shape::fitted`]; idempotent).
fn fitted(v: Variant, rows: usize) -> Variant {
    Variant {
        shape: v.shape.fitted(linear::invocation_rows(rows, v.mode)),
        ..v
    }
}

/// A linear layer on the GPU with its decode and prefill pipelines.
struct Linear {
    w: GpuWeight,
    decode: (Arc<Kernel>, Variant),
    prefill: (Arc<Kernel>, Variant),
}

impl Linear {
    /// Uploads `w` for kernels of `v` fitted to it, its groups tiled as the fitted shape
    /// reads them ([`linear::tile_rows`]).
    fn new(
        ctx: &GpuContext,
        w: PackedWeight,
        label: &str,
        v: Variant,
    ) -> Result<Self, EngineError> {
        let v = fitted(v, w.rows);
        let tile = linear::tile_rows(w.rows, &v);
        Self::with_weight(ctx, w.tiled(tile)?.upload(ctx, label)?, v)
    }

    /// Kernels of `v` (fitted to `w`) over a weight already on the GPU, in whatever
    /// layout it has.
    fn with_weight(ctx: &GpuContext, w: GpuWeight, v: Variant) -> Result<Self, EngineError> {
        let v = fitted(v, w.rows);
        let pv = Variant {
            tokens_per_invocation: PREFILL_TT,
            ..v
        };
        Ok(Self {
            decode: (linear::kernel(ctx, &w, &v)?, v),
            prefill: (linear::kernel(ctx, &w, &pv)?, pv),
            w,
        })
    }

    fn bind(
        &self,
        ctx: &GpuContext,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        extras: Extras<'_>,
    ) -> wgpu::BindGroup {
        linear::bind(ctx, &self.decode.0, step, x, &self.w, y, extras)
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, bind: &wgpu::BindGroup, n: usize) {
        let (k, v) = if n == 1 { &self.decode } else { &self.prefill };
        dispatch(pass, k, bind, linear::groups(self.w.rows, n, v));
    }
}

fn pack_tensor(
    src: &dyn WeightSource,
    name: &str,
    inp: usize,
    out: usize,
) -> Result<PackedWeight, EngineError> {
    let t = llama::linear(src, name, inp, out)?;
    Ok(linear::pack(t.ty, t.data, out, inp)?)
}

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
    rope_table: wgpu::Buffer,
    readback: Readback,
    attention: Arc<Kernel>,
    attention_layout: attention::Layout,
    /// The norm chain, when norms are not fused into the linear kernels.
    norm: Option<NormChain>,
    blocks: Vec<Block>,
    sessions: HashMap<SessionId, Session>,
    weight_bytes: usize,
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
        let (d, f, qd, kvd) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
        let g = &*ctx;
        let step = g.uniform("step", 16);
        let x = g.storage("hidden", (MAX_BATCH * d * 4) as u64)?;
        let qkv = g.storage("q", (MAX_BATCH * (qd + 2 * kvd) * 4) as u64)?;
        let att = g.storage("attention out", (MAX_BATCH * qd * 4) as u64)?;
        let ffh = g.storage("ffn hidden", (MAX_BATCH * f * 4) as u64)?;
        let positions = c.context_length.clamp(1, llama::MAX_POSITIONS);
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
        let norm_in = norm.as_ref().map_or(&x, |n| &n.xn);
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
                    .map(|n| g.bind_group(&n.prenorm, &[&step, &x, attn_norm, &n.xn, &n.ssq])),
                o_bind: o.bind(g, &step, &att, &x, chain_out(ffn_norm)),
                gate_up_bind: gate_up.bind(
                    g,
                    &step,
                    norm_in,
                    &ffh,
                    Extras {
                        norm: fuse_norm.then_some(ffn_norm),
                        partials: norm.as_ref().map(|n| &n.ssq),
                        ..Default::default()
                    },
                ),
                down_bind: down.bind(g, &step, &ffh, &x, chain_out(next_attn_norm)),
                attn_norm: attn_norm.clone(),
                qkv: qkv_l,
                o,
                gate_up,
                down,
            });
        }
        let readback = Readback::new(g, "hidden readback", (MAX_BATCH * d * 4) as u64);
        Ok(Self {
            config: c,
            range: blocks,
            shape,
            step,
            x,
            qkv,
            att,
            rope_table,
            readback,
            attention,
            attention_layout,
            norm,
            blocks: out,
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
            if let (Some(chain), Some(first)) = (&self.norm, self.blocks.get(span.start))
                && let Some(bg) = &first.prenorm
            {
                dispatch(&mut pass, &chain.prenorm, bg, rmsnorm::groups(n));
            }
            for (i, b) in self
                .blocks
                .iter()
                .enumerate()
                .take(span.end)
                .skip(span.start)
            {
                b.qkv.record(&mut pass, &s.qkv[i], n);
                dispatch(
                    &mut pass,
                    &self.attention,
                    &s.attn[i],
                    attention::groups(
                        self.attention_layout,
                        c.head_dim,
                        c.n_heads,
                        c.n_kv_heads,
                        n,
                    ),
                );
                b.o.record(&mut pass, &b.o_bind, n);
                b.gate_up.record(&mut pass, &b.gate_up_bind, n);
                b.down.record(&mut pass, &b.down_bind, n);
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
        let bytes = (max_positions * self.config.kv_dim() * 4) as u64;
        let mut kv = Vec::new();
        let mut qkv_bg = Vec::new();
        let mut attn_bg = Vec::new();
        for (i, b) in self.range.clone().enumerate() {
            let k = g.storage(&format!("blk.{b} K cache"), bytes)?;
            let v = g.storage(&format!("blk.{b} V cache"), bytes)?;
            let blk = &self.blocks[i];
            let extras = Extras {
                norm: self.norm.is_none().then_some(&blk.attn_norm),
                partials: self.norm.as_ref().map(|n| &n.ssq),
                rope_kv: Some((&self.rope_table, &k, &v)),
                ..Default::default()
            };
            let input = self.norm.as_ref().map_or(&self.x, |n| &n.xn);
            qkv_bg.push(blk.qkv.bind(g, &self.step, input, &self.qkv, extras));
            attn_bg
                .push(g.bind_group(&self.attention, &[&self.step, &self.qkv, &k, &v, &self.att]));
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
        let span = super::local_span(&span, &self.range, self.config.n_blocks)?;
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

/// Embedding, final norm, LM head, argmax and sampling on the GPU.
pub struct GpuHead {
    ctx: Arc<GpuContext>,
    config: ModelConfig,
    step: wgpu::Buffer,
    tokens: wgpu::Buffer,
    embedded: wgpu::Buffer,
    hidden: wgpu::Buffer,
    logits: wgpu::Buffer,
    id_out: wgpu::Buffer,
    sample_params: wgpu::Buffer,
    readback: Readback,
    table: GpuWeight,
    lm: Linear,
    lm_bind: wgpu::BindGroup,
    /// The final RMSNorm as its own dispatch (CPU adapters), else fused into the LM head.
    norm: Option<(Arc<Kernel>, wgpu::BindGroup)>,
    embed_k: Arc<Kernel>,
    embed_bg: wgpu::BindGroup,
    argmax_k: Arc<Kernel>,
    argmax_bg: wgpu::BindGroup,
    sample_k: Arc<Kernel>,
    sample_bg: wgpu::BindGroup,
    _norm_w: wgpu::Buffer,
}

impl GpuHead {
    pub fn new(ctx: Arc<GpuContext>, src: &dyn WeightSource) -> Result<Self, EngineError> {
        let c = src.config().clone();
        let (d, vocab) = (c.d_model, c.vocab_size);
        let g = &*ctx;
        let shape = Shape::for_context(g);
        let step = g.uniform("head step", 16);
        let tokens = g.storage("tokens", (MAX_BATCH * 4) as u64)?;
        let embedded = g.storage("embedded", (MAX_BATCH * d * 4) as u64)?;
        let hidden = g.storage("final hidden", (d * 4) as u64)?;
        let logits = g.storage("logits", (vocab * 4) as u64)?;
        let id_out = g.storage("token id", 4)?;
        let sample_params = g.uniform("sample params", 16);
        let norm_w = g.storage_init(
            "output_norm",
            f32_bytes(&llama::norm(src, "output_norm.weight", d)?),
        )?;
        let fuse_norm = shape.fuses_norm();
        let lm_v = Variant {
            norm_eps: fuse_norm.then_some(c.rms_eps),
            ..Variant::new(Mode::Store, shape.fitted(vocab))
        };
        let embd_t = llama::linear(src, "token_embd.weight", d, vocab)?;
        let lm_t = llama::lm_head(src, &c)?;
        let tied = lm_t.name == "token_embd.weight";
        // Tied: the LM head reads the embedding's buffers, tiled for the LM head (the
        // embedding kernel reads any layout).
        let table = linear::pack(embd_t.ty, embd_t.data, vocab, d)?
            .tiled(if tied {
                linear::tile_rows(vocab, &lm_v)
            } else {
                0
            })?
            .upload(g, "token_embd")?;
        let lm = if tied {
            Linear::with_weight(g, table.clone(), lm_v)?
        } else {
            Linear::new(
                g,
                linear::pack(lm_t.ty, lm_t.data, vocab, d)?,
                "output",
                lm_v,
            )?
        };
        let (lm_bind, norm) = if fuse_norm {
            let extras = Extras {
                norm: Some(&norm_w),
                ..Default::default()
            };
            (lm.bind(g, &step, &hidden, &logits, extras), None)
        } else {
            let normed = g.storage("final normed", (d * 4) as u64)?;
            let k = rmsnorm::kernel(g, d, c.rms_eps)?;
            let unused = &g.unused_buffers()[1];
            let bg = g.bind_group(&k, &[&step, &hidden, &norm_w, &normed, unused]);
            (
                lm.bind(g, &step, &normed, &logits, Extras::default()),
                Some((k, bg)),
            )
        };
        let embed_k = embed::kernel(g, &table)?;
        let embed_bg = g.bind_group(
            &embed_k,
            &[&step, &tokens, &table.quants, &table.scales, &embedded],
        );
        let argmax_k = argmax::kernel(g, vocab)?;
        let argmax_bg = g.bind_group(&argmax_k, &[&logits, &id_out]);
        let sample_k = sample::kernel(g, vocab)?;
        let sample_bg = g.bind_group(&sample_k, &[&sample_params, &logits, &id_out]);
        let readback = Readback::new(g, "head readback", ((MAX_BATCH * d).max(vocab) * 4) as u64);
        Ok(Self {
            config: c,
            step,
            tokens,
            embedded,
            hidden,
            logits,
            id_out,
            sample_params,
            readback,
            table,
            lm,
            lm_bind,
            norm,
            embed_k,
            embed_bg,
            argmax_k,
            argmax_bg,
            sample_k,
            sample_bg,
            _norm_w: norm_w,
            ctx,
        })
    }

    /// Records the LM head (with the final norm fused) of `hidden` into a new encoder, optionally followed by
    /// `then` (argmax or sampling).
    fn head_pass(
        &self,
        hidden: &[f32],
        then: Option<(&Kernel, &wgpu::BindGroup)>,
    ) -> Result<wgpu::CommandEncoder, EngineError> {
        let c = &self.config;
        check_len(hidden.len(), c.d_model, c.d_model)?;
        let g = &*self.ctx;
        let step = Step {
            n_tokens: 1,
            ..Default::default()
        };
        g.queue
            .write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
        g.queue.write_buffer(&self.hidden, 0, f32_bytes(hidden));
        let mut enc = g.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            if let Some((k, bg)) = &self.norm {
                dispatch(&mut pass, k, bg, rmsnorm::groups(1));
            }
            self.lm.record(&mut pass, &self.lm_bind, 1);
            if let Some((k, bg)) = then {
                dispatch(&mut pass, k, bg, argmax::GROUPS);
            }
        }
        Ok(enc)
    }

    fn read_id(&self, mut enc: wgpu::CommandEncoder) -> Result<u32, EngineError> {
        self.readback.copy_from(&mut enc, &self.id_out, 4);
        self.ctx.queue.submit([enc.finish()]);
        let b = self.readback.read(&self.ctx, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The greedy next token of a final hidden row (only 4 bytes come back).
    pub fn argmax(&mut self, hidden: &[f32]) -> Result<u32, EngineError> {
        let enc = self.head_pass(hidden, Some((&self.argmax_k, &self.argmax_bg)))?;
        self.read_id(enc)
    }

    /// A sampled next token; `u` is the uniform random number in `[0, 1)` (see
    /// [`crate::ops::sample`] for the rule, identical to [`sample::reference`]).
    pub fn sample(
        &mut self,
        hidden: &[f32],
        params: &SamplingParams,
        u: f32,
    ) -> Result<u32, EngineError> {
        let uni = sample::Uniform::new(params, u);
        self.ctx
            .queue
            .write_buffer(&self.sample_params, 0, bytemuck::bytes_of(&uni));
        let enc = self.head_pass(hidden, Some((&self.sample_k, &self.sample_bg)))?;
        self.read_id(enc)
    }

    /// Bytes of the packed embedding table.
    pub fn table_bytes(&self) -> usize {
        self.table.bytes
    }
}

impl HeadBackend for GpuHead {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn embed(&mut self, tokens: &[u32], out: &mut [f32]) -> Result<(), EngineError> {
        let d = self.config.d_model;
        check_tokens(tokens, self.config.vocab_size)?;
        check_len(out.len(), tokens.len() * d, d)?;
        let g = &*self.ctx;
        for (ids, rows) in tokens.chunks(MAX_BATCH).zip(out.chunks_mut(MAX_BATCH * d)) {
            let step = Step {
                n_tokens: ids.len() as u32,
                ..Default::default()
            };
            g.queue
                .write_buffer(&self.step, 0, bytemuck::bytes_of(&step));
            g.queue
                .write_buffer(&self.tokens, 0, bytemuck::cast_slice(ids));
            let mut enc = g.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                dispatch(
                    &mut pass,
                    &self.embed_k,
                    &self.embed_bg,
                    embed::groups(d, ids.len()),
                );
            }
            self.readback
                .copy_from(&mut enc, &self.embedded, (rows.len() * 4) as u64);
            g.queue.submit([enc.finish()]);
            rows.copy_from_slice(&self.readback.read_f32(g, rows.len())?);
        }
        Ok(())
    }

    fn logits(&mut self, hidden: &[f32], logits: &mut [f32]) -> Result<(), EngineError> {
        check_len(logits.len(), self.config.vocab_size, self.config.d_model)?;
        let mut enc = self.head_pass(hidden, None)?;
        self.readback
            .copy_from(&mut enc, &self.logits, (logits.len() * 4) as u64);
        self.ctx.queue.submit([enc.finish()]);
        logits.copy_from_slice(&self.readback.read_f32(&self.ctx, logits.len())?);
        Ok(())
    }
}

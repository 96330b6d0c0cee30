//! [`GpuHead`]: the embedding, the final norm, the LM head, argmax and sampling on the GPU.

use std::sync::Arc;

use super::{Linear, MAX_BATCH, f32_bytes};
use crate::engine::cpu::{check_len, check_tokens};
use crate::engine::llama;
use crate::engine::{EngineError, HeadBackend};
use crate::gpu::pipeline::dispatch;
use crate::gpu::{GpuContext, Kernel, Readback};
use crate::model::{ModelConfig, WeightSource};
use crate::ops::linear::{self, Extras, GpuWeight, Mode, Shape, Variant};
use crate::ops::sample::{self, SamplingParams};
use crate::ops::{Step, argmax, embed, rmsnorm};

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

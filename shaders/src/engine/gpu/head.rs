//! [`GpuHead`]: the final norm, the LM head, argmax and sampling on the GPU; the
//! embedding looked up on the CPU ([`Embedding`]).
//!
//! An LM head larger than a storage binding (Gemma 3's tied 262144 × 640 Q8_0 table is
//! 168 MB of quants, lavapipe binds at most 128 MiB) is split by rows into parts that each
//! fit ([`split_rows`]), one [`Linear`] per part, all dispatched in one compute pass. Each
//! part writes its own logits buffer, copied into its rows of the whole logits buffer
//! before argmax or sampling read it. Why copies rather than an output-row offset in the
//! linear kernel: the kernel stays as it is (no new constant or uniform, no other caller
//! touched), binding a sub-range of the logits would need offsets aligned to the
//! adapter's `min_storage_buffer_offset_alignment` (up to 256 bytes: 64 rows) which a
//! split need not keep, and the copies move 4 bytes per vocabulary entry where the parts
//! read hundreds per row. One part (every model that fits) writes the logits directly.

use std::ops::Range;
use std::sync::Arc;

use super::{Linear, f32_bytes, fitted};
use crate::engine::cpu::check_len;
use crate::engine::head::Embedding;
use crate::engine::llama;
use crate::engine::{EngineError, HeadBackend};
use crate::gpu::pipeline::dispatch;
use crate::gpu::{GpuContext, GpuError, Kernel, Readback};
use crate::model::{ModelConfig, ModelError, WeightSource};
use crate::ops::linear::{self, Extras, Mode, Shape, Variant};
use crate::ops::sample::{self, SamplingParams};
use crate::ops::{Step, argmax, rmsnorm};

/// How [`GpuHead::with_options`] builds the head; the defaults are what [`GpuHead::new`]
/// uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadOptions {
    /// The LM head's kernel shape (default: [`Shape::for_context`]).
    pub shape: Option<Shape>,
    /// The most bytes one part of the LM head may bind per weight buffer (quants or
    /// scales); capped at (and by default) [`GpuContext::max_storage_binding`]. Smaller
    /// values force splits, for tests.
    pub max_binding: Option<u64>,
}

/// Rows `[start, start + linear's rows)` of the LM head.
struct LmPart {
    start: usize,
    lm: Linear,
    bind: wgpu::BindGroup,
    /// The part's own logits, copied into the whole logits at `start`; `None` where the
    /// part is the whole head and writes the logits directly.
    out: Option<wgpu::Buffer>,
}

/// Final norm, LM head, argmax and sampling on the GPU; the embedding on the CPU.
pub struct GpuHead {
    ctx: Arc<GpuContext>,
    config: ModelConfig,
    embedding: Embedding,
    step: wgpu::Buffer,
    hidden: wgpu::Buffer,
    logits: wgpu::Buffer,
    id_out: wgpu::Buffer,
    sample_params: wgpu::Buffer,
    readback: Readback,
    parts: Vec<LmPart>,
    /// The final RMSNorm as its own dispatch (CPU adapters), else fused into the LM head.
    norm: Option<(Arc<Kernel>, wgpu::BindGroup)>,
    argmax_k: Arc<Kernel>,
    argmax_bg: wgpu::BindGroup,
    sample_k: Arc<Kernel>,
    sample_bg: wgpu::BindGroup,
    _norm_w: wgpu::Buffer,
}

/// Row counts of the parts of a `rows`-row matrix of which at most `max_rows` fit one
/// binding: one part where all fit; else as few parts as fit, of equal size rounded up to
/// a multiple of `granule` (so each part keeps the kernel shape and tiling the whole
/// matrix would get), the last taking what remains. Where a granule does not fit, parts
/// of the even share without rounding (each part's shape is then fitted to it alone).
pub(crate) fn split_rows(rows: usize, max_rows: usize, granule: usize) -> Vec<usize> {
    if rows <= max_rows || max_rows == 0 {
        return vec![rows];
    }
    let granule = granule.max(1);
    let even = rows.div_ceil(rows.div_ceil(max_rows));
    let per = match even.next_multiple_of(granule) {
        aligned if aligned <= max_rows => aligned,
        _ if max_rows >= granule => max_rows / granule * granule,
        _ => even,
    };
    let mut out = vec![per; rows / per];
    if !rows.is_multiple_of(per) {
        out.push(rows % per);
    }
    out
}

impl GpuHead {
    /// The head on `ctx` with its kernel shape and binding limit (see [`HeadOptions`]).
    pub fn new(ctx: Arc<GpuContext>, src: &dyn WeightSource) -> Result<Self, EngineError> {
        Self::with_options(ctx, src, HeadOptions::default())
    }

    pub fn with_options(
        ctx: Arc<GpuContext>,
        src: &dyn WeightSource,
        opts: HeadOptions,
    ) -> Result<Self, EngineError> {
        let c = src.config().clone();
        let (d, vocab) = (c.d_model, c.vocab_size);
        let g = &*ctx;
        let shape = opts.shape.unwrap_or_else(|| Shape::for_context(g));
        let step = g.uniform("head step", 16);
        let hidden = g.storage("final hidden", (d * 4) as u64)?;
        let logits = g.storage("logits", (vocab * 4) as u64)?;
        let id_out = g.storage("token id", 4)?;
        let sample_params = g.uniform("sample params", 16);
        let norm_w = g.storage_init(
            "output_norm",
            f32_bytes(&llama::norm(src, "output_norm.weight", d)?),
        )?;
        let embedding = Embedding::new(src, &c)?;
        let fuse_norm = shape.fuses_norm();
        let lm_v = Variant {
            norm_eps: fuse_norm.then_some(c.rms_eps),
            ..Variant::new(Mode::Store, shape)
        };
        let (normed, norm) = if fuse_norm {
            (None, None)
        } else {
            let normed = g.storage("final normed", (d * 4) as u64)?;
            let k = rmsnorm::kernel(g, d, c.rms_eps)?;
            let unused = &g.unused_buffers()[1];
            let bg = g.bind_group(&k, &[&step, &hidden, &norm_w, &normed, unused]);
            (Some(normed), Some((k, bg)))
        };
        let limit = opts
            .max_binding
            .map_or(g.max_storage_binding(), |l| l.min(g.max_storage_binding()));
        // The tied table is read here from the source's storage, part by part: only one
        // part's packed copy is in process memory at a time.
        let lm_t = llama::lm_head(src, &c)?;
        let row_bytes = lm_t.ty.bytes_for(d).ok_or_else(|| {
            ModelError::Malformed(format!("{}: {} rows of {d}", lm_t.name, lm_t.ty.name()))
        })?;
        let rows = |r: Range<usize>| {
            lm_t.data
                .get(r.start * row_bytes..r.end * row_bytes)
                .ok_or_else(|| {
                    ModelError::Malformed(format!(
                        "{}: rows {r:?} past its {} bytes",
                        lm_t.name,
                        lm_t.data.len()
                    ))
                })
        };
        // Packed bytes per row of the larger buffer (quants or scales), from packing one
        // row: the packing is row by row. Scales are padded to 8 bytes on upload, so the
        // rows must fit the limit rounded down to 8.
        let one = linear::pack(lm_t.ty, rows(0..1.min(vocab))?, 1.min(vocab), d)?;
        let per_row = one.quants.len().max(one.scales.len()).max(1);
        let max_rows = (limit / 8 * 8) as usize / per_row;
        if max_rows == 0 {
            return Err(GpuError::BindingTooLarge {
                label: format!("{} row", lm_t.name),
                size: per_row as u64,
                limit,
            }
            .into());
        }
        let granule = 2 * fitted(lm_v, vocab).shape.rows_per_workgroup() as usize;
        let counts = split_rows(vocab, max_rows, granule);
        let single = counts.len() == 1;
        let x = normed.as_ref().unwrap_or(&hidden);
        let extras = Extras {
            norm: fuse_norm.then_some(&norm_w),
            ..Default::default()
        };
        let mut parts = Vec::with_capacity(counts.len());
        let mut start = 0;
        for n in counts {
            let range = start..start + n;
            let label = if single {
                "output".to_string()
            } else {
                format!("output rows {range:?}")
            };
            let packed = linear::pack(lm_t.ty, rows(range.clone())?, n, d)?;
            let lm = Linear::new(g, packed, &label, lm_v)?;
            let out = if single {
                None
            } else {
                Some(g.storage(&format!("logits {range:?}"), (n * 4) as u64)?)
            };
            let bind = lm.bind(g, &step, x, out.as_ref().unwrap_or(&logits), extras);
            parts.push(LmPart {
                start,
                lm,
                bind,
                out,
            });
            start = range.end;
            // This part's rows are uploaded: their file pages need not stay resident.
            src.release_pages();
        }
        let argmax_k = argmax::kernel(g, vocab)?;
        let argmax_bg = g.bind_group(&argmax_k, &[&logits, &id_out]);
        let sample_k = sample::kernel(g, vocab)?;
        let sample_bg = g.bind_group(&sample_k, &[&sample_params, &logits, &id_out]);
        let readback = Readback::new(g, "head readback", (vocab * 4) as u64);
        src.release_pages();
        Ok(Self {
            config: c,
            embedding,
            step,
            hidden,
            logits,
            id_out,
            sample_params,
            readback,
            parts,
            norm,
            argmax_k,
            argmax_bg,
            sample_k,
            sample_bg,
            _norm_w: norm_w,
            ctx,
        })
    }

    /// Records the final norm and the LM head of `hidden` into a new encoder, optionally
    /// followed by `then` (argmax or sampling) once the logits are whole.
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
        let split = self.parts.len() > 1;
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            if let Some((k, bg)) = &self.norm {
                dispatch(&mut pass, k, bg, rmsnorm::groups(1));
            }
            for p in &self.parts {
                p.lm.record(&mut pass, &p.bind, 1);
            }
            if let (Some((k, bg)), false) = (then, split) {
                dispatch(&mut pass, k, bg, argmax::GROUPS);
            }
        }
        if split {
            for p in &self.parts {
                if let Some(out) = &p.out {
                    let (at, len) = ((p.start * 4) as u64, (p.lm.w.rows * 4) as u64);
                    enc.copy_buffer_to_buffer(out, 0, &self.logits, at, len);
                }
            }
            if let Some((k, bg)) = then {
                let mut pass = enc.begin_compute_pass(&Default::default());
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

    /// Bytes of the packed LM head on the GPU, all parts: what each token's logits read
    /// (the tied embedding table, or `output.weight`; the embedding itself stays on the
    /// CPU).
    pub fn table_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.lm.w.bytes).sum()
    }

    /// The vocabulary rows of each part of the LM head (one part where it fits a binding).
    pub fn lm_parts(&self) -> Vec<Range<usize>> {
        self.parts
            .iter()
            .map(|p| p.start..p.start + p.lm.w.rows)
            .collect()
    }
}

impl HeadBackend for GpuHead {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn embed(&mut self, tokens: &[u32], out: &mut [f32]) -> Result<(), EngineError> {
        self.embedding.lookup(tokens, out)
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

#[cfg(test)]
mod tests {
    use super::split_rows;

    #[test]
    fn split_rows_fit_and_cover() {
        // Fits: one part.
        assert_eq!(split_rows(256, 256, 128), [256]);
        // Even share rounded up to the granule.
        assert_eq!(split_rows(262144, 209715, 256), [131072, 131072]);
        assert_eq!(split_rows(1000, 450, 384), [384, 384, 232]);
        assert_eq!(split_rows(1000, 999, 384), [768, 232]);
        // The rounded share does not fit: as many whole granules as do.
        assert_eq!(split_rows(1000, 500, 384), [384, 384, 232]);
        // No granule fits: the even share.
        assert_eq!(split_rows(256, 93, 256), [86, 86, 84]);
        for (rows, max, granule) in [(128256, 5000, 384), (7, 2, 64), (262144, 1, 1)] {
            let parts = split_rows(rows, max, granule);
            assert_eq!(parts.iter().sum::<usize>(), rows);
            assert!(parts.iter().all(|&p| p > 0 && p <= max), "{parts:?}");
        }
    }
}

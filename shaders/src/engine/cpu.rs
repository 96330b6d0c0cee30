//! The CPU reference backends: the ops' CPU references composed into the exact float32
//! forward pass of Llama-style blocks with their architecture's features
//! ([`CpuBlocks`]: QKV bias, QK-norm, post-norms, GeGLU, sliding windows, RoPE scaling)
//! and of the head ([`CpuHead`]).

use std::collections::HashMap;
use std::ops::Range;

use super::head::Embedding;
use super::llama::{self, block_tensor};
use super::{BlockBackend, EngineError, HeadBackend, SessionId};
use crate::model::{FfnActivation, GgmlType, ModelConfig, RopeStyle, SharedTensor, WeightSource};
use crate::ops::linear::Mode;
use crate::ops::{attention, elementwise, linear, rmsnorm, rope};

/// A matrix in its file format, copied out of the weight source.
struct Matrix {
    ty: GgmlType,
    inp: usize,
    out: usize,
    data: Vec<u8>,
}

impl Matrix {
    fn read(
        src: &dyn WeightSource,
        name: &str,
        inp: usize,
        out: usize,
    ) -> Result<Self, EngineError> {
        let t = llama::linear(src, name, inp, out)?;
        Ok(Self {
            ty: t.ty,
            inp,
            out,
            data: t.data.to_vec(),
        })
    }

    fn apply(&self, mode: Mode, x: &[f32], y: &mut [f32]) -> Result<(), EngineError> {
        linear::reference(self.ty, &self.data, self.out, self.inp, mode, x, y)?;
        Ok(())
    }
}

struct Block {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
    extras: llama::BlockExtras,
    /// Index of this block's RoPE table in `CpuBlocks::rope`.
    rope: usize,
    attention: attention::Options,
}

struct Session {
    max: usize,
    cached: usize,
    /// Per block: K and V, `max × kv_dim` each.
    kv: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Blocks `[start, end)` computed by the CPU references in f32.
pub struct CpuBlocks {
    config: ModelConfig,
    range: Range<usize>,
    blocks: Vec<Block>,
    /// The distinct RoPE tables the blocks rotate with (one, or Gemma 3's local and
    /// global ones).
    rope: Vec<Vec<[f32; 2]>>,
    sessions: HashMap<SessionId, Session>,
}

impl CpuBlocks {
    pub fn new(src: &dyn WeightSource, blocks: Range<usize>) -> Result<Self, EngineError> {
        let c = src.config().clone();
        llama::check_range(&c, &blocks)?;
        let (d, f, qd, kvd) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
        let positions = c.context_length.clamp(1, llama::MAX_POSITIONS);
        let mut tables = llama::RopeTables::default();
        let mut out = Vec::new();
        for b in blocks.clone() {
            let m =
                |what: &str, i: usize, o: usize| Matrix::read(src, &block_tensor(b, what), i, o);
            out.push(Block {
                attn_norm: llama::norm(src, &block_tensor(b, "attn_norm"), d)?,
                ffn_norm: llama::norm(src, &block_tensor(b, "ffn_norm"), d)?,
                q: m("attn_q", d, qd)?,
                k: m("attn_k", d, kvd)?,
                v: m("attn_v", d, kvd)?,
                o: m("attn_output", qd, d)?,
                gate: m("ffn_gate", d, f)?,
                up: m("ffn_up", d, f)?,
                down: m("ffn_down", f, d)?,
                extras: llama::BlockExtras::read(src, &c, b)?,
                rope: tables.index_of(&c, b),
                attention: llama::attention_options(&c, b),
            });
        }
        // The blocks' matrices are copies: the map's pages are not needed resident.
        src.release_pages();
        Ok(Self {
            rope: tables.build(&c, positions),
            config: c,
            range: blocks,
            blocks: out,
            sessions: HashMap::new(),
        })
    }
}

/// Applies RoPE to every head of `n` rows of width `heads × head_dim` (row stride given).
fn rope_rows(
    style: RopeStyle,
    c: &ModelConfig,
    table: &[[f32; 2]],
    start: usize,
    x: &mut [f32],
    width: usize,
) {
    for (t, row) in x.chunks_exact_mut(width).enumerate() {
        rope::reference(style, c.head_dim, table, start + t, row);
    }
}

impl BlockBackend for CpuBlocks {
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
        let kvd = self.config.kv_dim();
        let kv = (0..self.blocks.len())
            .map(|_| {
                (
                    vec![0f32; max_positions * kvd],
                    vec![0f32; max_positions * kvd],
                )
            })
            .collect();
        self.sessions.insert(
            id,
            Session {
                max: max_positions,
                cached: 0,
                kv,
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
        let c = &self.config;
        let n = llama::rows(hidden, c.d_model)?;
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(EngineError::UnknownSession(id))?;
        llama::check_positions(start_pos, n, s.cached, s.max)?;
        let (d, f, qd, kvd) = (c.d_model, c.d_ff, c.q_dim(), c.kv_dim());
        let mut xn = vec![0f32; n * d];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut g = vec![0f32; n * f];
        let mut u = vec![0f32; n * f];
        let mut tmp = vec![0f32; n * d];
        let blocks = self.blocks.iter().zip(s.kv.iter_mut());
        for (blk, (kc, vc)) in blocks.take(span.end).skip(span.start) {
            let x = &blk.extras;
            rmsnorm::reference(hidden, &blk.attn_norm, c.rms_eps, &mut xn);
            blk.q.apply(Mode::Store, &xn, &mut q)?;
            blk.k.apply(Mode::Store, &xn, &mut k)?;
            blk.v.apply(Mode::Store, &xn, &mut v)?;
            if let Some((bq, bk, bv)) = &x.qkv_bias {
                add_bias(&mut q, bq);
                add_bias(&mut k, bk);
                add_bias(&mut v, bv);
            }
            if let Some((nq, nk)) = &x.qk_norm {
                head_norm(&mut q, nq, c.rms_eps);
                head_norm(&mut k, nk, c.rms_eps);
            }
            let table = &self.rope[blk.rope];
            rope_rows(c.rope_style, c, table, start_pos, &mut q, qd);
            rope_rows(c.rope_style, c, table, start_pos, &mut k, kvd);
            kc[start_pos * kvd..(start_pos + n) * kvd].copy_from_slice(&k);
            vc[start_pos * kvd..(start_pos + n) * kvd].copy_from_slice(&v);
            attention::reference_with(
                &q,
                qd,
                kc,
                vc,
                c.n_heads,
                c.n_kv_heads,
                c.head_dim,
                start_pos,
                blk.attention,
                &mut att,
            );
            match &x.post_norms {
                Some((post_attn, _)) => {
                    blk.o.apply(Mode::Store, &att, &mut tmp)?;
                    add_normed(hidden, &tmp, post_attn, c.rms_eps, &mut xn);
                }
                None => blk.o.apply(Mode::Accumulate, &att, hidden)?,
            }
            rmsnorm::reference(hidden, &blk.ffn_norm, c.rms_eps, &mut xn);
            blk.gate.apply(Mode::Store, &xn, &mut g)?;
            blk.up.apply(Mode::Store, &xn, &mut u)?;
            let gate = g.clone();
            let act = match c.features.ffn_activation {
                FfnActivation::Silu => elementwise::Op::SwiGlu,
                FfnActivation::GeluTanh => elementwise::Op::GeGlu,
            };
            elementwise::reference(act, &gate, &u, &mut g);
            match &x.post_norms {
                Some((_, post_ffw)) => {
                    blk.down.apply(Mode::Store, &g, &mut tmp)?;
                    add_normed(hidden, &tmp, post_ffw, c.rms_eps, &mut xn);
                }
                None => blk.down.apply(Mode::Accumulate, &g, hidden)?,
            }
        }
        s.cached = start_pos + n;
        Ok(())
    }
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// RMSNorm of every head of every row (`x` is rows of heads of `w.len()`), in place.
fn head_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let mut out = vec![0f32; x.len()];
    rmsnorm::reference(x, w, eps, &mut out);
    x.copy_from_slice(&out);
}

/// `hidden += rmsnorm(y) ⊙ w` (Gemma's post-norms), `scratch` as wide as `hidden`.
fn add_normed(hidden: &mut [f32], y: &[f32], w: &[f32], eps: f32, scratch: &mut [f32]) {
    rmsnorm::reference(y, w, eps, scratch);
    for (h, v) in hidden.iter_mut().zip(scratch.iter()) {
        *h += v;
    }
}

/// Embedding, final norm and LM head on the CPU. The embedding and LM head are read in
/// place from the weight source's storage (see [`Embedding`]): building the head copies
/// neither.
pub struct CpuHead {
    config: ModelConfig,
    embedding: Embedding,
    /// `output.weight`; `None` when tied (the LM head is the embedding's table).
    lm: Option<SharedTensor>,
    norm: Vec<f32>,
}

impl CpuHead {
    pub fn new(src: &dyn WeightSource) -> Result<Self, EngineError> {
        let c = src.config().clone();
        let embedding = Embedding::new(src, &c)?;
        let lm_t = llama::lm_head(src, &c)?;
        let lm = if lm_t.name == "token_embd.weight" {
            None
        } else {
            Some(src.shared_tensor(lm_t.name)?)
        };
        Ok(Self {
            norm: llama::norm(src, "output_norm.weight", c.d_model)?,
            config: c,
            embedding,
            lm,
        })
    }
}

/// Checks every id against the vocabulary.
pub(crate) fn check_tokens(tokens: &[u32], vocab: usize) -> Result<(), EngineError> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(&id) => Err(EngineError::BadToken { id, vocab }),
        None => Ok(()),
    }
}

/// Checks `out`/`logits` lengths.
pub(crate) fn check_len(len: usize, want: usize, d_model: usize) -> Result<(), EngineError> {
    if len != want {
        return Err(EngineError::BadHiddenShape { len, d_model });
    }
    Ok(())
}

impl HeadBackend for CpuHead {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn embed(&mut self, tokens: &[u32], out: &mut [f32]) -> Result<(), EngineError> {
        self.embedding.lookup(tokens, out)
    }

    fn logits(&mut self, hidden: &[f32], logits: &mut [f32]) -> Result<(), EngineError> {
        let c = &self.config;
        check_len(hidden.len(), c.d_model, c.d_model)?;
        check_len(logits.len(), c.vocab_size, c.d_model)?;
        let mut xn = vec![0f32; c.d_model];
        rmsnorm::reference(hidden, &self.norm, c.rms_eps, &mut xn);
        let w = self.lm.as_ref().unwrap_or(self.embedding.table());
        let (rows, cols) = (c.vocab_size, c.d_model);
        linear::reference(w.ty, w.data(), rows, cols, Mode::Store, &xn, logits)?;
        Ok(())
    }
}

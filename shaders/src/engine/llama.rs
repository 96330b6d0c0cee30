//! What every backend of a Llama-style block agrees on: tensor names and shapes (read with
//! checks from a [`WeightSource`]), the extra tensors of an architecture's block
//! ([`BlockExtras`]), each block's RoPE table and attention options, and the position
//! rules of a session's KV cache.

use std::ops::Range;

use super::EngineError;
use crate::model::quant::dequantize;
use crate::model::{ModelConfig, ModelError, TensorRef, WeightSource};

/// Most positions one RoPE table (and so one session) covers.
pub const MAX_POSITIONS: usize = 32768;

/// The seven matrices and two norms of block `b`, by their GGUF names.
pub fn block_tensor(b: usize, what: &str) -> String {
    format!("blk.{b}.{what}.weight")
}

/// A linear layer `inp -> out` (ggml dims `[inp, out]`).
pub fn linear<'a>(
    src: &'a dyn WeightSource,
    name: &str,
    inp: usize,
    out: usize,
) -> Result<TensorRef<'a>, ModelError> {
    let t = src.tensor(name)?;
    t.expect_dims(&[inp, out])?;
    Ok(t)
}

/// A norm weight of `d` floats, dequantized.
pub fn norm(src: &dyn WeightSource, name: &str, d: usize) -> Result<Vec<f32>, ModelError> {
    let t = src.tensor(name)?;
    t.expect_dims(&[d])?;
    let mut v = vec![0f32; d];
    dequantize(t.ty, t.data, &mut v)?;
    Ok(v)
}

/// A 1-D tensor of `d` floats (a bias) by its full name, dequantized.
pub fn vector(src: &dyn WeightSource, name: &str, d: usize) -> Result<Vec<f32>, ModelError> {
    norm(src, name, d)
}

/// The tensors an architecture's block has beyond the Llama block's nine
/// ([`crate::model::BlockFeatures`]), read once per block.
#[derive(Debug, Clone, Default)]
pub struct BlockExtras {
    /// q, k and v biases (qwen2).
    pub qkv_bias: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    /// Per-head q and k norm weights, head_dim each (qwen3, gemma3).
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Post-attention and post-FFN norm weights (gemma3).
    pub post_norms: Option<(Vec<f32>, Vec<f32>)>,
}

impl BlockExtras {
    pub fn read(src: &dyn WeightSource, c: &ModelConfig, b: usize) -> Result<Self, ModelError> {
        let f = &c.features;
        let (d, qd, kvd, hd) = (c.d_model, c.q_dim(), c.kv_dim(), c.head_dim);
        let bias = |w: &str, n| vector(src, &format!("blk.{b}.{w}.bias"), n);
        Ok(Self {
            qkv_bias: if f.qkv_bias {
                Some((
                    bias("attn_q", qd)?,
                    bias("attn_k", kvd)?,
                    bias("attn_v", kvd)?,
                ))
            } else {
                None
            },
            qk_norm: if f.qk_norm {
                Some((
                    norm(src, &block_tensor(b, "attn_q_norm"), hd)?,
                    norm(src, &block_tensor(b, "attn_k_norm"), hd)?,
                ))
            } else {
                None
            },
            post_norms: if f.post_norms {
                Some((
                    norm(src, &block_tensor(b, "post_attention_norm"), d)?,
                    norm(src, &block_tensor(b, "post_ffw_norm"), d)?,
                ))
            } else {
                None
            },
        })
    }
}

/// The distinct RoPE tables a range of blocks rotates with: one for most models, two
/// for Gemma 3 (local and global layers). Blocks are mapped to an index first; the tables
/// are built for as many positions as a caller needs ([`RopeTables::build`]).
#[derive(Default, Clone)]
pub struct RopeTables {
    keys: Vec<(u32, bool)>,
    /// A block of each table, to build it from.
    blocks: Vec<usize>,
}

impl RopeTables {
    /// The index of block `b`'s table.
    pub fn index_of(&mut self, c: &ModelConfig, b: usize) -> usize {
        let key = (c.rope_theta_of(b).to_bits(), c.window_of(b).is_some());
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return i;
        }
        self.keys.push(key);
        self.blocks.push(b);
        self.blocks.len() - 1
    }

    /// Every table, for positions `0..positions`, by index.
    pub fn build(&self, c: &ModelConfig, positions: usize) -> Vec<Vec<[f32; 2]>> {
        self.blocks
            .iter()
            .map(|&b| crate::ops::rope::block_table(c, b, positions))
            .collect()
    }
}

/// Positions a GPU RoPE table is built for when a session needs `needed`: the next power
/// of two (at least 256), at most the model's context. A table for the whole context
/// (Gemma 3: 32768 positions x 128 pairs, 33.5 MB each) would sit in memory for sessions
/// that use a few hundred positions.
pub fn table_positions(c: &ModelConfig, needed: usize) -> usize {
    let max = c.context_length.clamp(1, MAX_POSITIONS);
    needed.next_power_of_two().max(256).min(max).max(needed)
}

/// Block `b`'s attention: the architecture's scale and, in a local layer, its window.
pub fn attention_options(c: &ModelConfig, b: usize) -> crate::ops::attention::Options {
    crate::ops::attention::Options {
        scale: c.features.attention_scale,
        window: c.window_of(b),
    }
}

/// The LM head: `output.weight`, or `token_embd.weight` when tied (or absent).
pub fn lm_head<'a>(
    src: &'a dyn WeightSource,
    c: &ModelConfig,
) -> Result<TensorRef<'a>, ModelError> {
    let name = if c.tied_embeddings {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    match linear(src, name, c.d_model, c.vocab_size) {
        Err(ModelError::MissingTensor(_)) if !c.tied_embeddings => {
            linear(src, "token_embd.weight", c.d_model, c.vocab_size)
        }
        other => other,
    }
}

pub fn check_range(c: &ModelConfig, blocks: &Range<usize>) -> Result<(), EngineError> {
    if blocks.start > blocks.end || blocks.end > c.n_blocks {
        return Err(EngineError::BadBlockRange {
            start: blocks.start,
            end: blocks.end,
            n_blocks: c.n_blocks,
        });
    }
    Ok(())
}

/// Rows of `hidden`, checked to be whole rows of `d_model`.
pub fn rows(hidden: &[f32], d_model: usize) -> Result<usize, EngineError> {
    if d_model == 0 || !hidden.len().is_multiple_of(d_model) {
        return Err(EngineError::BadHiddenShape {
            len: hidden.len(),
            d_model,
        });
    }
    Ok(hidden.len() / d_model)
}

/// Checks a forward of `n` rows from `start` against a cache holding `cached` of `max`.
pub fn check_positions(
    start: usize,
    n: usize,
    cached: usize,
    max: usize,
) -> Result<(), EngineError> {
    if start > cached {
        return Err(EngineError::PositionGap {
            start,
            end: start + n,
            cached,
        });
    }
    if start + n > max {
        return Err(EngineError::ContextFull {
            needed: start + n,
            max,
        });
    }
    Ok(())
}

/// Positions a session may open: at most the model's context and [`MAX_POSITIONS`].
pub fn check_session_size(c: &ModelConfig, max_positions: usize) -> Result<(), EngineError> {
    let max = c.context_length.clamp(1, MAX_POSITIONS);
    if max_positions == 0 || max_positions > max {
        return Err(EngineError::ContextFull {
            needed: max_positions,
            max,
        });
    }
    Ok(())
}

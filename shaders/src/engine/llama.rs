//! What every backend of a Llama block agrees on: tensor names and shapes (read with
//! checks from a [`WeightSource`]) and the position rules of a session's KV cache.

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

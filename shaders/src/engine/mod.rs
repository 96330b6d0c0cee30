//! The two units the network splits a model along, and the backends that compute them.
//!
//! - A [`BlockBackend`] runs blocks `[start, end)` of a model over hidden states, keeping
//!   one KV cache per session. Backends: the CPU reference ([`cpu`]) and wgpu ([`gpu`]).
//! - A [`HeadBackend`] embeds token ids and turns a final hidden state into logits
//!   (final RMSNorm + LM head).
//!
//! Hidden states are row-major `n_tokens × d_model` f32. A session's positions run
//! `0, 1, 2, ...`: a call to [`BlockBackend::forward`] carries the position of its first
//! row, which must not exceed the number of positions the session's cache already holds
//! (a smaller one rewinds the cache, as a replay after failover does).

use std::ops::Range;

#[cfg(test)]
mod arch_tests;
pub mod cpu;
pub mod gpu;
pub mod llama;
pub mod synthetic;
#[cfg(test)]
mod tests;

pub use cpu::{CpuBlocks, CpuHead};
pub use gpu::{GpuBlocks, GpuHead};

use crate::model::{ModelConfig, ModelError};

/// Identifies one generation's KV cache inside a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "KV cache budget exceeded: session needs {needed} bytes, {available} of {budget} bytes free"
    )]
    KvBudget {
        needed: usize,
        available: usize,
        budget: usize,
    },
    #[error("no session {0:?}")]
    UnknownSession(SessionId),
    #[error("session {0:?} already open")]
    SessionExists(SessionId),
    #[error("position {start}..{end} out of order: the session holds {cached} positions")]
    PositionGap {
        start: usize,
        end: usize,
        cached: usize,
    },
    #[error("context full: {needed} positions needed, the session holds at most {max}")]
    ContextFull { needed: usize, max: usize },
    #[error("hidden state of {len} floats is not a whole number of rows of {d_model}")]
    BadHiddenShape { len: usize, d_model: usize },
    #[error("token id {id} outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("block range {start}..{end} is not inside 0..{n_blocks}")]
    BadBlockRange {
        start: usize,
        end: usize,
        n_blocks: usize,
    },
    #[error("GPU: {0}")]
    Gpu(String),
    /// A remote chain of workers failed (the mesh client's [`BlockChain`]).
    #[error("remote blocks: {0}")]
    Remote(String),
}

/// Computes blocks `[start, end)` of one model.
pub trait BlockBackend: Send {
    fn config(&self) -> &ModelConfig;
    /// The blocks this backend holds.
    fn blocks(&self) -> Range<usize>;
    /// Allocates a KV cache for up to `max_positions` positions.
    fn open_session(&mut self, id: SessionId, max_positions: usize) -> Result<(), EngineError>;
    fn close_session(&mut self, id: SessionId);
    /// Runs the blocks over `hidden` (`n × d_model`) at positions `start_pos..start_pos+n`,
    /// in place, appending to the session's KV cache.
    fn forward(
        &mut self,
        id: SessionId,
        start_pos: usize,
        hidden: &mut [f32],
    ) -> Result<(), EngineError> {
        let all = self.blocks();
        self.forward_span(id, start_pos, hidden, all)
    }
    /// As [`forward`](Self::forward), through blocks `span` only (a sub-range of
    /// [`blocks`](Self::blocks)): a worker serving part of its range to a client that runs
    /// the rest elsewhere. A session must keep to one span.
    fn forward_span(
        &mut self,
        id: SessionId,
        start_pos: usize,
        hidden: &mut [f32],
        span: Range<usize>,
    ) -> Result<(), EngineError>;
}

/// `span` as offsets into a backend holding `blocks`, or the error naming it.
pub(crate) fn local_span(
    span: &Range<usize>,
    blocks: &Range<usize>,
    n_blocks: usize,
) -> Result<Range<usize>, EngineError> {
    if span.is_empty() || span.start < blocks.start || span.end > blocks.end {
        return Err(EngineError::BadBlockRange {
            start: span.start,
            end: span.end,
            n_blocks,
        });
    }
    Ok(span.start - blocks.start..span.end - blocks.start)
}

/// Embedding, final norm and LM head of one model.
pub trait HeadBackend: Send {
    fn config(&self) -> &ModelConfig;
    /// Writes the embeddings of `tokens` into `out` (`tokens.len() × d_model`).
    fn embed(&mut self, tokens: &[u32], out: &mut [f32]) -> Result<(), EngineError>;
    /// Final RMSNorm and LM head of one hidden row into `logits` (`vocab_size`).
    fn logits(&mut self, hidden: &[f32], logits: &mut [f32]) -> Result<(), EngineError>;
}

mod block_range;
pub mod generate;
pub mod head;
pub mod sampler;

pub use block_range::BlockRange;
pub use generate::{BlockChain, GenerateOptions, Generation, LocalChain, generate};
pub use head::Head;
pub use sampler::{Sampler, SamplingParams};

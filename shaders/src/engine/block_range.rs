//! `BlockRange`: blocks `[start, end)` of a model with per-session KV caches under a
//! memory budget. The unit a worker serves; a single node holds one over all blocks.

use std::collections::HashMap;
use std::ops::Range;

use super::{BlockBackend, EngineError, SessionId};
use crate::model::ModelConfig;

pub struct BlockRange {
    backend: Box<dyn BlockBackend>,
    kv_budget_bytes: usize,
    /// KV bytes reserved by each open session.
    sessions: HashMap<SessionId, usize>,
}

impl BlockRange {
    /// Wraps a backend; `kv_budget_bytes` bounds the KV caches of all sessions together.
    pub fn new(backend: Box<dyn BlockBackend>, kv_budget_bytes: usize) -> Self {
        Self {
            backend,
            kv_budget_bytes,
            sessions: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        self.backend.config()
    }

    pub fn blocks(&self) -> Range<usize> {
        self.backend.blocks()
    }

    /// KV cache bytes a session of `max_positions` positions takes in this range.
    pub fn kv_bytes_for(&self, max_positions: usize) -> usize {
        let per_position = self.config().kv_bytes_per_position_per_block() * self.blocks().len();
        per_position.saturating_mul(max_positions)
    }

    /// Bytes of KV budget not reserved by open sessions.
    pub fn free_kv_bytes(&self) -> usize {
        self.kv_budget_bytes
            .saturating_sub(self.sessions.values().sum::<usize>())
    }

    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Reserves a KV cache for up to `max_positions` positions, or fails with
    /// [`EngineError::KvBudget`] when the budget cannot hold it.
    pub fn open_session(&mut self, id: SessionId, max_positions: usize) -> Result<(), EngineError> {
        if self.sessions.contains_key(&id) {
            return Err(EngineError::SessionExists(id));
        }
        let context = self.config().context_length;
        if max_positions > context {
            return Err(EngineError::ContextFull {
                needed: max_positions,
                max: context,
            });
        }
        let needed = self.kv_bytes_for(max_positions);
        let available = self.free_kv_bytes();
        if needed > available {
            return Err(EngineError::KvBudget {
                needed,
                available,
                budget: self.kv_budget_bytes,
            });
        }
        self.backend.open_session(id, max_positions)?;
        self.sessions.insert(id, needed);
        Ok(())
    }

    pub fn close_session(&mut self, id: SessionId) {
        if self.sessions.remove(&id).is_some() {
            self.backend.close_session(id);
        }
    }

    /// Runs the blocks over `hidden` (`n × d_model`, row-major) at positions
    /// `start_pos..start_pos + n`, in place.
    pub fn forward(
        &mut self,
        id: SessionId,
        start_pos: usize,
        hidden: &mut [f32],
    ) -> Result<(), EngineError> {
        let all = self.blocks();
        self.forward_span(id, start_pos, hidden, all)
    }

    /// As [`forward`](Self::forward), through blocks `span` ⊆ [`blocks`](Self::blocks) only.
    pub fn forward_span(
        &mut self,
        id: SessionId,
        start_pos: usize,
        hidden: &mut [f32],
        span: Range<usize>,
    ) -> Result<(), EngineError> {
        if !self.sessions.contains_key(&id) {
            return Err(EngineError::UnknownSession(id));
        }
        let d_model = self.config().d_model;
        if hidden.is_empty() || !hidden.len().is_multiple_of(d_model) {
            return Err(EngineError::BadHiddenShape {
                len: hidden.len(),
                d_model,
            });
        }
        self.backend.forward_span(id, start_pos, hidden, span)
    }
}

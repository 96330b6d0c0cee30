//! The autoregressive loop: prefill the prompt, then decode one token at a time through
//! a chain of blocks, choosing each token with a [`Sampler`].
//!
//! The chain is abstract ([`BlockChain`]) so that one loop serves a single node (local
//! [`BlockRange`]s in sequence) and the mesh client (remote workers along a route).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::sampler::Sampler;
use super::{BlockRange, EngineError, HeadBackend, SessionId};

/// Blocks `[0, n_blocks)` of a model, in order, for one session.
pub trait BlockChain {
    /// Runs every block over `hidden` (`n × d_model`) at positions `start_pos..start_pos+n`.
    fn forward(&mut self, start_pos: usize, hidden: &mut [f32]) -> Result<(), EngineError>;
}

/// Local block ranges run one after another, all under one session id.
pub struct LocalChain<'a> {
    pub ranges: &'a mut [BlockRange],
    pub session: SessionId,
}

impl<'a> LocalChain<'a> {
    /// Opens `session` with room for `max_positions` on every range; closes what it
    /// opened if one range refuses.
    pub fn open(
        ranges: &'a mut [BlockRange],
        session: SessionId,
        max_positions: usize,
    ) -> Result<Self, EngineError> {
        check_coverage(ranges)?;
        for i in 0..ranges.len() {
            if let Err(e) = ranges[i].open_session(session, max_positions) {
                ranges[..i]
                    .iter_mut()
                    .for_each(|r| r.close_session(session));
                return Err(e);
            }
        }
        Ok(Self { ranges, session })
    }
}

impl Drop for LocalChain<'_> {
    fn drop(&mut self) {
        for range in self.ranges.iter_mut() {
            range.close_session(self.session);
        }
    }
}

impl BlockChain for LocalChain<'_> {
    fn forward(&mut self, start_pos: usize, hidden: &mut [f32]) -> Result<(), EngineError> {
        for range in self.ranges.iter_mut() {
            range.forward(self.session, start_pos, hidden)?;
        }
        Ok(())
    }
}

/// Ranges must be contiguous and cover `[0, n_blocks)`.
fn check_coverage(ranges: &[BlockRange]) -> Result<(), EngineError> {
    let Some(first) = ranges.first() else {
        return Err(EngineError::BadBlockRange {
            start: 0,
            end: 0,
            n_blocks: 0,
        });
    };
    let n_blocks = first.config().n_blocks;
    let mut next = 0;
    for r in ranges {
        let b = r.blocks();
        if b.start != next || b.end > n_blocks || b.is_empty() {
            return Err(EngineError::BadBlockRange {
                start: b.start,
                end: b.end,
                n_blocks,
            });
        }
        next = b.end;
    }
    if next != n_blocks {
        return Err(EngineError::BadBlockRange {
            start: next,
            end: n_blocks,
            n_blocks,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    /// Logits at the first generated position (after the prompt).
    #[serde(skip)]
    pub first_logits: Vec<f32>,
    #[serde(skip)]
    pub prefill_time: Duration,
    #[serde(skip)]
    pub decode_time: Duration,
    /// Whether generation ended on a stop token (which is not in `token_ids`).
    pub stopped: bool,
}

impl Generation {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_token_ids.len() as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Tokens decoded after the first one, per second of decoding.
    pub fn decode_tokens_per_second(&self) -> f64 {
        let decoded = self.token_ids.len().saturating_sub(1) as f64;
        decoded / self.decode_time.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second of the whole generation, prefill included.
    pub fn tokens_per_second(&self) -> f64 {
        let total = self.prefill_time + self.decode_time;
        self.token_ids.len() as f64 / total.as_secs_f64().max(1e-9)
    }
}

pub struct GenerateOptions<'a> {
    pub max_new_tokens: usize,
    /// Token ids that end the generation (not emitted).
    pub stop_ids: &'a [u32],
}

/// Generates up to `max_new_tokens` after `prompt`, calling `on_token` with each new
/// token as soon as it is chosen; `on_token` returning `false` stops early.
pub fn generate(
    head: &mut dyn HeadBackend,
    chain: &mut dyn BlockChain,
    sampler: &mut Sampler,
    prompt: &[u32],
    options: &GenerateOptions<'_>,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation, EngineError> {
    let config = head.config().clone();
    let d = config.d_model;
    let needed = prompt.len() + options.max_new_tokens;
    if prompt.is_empty() {
        return Err(EngineError::BadHiddenShape { len: 0, d_model: d });
    }
    if needed > config.context_length {
        return Err(EngineError::ContextFull {
            needed,
            max: config.context_length,
        });
    }
    let mut logits = vec![0.0f32; config.vocab_size];
    let started = Instant::now();
    let mut hidden = vec![0.0f32; prompt.len() * d];
    head.embed(prompt, &mut hidden)?;
    chain.forward(0, &mut hidden)?;
    head.logits(&hidden[(prompt.len() - 1) * d..], &mut logits)?;
    let first_logits = logits.clone();
    let prefill_time = started.elapsed();

    let decode_started = Instant::now();
    let mut token_ids = Vec::with_capacity(options.max_new_tokens);
    let mut stopped = false;
    let mut row = vec![0.0f32; d];
    while token_ids.len() < options.max_new_tokens {
        let next = sampler.sample(&logits);
        if options.stop_ids.contains(&next) {
            stopped = true;
            break;
        }
        token_ids.push(next);
        if !on_token(next) || token_ids.len() == options.max_new_tokens {
            break;
        }
        head.embed(&[next], &mut row)?;
        chain.forward(prompt.len() + token_ids.len() - 1, &mut row)?;
        head.logits(&row, &mut logits)?;
    }
    Ok(Generation {
        prompt_token_ids: prompt.to_vec(),
        token_ids,
        first_logits,
        prefill_time,
        decode_time: decode_started.elapsed(),
        stopped,
    })
}

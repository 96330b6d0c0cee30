//! Block placement: how many workers and how much throughput the swarm has on each
//! block, and which span a new worker started with `--blocks auto` should serve.

use super::{Candidate, RouteError};
use crate::units::BlockRange;

/// Most blocks a model (and so a route request or a placement) may have. The largest
/// public models have about 130 transformer blocks.
pub const MAX_BLOCKS: u32 = 1024;

/// Workers serving each block of a model of `n_blocks` blocks (announced spans are
/// clipped to the model). `n_blocks` is the local model's, which sizes the result.
pub fn coverage(cands: &[Candidate], n_blocks: u32) -> Vec<u32> {
    span_coverage(cands.iter().map(|c| c.blocks), n_blocks)
}

/// Spans serving each block of a model of `n_blocks` blocks (each clipped to the model).
pub fn span_coverage(spans: impl IntoIterator<Item = BlockRange>, n_blocks: u32) -> Vec<u32> {
    let mut count = vec![0u32; n_blocks as usize];
    for span in spans {
        for b in clipped(span, n_blocks) {
            count[b] = count[b].saturating_add(1);
        }
    }
    count
}

/// The swarm's throughput on each block in tokens per second: the sum of the measured
/// throughputs of the workers whose span covers it (every token a worker processes
/// passes through each of its blocks).
pub fn per_block_throughput(n_blocks: u32, others: &[Candidate]) -> Vec<f64> {
    milli_per_block(n_blocks, others)
        .into_iter()
        .map(|m| m as f64 / 1000.0)
        .collect()
}

/// The span of `span_len` blocks that a new worker of `my_milli_tps` should serve: the
/// one that leaves the swarm's minimum per-block throughput highest. Spans that tie on
/// the minimum are compared on the next-weakest blocks (the sorted per-block vectors,
/// lexicographically: leximin), so that a second worker on an empty 30-block model takes
/// `[10, 20)` rather than doubling `[0, 10)`; exact ties go to the lowest start.
/// Throughputs are summed exactly in integer milli-tokens per second.
pub fn choose_span(
    n_blocks: u32,
    span_len: u32,
    others: &[Candidate],
    my_milli_tps: u64,
) -> Result<BlockRange, RouteError> {
    if n_blocks > MAX_BLOCKS {
        return Err(RouteError::TooManyBlocks {
            blocks: n_blocks,
            max: MAX_BLOCKS,
        });
    }
    if n_blocks == 0 || span_len == 0 || span_len > n_blocks {
        return Err(RouteError::InvalidSpan { span_len, n_blocks });
    }
    let base = milli_per_block(n_blocks, others);
    let mine = u128::from(my_milli_tps);
    let mut best: Option<(u32, Vec<u128>)> = None;
    let mut trial = Vec::with_capacity(base.len());
    for start in 0..=n_blocks - span_len {
        trial.clear();
        trial.extend_from_slice(&base);
        for t in &mut trial[start as usize..(start + span_len) as usize] {
            *t += mine;
        }
        trial.sort_unstable();
        // Strictly better only: an equal vector keeps the lower start.
        if best.as_ref().is_none_or(|(_, b)| trial > *b) {
            best = Some((start, trial.clone()));
        }
    }
    let (start, _) = best.expect("n_blocks >= span_len >= 1, so at least one start exists");
    BlockRange::new(start, start + span_len)
        .map_err(|_| RouteError::InvalidSpan { span_len, n_blocks })
}

/// A worker as placement should weigh it: one that has not measured its speed yet
/// (throughput 0) still covers its blocks, with the least weight (1 milli-token/s), so a
/// new worker prefers blocks nobody serves over blocks an unmeasured worker serves.
/// How many blocks fit in `room` bytes wherever the span lands: the heaviest of
/// `block_bytes` (each block's weight bytes) counted first, so any span of that length
/// fits (the span length for `--blocks auto` under a memory cap).
pub fn blocks_that_fit(block_bytes: &[u64], room: u64) -> u32 {
    let mut sorted = block_bytes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut used = 0u64;
    sorted
        .iter()
        .take_while(|b| {
            used = used.saturating_add(**b);
            used <= room
        })
        .count() as u32
}

pub fn placement_candidate(c: Candidate) -> Candidate {
    Candidate {
        throughput_milli_tps: c.throughput_milli_tps.max(1),
        ..c
    }
}

/// Per-block throughput in milli-tokens per second, exact.
fn milli_per_block(n_blocks: u32, others: &[Candidate]) -> Vec<u128> {
    let mut sum = vec![0u128; n_blocks as usize];
    for c in others {
        for b in clipped(c.blocks, n_blocks) {
            sum[b] += u128::from(c.throughput_milli_tps);
        }
    }
    sum
}

fn clipped(blocks: BlockRange, n_blocks: u32) -> std::ops::Range<usize> {
    let end = blocks.end().min(n_blocks) as usize;
    (blocks.start() as usize).min(end)..end
}

//! Which hops the planner considers: eligibility (exclusions, scores, spans the request
//! can use), then pruning of hops that at least `k` others offering the same blocks beat
//! on both time and price (see the module docs of `route` for why this keeps every
//! optimum).

use std::cmp::{Ordering, Reverse};
use std::collections::HashSet;

use super::cost::HopTime;
use super::{Candidate, CostModel, RouteError, RouteRequest};
use crate::PeerId;

/// An eligible candidate, with its usable span as offsets from the request's start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usable {
    /// Index into the caller's candidate slice.
    pub cand: u32,
    /// Usable span `[start, end)`, offsets from `req.blocks.start()`.
    pub start: u32,
    pub end: u32,
    pub time: HopTime,
    pub price: u64,
    pub prompt: u64,
}

/// The candidates a route may use, each with its usable span.
pub(crate) fn eligible(
    cands: &[Candidate],
    req: &RouteRequest,
    model: &CostModel,
) -> Result<Vec<Usable>, RouteError> {
    if u32::try_from(cands.len()).is_err() {
        return Err(RouteError::TooManyCandidates { count: cands.len() });
    }
    let (rs, re) = (req.blocks.start(), req.blocks.end());
    let excluded: HashSet<&PeerId> = req.exclude.iter().collect();
    let mut out = Vec::with_capacity(cands.len());
    for (i, c) in cands.iter().enumerate() {
        // NaN scores (or a NaN minimum) fail this comparison and are skipped.
        let scored_enough = c.score >= req.min_score;
        if !scored_enough || (!excluded.is_empty() && excluded.contains(&c.peer)) {
            continue;
        }
        let (cs, ce) = (c.blocks.start(), c.blocks.end());
        let (start, end) = if req.allow_partial {
            (cs.max(rs), ce.min(re))
        } else if rs <= cs && ce <= re {
            (cs, ce)
        } else {
            continue;
        };
        if start >= end {
            continue;
        }
        let Some(time) = HopTime::of(c, req, model) else {
            continue;
        };
        out.push(Usable {
            cand: i as u32,
            start: start - rs,
            end: end - rs,
            time,
            price: c.prices.completion.0,
            prompt: c.prices.prompt.0,
        });
    }
    Ok(out)
}

/// With `allow_partial`, a first cut before sub-spans are enumerated: among candidates
/// with the same usable span, drops one when `k` kept ones have no larger fixed cost, no
/// lower block rate and no higher price (so they are no worse on every sub-span).
pub(crate) fn prune_groups(mut usable: Vec<Usable>, cands: &[Candidate], k: usize) -> Vec<Usable> {
    usable.sort_unstable_by(|a, b| {
        (
            a.start,
            a.end,
            a.time.fixed_ps,
            Reverse(a.time.block_rate),
            a.price,
        )
            .cmp(&(
                b.start,
                b.end,
                b.time.fixed_ps,
                Reverse(b.time.block_rate),
                b.price,
            ))
            .then_with(|| candidate_order(cands, a.cand, b.cand))
    });
    let mut kept = Vec::with_capacity(usable.len().min(1 << 16));
    let mut group: Vec<(u128, u64)> = Vec::new();
    let mut current = None;
    for u in usable {
        if current != Some((u.start, u.end)) {
            current = Some((u.start, u.end));
            group.clear();
        }
        let (rate, price) = (u.time.block_rate, u.price);
        let dominators = group
            .iter()
            .filter(|&&(r, p)| r >= rate && p <= price)
            .take(k)
            .count();
        if dominators < k {
            group.push((rate, price));
            kept.push(u);
        }
    }
    kept
}

/// A hop a route may take: usable candidate `usable` running from the boundary it is
/// listed under to `end` (offsets).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HopOption {
    pub end: u32,
    pub usable: u32,
    pub time: u128,
    pub price: u64,
}

/// Sorts the hops starting at one boundary by (end, time, price, peer) and keeps, per
/// end, those that fewer than `k` kept ones match or beat on both time and price.
pub(crate) fn prune_options(
    options: &mut Vec<HopOption>,
    usable: &[Usable],
    cands: &[Candidate],
    k: usize,
) {
    options.sort_unstable_by(|a, b| {
        (a.end, a.time, a.price)
            .cmp(&(b.end, b.time, b.price))
            .then_with(|| {
                candidate_order(
                    cands,
                    usable[a.usable as usize].cand,
                    usable[b.usable as usize].cand,
                )
            })
    });
    // The k smallest prices kept so far for the current end, ascending.
    let mut prices: Vec<u64> = Vec::with_capacity(k);
    let mut current = None;
    options.retain(|o| {
        if current != Some(o.end) {
            current = Some(o.end);
            prices.clear();
        }
        if prices.len() == k && prices[k - 1] <= o.price {
            return false;
        }
        let at = prices.partition_point(|&p| p <= o.price);
        prices.insert(at, o.price);
        prices.truncate(k);
        true
    });
}

/// Candidates in peer id order, then (for a peer listed twice) in slice order.
pub(crate) fn candidate_order(cands: &[Candidate], a: u32, b: u32) -> Ordering {
    cands[a as usize]
        .peer
        .cmp(&cands[b as usize].peer)
        .then(a.cmp(&b))
}

//! Which candidates the planner considers: eligibility (exclusions, scores, spans the
//! request can use) and pruning of candidates that offer the same hops as at least `T`
//! others that are no slower and no dearer (see the module docs of `route` for why this
//! keeps every optimum).

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

/// The candidates a route may use, each with its usable span. Errors when an eligible
/// peer appears twice (the planner's one-hop-per-peer rule needs unique peers).
pub(crate) fn eligible(
    cands: &[Candidate],
    req: &RouteRequest,
    model: &CostModel,
) -> Result<Vec<Usable>, RouteError> {
    let (rs, re) = (req.blocks.start(), req.blocks.end());
    let excluded: HashSet<&PeerId> = req.exclude.iter().collect();
    let mut seen: HashSet<&PeerId> = HashSet::with_capacity(cands.len());
    let mut out = Vec::with_capacity(cands.len());
    for (i, c) in cands.iter().enumerate() {
        // NaN scores fail this comparison and are skipped.
        if !(c.score >= req.min_score) || excluded.contains(&c.peer) {
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
        if !seen.insert(&c.peer) {
            return Err(RouteError::DuplicatePeer { peer: c.peer });
        }
        let cand =
            u32::try_from(i).map_err(|_| RouteError::TooManyCandidates { count: cands.len() })?;
        out.push(Usable {
            cand,
            start: start - rs,
            end: end - rs,
            time,
            price: c.prices.completion.0,
            prompt: c.prices.prompt.0,
        });
    }
    Ok(out)
}

/// Drops candidates that cannot be part of any of the `k` best routes: within a group
/// offering the same hops, a candidate goes when at least `T` kept ones are no slower on
/// any hop and no dearer, `T` being the number of hops a route can take from the group
/// plus `k - 1`. Groups are announced spans (without `allow_partial`, a route takes at
/// most one hop from a span) or usable spans (with it, at most `min(max_hops, len)`).
pub(crate) fn prune(
    mut usable: Vec<Usable>,
    cands: &[Candidate],
    req: &RouteRequest,
    k: usize,
) -> Vec<Usable> {
    let partial = req.allow_partial;
    // Sort key after the group: no slower first, then no dearer, then lower peer id, so
    // that every kept candidate before another that is no worse in all criteria
    // dominates it, ties included.
    let key = |u: &Usable| -> (u32, u32, u128, Reverse<u128>, u64) {
        if partial {
            (
                u.start,
                u.end,
                u.time.fixed_ps,
                Reverse(u.time.block_rate),
                u.price,
            )
        } else {
            (
                u.start,
                u.end,
                u.time.for_len(u.end - u.start),
                Reverse(0),
                u.price,
            )
        }
    };
    usable.sort_unstable_by(|a, b| {
        key(a)
            .cmp(&key(b))
            .then_with(|| peer_order(cands, a.cand, b.cand))
    });
    let mut kept = Vec::with_capacity(usable.len().min(4096));
    let mut group: Vec<(u128, u64)> = Vec::new();
    let mut current = None;
    for u in usable {
        if current != Some((u.start, u.end)) {
            current = Some((u.start, u.end));
            group.clear();
        }
        let len = (u.end - u.start) as usize;
        let threshold = if partial {
            req.max_hops.min(len).max(1) + k - 1
        } else {
            k
        };
        let rate = if partial { u.time.block_rate } else { 0 };
        let price = u.price;
        let dominators = group
            .iter()
            .filter(|&&(r, p)| r >= rate && p <= price)
            .take(threshold)
            .count();
        if dominators >= threshold {
            continue;
        }
        group.push((rate, price));
        kept.push(u);
    }
    kept
}

pub(crate) fn peer_order(cands: &[Candidate], a: u32, b: u32) -> Ordering {
    cands[a as usize].peer.cmp(&cands[b as usize].peer)
}

//! The exact planner: the label-setting search over the hop graph (`graph.rs`) that
//! keeps, at each boundary, the route prefixes not dominated by `k` others.

use std::cmp::Ordering;

use super::graph::HopGraph;
use super::prune::{self, Usable};
use super::{Candidate, CostModel, Hop, MAX_BLOCKS, Route, RouteCost, RouteError, RouteRequest};
use super::{cost::ps_to_us, diagnose};
use crate::units::{BlockRange, NanoTon};

/// A kept route prefix ending at boundary `at`.
struct Label {
    time: u128,
    price: u128,
    prompt: u128,
    hops: u32,
    at: u32,
    /// Index of the previous label; `NONE` for the root.
    parent: u32,
    /// The usable candidate of the last hop; `NONE` for the root.
    usable: u32,
    /// In the exact fallback only: the peers used so far that could still start a later
    /// hop, as sorted peer ranks. Empty in the relaxation.
    live: Vec<u32>,
}

/// A route prefix generated for a boundary, not yet compared with the others there.
#[derive(Clone, Copy)]
struct Pending {
    time: u128,
    price: u128,
    prompt: u128,
    hops: u32,
    parent: u32,
    usable: u32,
}

const NONE: u32 = u32::MAX;

/// The `k` best routes, best first; never empty on `Ok`.
///
/// The search itself allows a peer twice (the relaxation); its `k'` best routes, in
/// order, are filtered to those with distinct peers. When fewer than `k` survive and the
/// relaxation had more routes to give, it runs again with four times `k'`. Exact: the
/// `k'` best relaxed routes contain every valid route ranked among them.
pub(crate) fn plan_best(
    cands: &[Candidate],
    req: &RouteRequest,
    model: &CostModel,
    k: usize,
) -> Result<Vec<Route>, RouteError> {
    let len = req.blocks.len();
    if len == 0 {
        return Err(RouteError::EmptyRequest);
    }
    if len > MAX_BLOCKS {
        return Err(RouteError::TooManyBlocks {
            blocks: len,
            max: MAX_BLOCKS,
        });
    }
    let eligible = prune::eligible(cands, req, model)?;
    let mut width = k;
    for _ in 0..RELAXED_ROUNDS {
        let grouped;
        let usable: &[Usable] = if req.allow_partial {
            grouped = prune::prune_groups(eligible.clone(), cands, width);
            &grouped
        } else {
            &eligible
        };
        let graph = HopGraph::build(usable, cands, len, req.allow_partial, width);
        let relaxed = Search::new(cands, req, usable, &graph, width, None).run();
        let exhausted = relaxed.len() < width;
        let mut routes: Vec<Route> = relaxed.into_iter().filter(distinct_peers).collect();
        if routes.len() >= k || exhausted {
            if routes.is_empty() {
                return Err(diagnose::why_no_route(&graph, req));
            }
            routes.truncate(k);
            return Ok(routes);
        }
        width = width.saturating_mul(4);
    }
    // Fallback: the relaxation keeps preferring routes that reuse a peer. Search with
    // the one-hop-per-peer rule inside the labels, on the unpruned hops.
    let graph = HopGraph::build(&eligible, cands, len, req.allow_partial, usize::MAX);
    let peers = PeerRanks::new(cands, &eligible, req.allow_partial);
    let mut routes = Search::new(cands, req, &eligible, &graph, k, Some(peers)).run();
    if routes.is_empty() {
        return Err(diagnose::why_no_route(&graph, req));
    }
    routes.truncate(k);
    Ok(routes)
}

/// How many widths (k, 4k, 16k, 64k) the relaxation tries before the exact fallback.
const RELAXED_ROUNDS: usize = 4;

/// Peers as dense ranks, and the last boundary at which each could start a hop.
struct PeerRanks {
    /// Per usable candidate, its peer's rank.
    rank: Vec<u32>,
    /// Per rank, the last boundary (offset) any of its candidates can start a hop at.
    last_start: Vec<u32>,
}

impl PeerRanks {
    fn new(cands: &[Candidate], usable: &[Usable], partial: bool) -> PeerRanks {
        let mut order: Vec<u32> = (0..usable.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            cands[usable[a as usize].cand as usize]
                .peer
                .cmp(&cands[usable[b as usize].cand as usize].peer)
        });
        let mut rank = vec![0u32; usable.len()];
        let mut last_start: Vec<u32> = Vec::new();
        let mut previous = None;
        for &i in &order {
            let u = &usable[i as usize];
            let peer = &cands[u.cand as usize].peer;
            if previous != Some(peer) {
                previous = Some(peer);
                last_start.push(0);
            }
            let r = last_start.len() - 1;
            let start = if partial { u.end - 1 } else { u.start };
            last_start[r] = last_start[r].max(start);
            rank[i as usize] = r as u32;
        }
        PeerRanks { rank, last_start }
    }
}

fn distinct_peers(route: &Route) -> bool {
    route
        .hops
        .iter()
        .enumerate()
        .all(|(i, h)| route.hops[..i].iter().all(|g| g.peer != h.peer))
}

struct Search<'a> {
    cands: &'a [Candidate],
    req: &'a RouteRequest,
    usable: &'a [Usable],
    graph: &'a HopGraph,
    k: usize,
    /// Whether price and hops take part in dominance (a cap exists; the hop limit can
    /// bind, i.e. is below the number of blocks).
    price_matters: bool,
    hops_matter: bool,
    /// `Some` in the exact fallback: labels track their live peers and never reuse one.
    peers: Option<PeerRanks>,
    arena: Vec<Label>,
}

impl<'a> Search<'a> {
    fn new(
        cands: &'a [Candidate],
        req: &'a RouteRequest,
        usable: &'a [Usable],
        graph: &'a HopGraph,
        k: usize,
        peers: Option<PeerRanks>,
    ) -> Self {
        Search {
            cands,
            req,
            usable,
            graph,
            k,
            price_matters: req.price_cap.is_some(),
            hops_matter: req.max_hops < graph.len as usize,
            peers,
            arena: Vec::new(),
        }
    }

    /// The `k` best routes, best first: of the relaxation (a peer may serve several
    /// hops) or, with `peers`, of the exact problem.
    fn run(mut self) -> Vec<Route> {
        let n = self.graph.len as usize;
        let (min_hops, min_price) = self.graph.bounds_to_end();
        let cap = self.req.price_cap.map(|c| u128::from(c.0));
        let max_hops = u32::try_from(self.req.max_hops).unwrap_or(u32::MAX);
        if min_hops[0] == u32::MAX || min_hops[0] > max_hops {
            return Vec::new();
        }
        if cap.is_some_and(|cap| min_price[0] > cap) {
            return Vec::new();
        }
        self.arena.push(Label {
            time: 0,
            price: 0,
            prompt: 0,
            hops: 0,
            at: 0,
            parent: NONE,
            usable: NONE,
            live: Vec::new(),
        });
        let mut pending: Vec<Vec<Pending>> = vec![Vec::new(); n + 1];
        let mut at_boundary: Vec<u32> = vec![0];
        for o in 0..n {
            if o > 0 {
                let arrived = std::mem::take(&mut pending[o]);
                at_boundary = self.select(o as u32, arrived);
            }
            for &l in &at_boundary {
                let label = &self.arena[l as usize];
                for opt in &self.graph.from[o] {
                    let e = opt.end as usize;
                    let hops = label.hops + 1;
                    if min_hops[e] == u32::MAX || hops.saturating_add(min_hops[e]) > max_hops {
                        continue;
                    }
                    let price = label.price + u128::from(opt.price);
                    if cap.is_some_and(|cap| price.saturating_add(min_price[e]) > cap) {
                        continue;
                    }
                    if self.reuses_peer(label, opt.usable) {
                        continue;
                    }
                    let u = &self.usable[opt.usable as usize];
                    pending[e].push(Pending {
                        time: label.time + opt.time,
                        price,
                        prompt: label.prompt + u128::from(u.prompt),
                        hops,
                        parent: l,
                        usable: opt.usable,
                    });
                }
            }
        }
        let mut finished = std::mem::take(&mut pending[n]);
        finished.sort_unstable_by(|a, b| self.key_order(a, b, n as u32));
        finished.truncate(self.k);
        finished.iter().map(|p| self.route(p, n as u32)).collect()
    }

    /// In the exact fallback, whether extending `label` with `usable` would use a peer
    /// twice (a used peer that can still start a hop here is in the label's live set).
    /// The relaxation allows it.
    fn reuses_peer(&self, label: &Label, usable: u32) -> bool {
        self.peers.as_ref().is_some_and(|peers| {
            label
                .live
                .binary_search(&peers.rank[usable as usize])
                .is_ok()
        })
    }

    /// Keeps the prefixes arriving at boundary `o` that fewer than `k` kept ones
    /// dominate (precede in the planner's order, no dearer when a cap exists, no more
    /// hops when the limit can bind, and in the fallback no live peer the other lacks);
    /// returns their arena indices.
    fn select(&mut self, o: u32, mut arrived: Vec<Pending>) -> Vec<u32> {
        arrived.sort_unstable_by(|a, b| self.key_order(a, b, o));
        let buckets = if self.hops_matter {
            self.req.max_hops.min(self.graph.len as usize) + 1
        } else {
            1
        };
        // Per hop count, the k smallest prices among kept labels with no live peer,
        // ascending; kept labels with live peers are checked one by one.
        let mut kept_prices: Vec<Vec<u128>> = vec![Vec::new(); buckets];
        let mut kept_live: Vec<(u128, usize, u32)> = Vec::new();
        let mut kept = Vec::new();
        for p in arrived {
            let price = if self.price_matters { p.price } else { 0 };
            let bucket = if self.hops_matter { p.hops as usize } else { 0 };
            let live = self.live_after(p.parent, p.usable, o);
            let mut count = 0;
            for prices in &kept_prices[..=bucket] {
                count += prices.iter().take_while(|&&q| q <= price).count();
                if count >= self.k {
                    break;
                }
            }
            for &(q, h, idx) in &kept_live {
                if count >= self.k {
                    break;
                }
                if q <= price && h <= bucket && is_subset(&self.arena[idx as usize].live, &live) {
                    count += 1;
                }
            }
            if count >= self.k {
                continue;
            }
            let idx = self.arena.len() as u32;
            if live.is_empty() {
                let prices = &mut kept_prices[bucket];
                let at = prices.partition_point(|&q| q <= price);
                prices.insert(at, price);
                prices.truncate(self.k);
            } else {
                kept_live.push((price, bucket, idx));
            }
            kept.push(idx);
            self.arena.push(Label {
                time: p.time,
                price: p.price,
                prompt: p.prompt,
                hops: p.hops,
                at: o,
                parent: p.parent,
                usable: p.usable,
                live,
            });
        }
        kept
    }

    /// In the fallback, the live peers of label `parent` extended with `usable`, at
    /// boundary `o`: used peers that could still start a hop at `o` or later. Empty in
    /// the relaxation.
    fn live_after(&self, parent: u32, usable: u32, o: u32) -> Vec<u32> {
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        let alive = |r: u32| peers.last_start[r as usize] >= o;
        let mut live: Vec<u32> = self.arena[parent as usize]
            .live
            .iter()
            .copied()
            .filter(|&r| alive(r))
            .collect();
        let r = peers.rank[usable as usize];
        if alive(r)
            && let Err(at) = live.binary_search(&r)
        {
            live.insert(at, r);
        }
        live
    }

    /// The planner's total order on prefixes ending at the same boundary `o`: time, then
    /// price, then hops, then the hops' (peer, end) sequence.
    fn key_order(&self, a: &Pending, b: &Pending, o: u32) -> Ordering {
        (a.time, a.price, a.hops)
            .cmp(&(b.time, b.price, b.hops))
            .then_with(|| {
                let sa = self.hop_sequence(a.parent, a.usable, o);
                let sb = self.hop_sequence(b.parent, b.usable, o);
                sa.iter()
                    .zip(&sb)
                    .map(|(&(ca, ea), &(cb, eb))| {
                        prune::candidate_order(self.cands, ca, cb).then(ea.cmp(&eb))
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
    }

    /// The (candidate index, end offset) of every hop of label `parent` extended with
    /// `usable` up to `o`, first hop first.
    fn hop_sequence(&self, parent: u32, usable: u32, o: u32) -> Vec<(u32, u32)> {
        let mut seq = vec![(self.usable[usable as usize].cand, o)];
        let mut l = parent;
        while l != NONE {
            let label = &self.arena[l as usize];
            if label.usable != NONE {
                seq.push((self.usable[label.usable as usize].cand, label.at));
            }
            l = label.parent;
        }
        seq.reverse();
        seq
    }

    fn route(&self, p: &Pending, o: u32) -> Route {
        let base = self.req.blocks.start();
        let mut hops = Vec::with_capacity(p.hops as usize);
        let mut end = o;
        let mut usable = p.usable;
        let mut l = p.parent;
        loop {
            let label = &self.arena[l as usize];
            let cand = &self.cands[self.usable[usable as usize].cand as usize];
            hops.push(Hop {
                peer: cand.peer,
                blocks: BlockRange::new(base + label.at, base + end)
                    .expect("hops run forward: a label's boundary precedes its extension's"),
            });
            if label.usable == NONE {
                break;
            }
            end = label.at;
            usable = label.usable;
            l = label.parent;
        }
        hops.reverse();
        Route {
            hops,
            cost: RouteCost {
                expected_us_per_token: ps_to_us(p.time),
                price_per_token: saturating_nanoton(p.price),
                prompt_price_per_token: saturating_nanoton(p.prompt),
            },
        }
    }
}

fn saturating_nanoton(v: u128) -> NanoTon {
    NanoTon(u64::try_from(v).unwrap_or(u64::MAX))
}

/// Whether sorted `a` is a subset of sorted `b`.
fn is_subset(a: &[u32], b: &[u32]) -> bool {
    let mut rest = b.iter();
    a.iter().all(|x| rest.by_ref().any(|y| y == x))
}

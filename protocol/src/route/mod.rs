//! Route planning over announcements: which chain of workers a client sends its hidden
//! states through, and which span of blocks a new worker should serve.
//!
//! # The problem
//! A request names a span of blocks `[s, e)` to cover. Each usable [`Candidate`] offers
//! hops: without `allow_partial`, exactly its announced span (which must lie inside the
//! request); with it, any sub-span of its announced span that lies inside the request.
//! A route is a chain of hops whose spans tile `[s, e)` in order, each peer used at most
//! once. Among routes whose summed completion price is within `price_cap` and whose hop
//! count is within `max_hops`, [`plan`] returns the one with the least expected time per
//! token ([`hop_cost_us`] summed over hops), ties broken by lower price, then fewer hops,
//! then the hops' `(peer id, end)` sequence in lexicographic order. The answer is exact,
//! not greedy.
//!
//! # The algorithm
//! The search works on a relaxation in which a peer may serve several hops, then keeps
//! the routes that use each peer once (see step 4).
//! 1. *Eligibility* (O(n)): drop excluded peers, peers scored below `min_score`, workers
//!    with zero throughput or an empty span, and spans the request cannot use. Each
//!    remaining candidate gets an integer hop time in picoseconds (a fixed part, RTT +
//!    queueing + KV penalty, plus blocks over its block rate, rounded once per hop), so
//!    sums and ties are exact.
//! 2. *Pruning per span* (O(n log n)): the hops starting at each boundary are sorted by
//!    (end, time, price, peer) and, per (start, end), a hop is dropped once `k` kept ones
//!    are no slower and no dearer (k = 1 for [`plan`]): in the relaxation, swapping it for
//!    any of them gives a route at least as good, so no optimum is lost. With
//!    `allow_partial`, candidates with the same usable span are first cut the same way
//!    on (fixed cost, block rate, price), then each survivor's sub-spans are enumerated
//!    and pruned per (start, end). With 100k workers on 30 blocks, a few hops per span
//!    remain (the time/price Pareto front). For [`plan`] without `allow_partial`, one
//!    linear pass first drops candidates strictly beaten by the fastest or the cheapest
//!    of their span, so the sort sees little of a large swarm.
//! 3. *Label-setting DP over block boundaries* (O(B·Λ·D) extensions, each boundary's
//!    arrivals sorted): boundaries are processed in increasing order (hops only move
//!    forward, so the graph is a DAG). A label is a route prefix with (time, price,
//!    hops); at each boundary a label is dropped once `k` kept labels precede it in the
//!    planner's order and are no dearer (when a cap exists) and use no more hops (when
//!    the hop limit can bind). Kept labels are extended by every hop starting at their
//!    boundary, skipping extensions whose price plus the cheapest possible rest exceeds
//!    the cap, or whose hops plus the fewest possible remaining hops exceed `max_hops`
//!    (both bounds from one backward pass). B is the number of boundaries, Λ the kept
//!    labels per boundary (one without a cap; the time/price Pareto front, usually tens,
//!    with one), D the hops starting at a boundary after pruning.
//! 4. *One hop per peer*: the relaxation's `k'` best routes (k' = k at first) are
//!    filtered to those that never use a peer twice; if fewer than `k` remain and the
//!    relaxation had more to give, the search reruns with `4k'`. This is exact (the `k'`
//!    best relaxed routes contain every valid route ranked among them). Reuse only
//!    happens with `allow_partial` (a worker used on both sides of a faster one) or when
//!    a peer is listed twice. After four widths (k to 64k) the planner falls back to an
//!    exact search on unpruned hops whose labels also carry the used peers that could
//!    still start a later hop (a label then dominates only if its set is a subset of the
//!    other's): exponential in the worst case, and only reached when the relaxation
//!    keeps preferring reuse.
//! 5. When no route exists, [`RouteError`] says why, checked in this order: a block no
//!    chain of hops can reach ([`RouteError::Uncovered`]), more hops needed than allowed
//!    ([`RouteError::TooManyHops`]), or the cheapest route within the hop limit over the
//!    cap ([`RouteError::OverPriceCap`]).
//!
//! [`plan_k`] runs the same search keeping `k` labels where [`plan`] keeps one.
//! [`choose_span`] (in `placement`) answers `--blocks auto`.

mod cost;
mod diagnose;
mod graph;
mod placement;
mod plan;
mod prune;

#[cfg(test)]
mod tests;

use crate::PeerId;
use crate::announce::Prices;
use crate::units::{BlockRange, NanoTon};

pub use cost::{CostModel, hop_cost_us};
pub use placement::{
    MAX_BLOCKS, blocks_that_fit, choose_span, coverage, per_block_throughput, placement_candidate,
    span_coverage,
};

/// One worker as the planner sees it (built by the caller from a verified announcement
/// and local measurements).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub peer: PeerId,
    /// The announced span `[start, end)`.
    pub blocks: BlockRange,
    /// Tokens per second × 1000, measured over the whole announced span.
    pub throughput_milli_tps: u64,
    pub prices: Prices,
    pub free_kv_tokens: u64,
    /// Measured round-trip time to the worker, in microseconds.
    pub rtt_us: u64,
    /// Requests the worker reports (or the client observes) waiting ahead of ours.
    pub queued_requests: u32,
    /// The peer's score (see `peers`); candidates below `RouteRequest::min_score` are
    /// skipped.
    pub score: f64,
}

/// What a client asks the planner for.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    /// The span to cover: `[0, n)`, `[b, n)` when re-planning after a failure, or
    /// `[1, n - 1)` when the client runs the first and last blocks itself.
    pub blocks: BlockRange,
    /// KV-cache room the session needs on each hop (prompt plus expected completion).
    pub kv_tokens_needed: u64,
    /// Most the route may charge per completion token, summed over hops.
    pub price_cap: Option<NanoTon>,
    /// Peers never to use (failed, banned, ...).
    pub exclude: Vec<PeerId>,
    /// Whether a hop may run a sub-span of a worker's announced span.
    pub allow_partial: bool,
    /// Most hops a route may have.
    pub max_hops: usize,
    /// Candidates whose score is below this (or NaN) are skipped.
    pub min_score: f64,
}

/// One hop of a route: the worker and the span it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Hop {
    pub peer: PeerId,
    pub blocks: BlockRange,
}

/// A planned chain of hops covering the request's span in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub hops: Vec<Hop>,
    pub cost: RouteCost,
}

/// What a route costs per token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteCost {
    /// Sum of [`hop_cost_us`] over the hops.
    pub expected_us_per_token: f64,
    /// Sum of the hops' completion prices (a hop is charged its worker's full price,
    /// whatever part of its span it runs). Saturates at `u64::MAX`.
    pub price_per_token: NanoTon,
    /// Sum of the hops' prompt prices. Saturates at `u64::MAX`.
    pub prompt_price_per_token: NanoTon,
}

/// Why no route (or no span) could be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error("the request covers no blocks")]
    EmptyRequest,
    #[error("{blocks} blocks requested; at most {max} are supported")]
    TooManyBlocks { blocks: u32, max: u32 },
    #[error("{count} candidates given; at most 2^32 are supported")]
    TooManyCandidates { count: usize },
    #[error("no usable chain of workers reaches block {block}")]
    Uncovered { block: u32 },
    #[error("every covering route needs at least {needed} hops; at most {max_hops} allowed")]
    TooManyHops { needed: usize, max_hops: usize },
    #[error("the cheapest covering route costs {cheapest} per token, over the cap of {cap}")]
    OverPriceCap { cheapest: NanoTon, cap: NanoTon },
    /// Only when a peer is listed more than once: every route within the cap and the
    /// hop limit would use one peer twice.
    #[error("no route meets the price cap, the hop limit and one hop per peer together")]
    NoFeasibleRoute,
    #[error("cannot place a span of {span_len} blocks in a model of {n_blocks} blocks")]
    InvalidSpan { span_len: u32, n_blocks: u32 },
}

/// The fastest route for `req` among `cands` (see the module docs for the exact rule).
pub fn plan(
    cands: &[Candidate],
    req: &RouteRequest,
    model: &CostModel,
) -> Result<Route, RouteError> {
    plan::plan_best(cands, req, model, 1)?
        .into_iter()
        .next()
        .ok_or(RouteError::NoFeasibleRoute)
}

/// The `k` best distinct routes, best first (fewer when fewer exist; none when `k` is 0
/// or no route exists — [`plan`] says why).
pub fn plan_k(cands: &[Candidate], req: &RouteRequest, model: &CostModel, k: usize) -> Vec<Route> {
    if k == 0 {
        return Vec::new();
    }
    plan::plan_best(cands, req, model, k).unwrap_or_default()
}

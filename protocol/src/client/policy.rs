//! [`ClientPolicy`]: the one set of rules a client generates by (hop limit, re-plan
//! budget, KV room, score floor, price cap, whole spans before sub-spans, stall timeout
//! and fault charges), and the route requests it makes from them. The node's client, the
//! daemon's route listing and the simulator all start from [`ClientPolicy::default`].

use crate::PeerId;
use crate::failover::FailoverPolicy;
use crate::peers::ScorePolicy;
use crate::route::{self, Candidate, CostModel, Route, RouteError, RouteRequest};
use crate::units::{BlockRange, NanoTon};

/// Whether hops may run part of a worker's announced span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartialSpans {
    /// Whole announced spans only.
    Never,
    /// Whole spans first (cheap to plan, fewer hops); sub-spans only when whole spans
    /// cannot tile the blocks (a client running its first and last blocks itself, a
    /// swarm whose spans overlap).
    WhenNeeded,
}

/// How a client plans, fails over and gives up.
#[derive(Clone, Copy, Debug)]
pub struct ClientPolicy {
    /// Most hops a route may have.
    pub max_hops: usize,
    /// KV positions each hop must hold (prompt plus new tokens); a driver sets it per
    /// request. The default is what `cocoon routes` plans for.
    pub kv_positions: u64,
    /// Candidates scored below this are skipped (the ban threshold: banned peers are
    /// left out by the driver's candidate list already).
    pub min_score: f64,
    /// Most a route may charge per completion token, summed over hops.
    pub price_cap: Option<NanoTon>,
    pub partial_spans: PartialSpans,
    /// Re-plan budget (`max_replans`), stall timeout and the failures charged per fault.
    pub failover: FailoverPolicy,
    pub cost: CostModel,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            max_hops: 32,
            kv_positions: 512,
            min_score: ScorePolicy::default().ban_threshold,
            price_cap: None,
            partial_spans: PartialSpans::WhenNeeded,
            failover: FailoverPolicy::default(),
            cost: CostModel::default(),
        }
    }
}

/// A planned route, and whether it needed sub-spans of announced spans.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub route: Route,
    pub partial: bool,
}

impl ClientPolicy {
    /// The route request for `blocks` without `exclude`, with or without sub-spans.
    pub fn route_request(
        &self,
        blocks: BlockRange,
        exclude: Vec<PeerId>,
        allow_partial: bool,
    ) -> RouteRequest {
        RouteRequest {
            blocks,
            kv_tokens_needed: self.kv_positions,
            price_cap: self.price_cap,
            exclude,
            allow_partial,
            max_hops: self.max_hops,
            min_score: self.min_score,
        }
    }

    /// Plans `blocks` among `cands` without `exclude`: whole spans first, then (with
    /// [`PartialSpans::WhenNeeded`]) sub-spans. The error is the last attempt's.
    pub fn plan(
        &self,
        cands: &[Candidate],
        blocks: BlockRange,
        exclude: &[PeerId],
    ) -> Result<Planned, RouteError> {
        let whole = self.route_request(blocks, exclude.to_vec(), false);
        match route::plan(cands, &whole, &self.cost) {
            Ok(route) => Ok(Planned {
                route,
                partial: false,
            }),
            Err(e) if self.partial_spans == PartialSpans::Never => Err(e),
            Err(_) => {
                let partial = RouteRequest {
                    allow_partial: true,
                    ..whole
                };
                route::plan(cands, &partial, &self.cost).map(|route| Planned {
                    route,
                    partial: true,
                })
            }
        }
    }
}

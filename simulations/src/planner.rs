//! The one place the simulator reaches route planning and block placement: the
//! protocol's own `route` module, as the node uses it.

pub use cocoon_protocol::route::{Candidate, CostModel, Hop, RouteRequest, choose_span, plan};

/// Which planner produced the routes (written into `summary.json`).
pub const PLANNER: &str = "cocoon_protocol::route::plan";

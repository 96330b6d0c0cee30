//! The one place the simulator reaches route planning and block placement. Today the
//! stand-in; once `cocoon_protocol::route` lands this `use` points there.

pub use crate::route_standin::{Candidate, CostModel, Hop, RouteRequest, choose_span, plan};

/// Which planner produced the routes (written into `summary.json`).
pub const PLANNER: &str = "route_standin (simulations/src/route_standin.rs)";

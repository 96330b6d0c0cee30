//! cocoon-sim: a deterministic discrete-event simulator of the cocoon mesh. It drives
//! `cocoon-protocol`'s own logic (announcement signing and verification, peer scores and
//! bans, route planning and block placement, failover, payment channels) on a simulated
//! clock and network, from a scenario file, and writes CSVs, `summary.json` and plots.
//!
//! - [`scenario`]: the TOML schema and parameter overrides.
//! - [`dist`], [`net`], [`gossip`]: random draws, the network model, the gossip mesh.
//! - [`world`]: the population and the announcement view.
//! - [`payments`]: channels between clients and workers.
//! - [`sim`]: the event loop and its handlers.
//! - [`metrics`], [`plots`], [`run`]: what is recorded, drawn and written.

pub mod dist;
pub mod gossip;
pub mod metrics;
pub mod net;
pub mod payments;
pub mod planner;
pub mod plots;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod sweep;
pub mod world;

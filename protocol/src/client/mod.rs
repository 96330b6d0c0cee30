//! The client's generation as one sans-IO state machine, [`Generation`], driven alike by
//! the node (libp2p streams, Noise sessions, payment meters, tokio timers) and by the
//! simulator (a simulated network and clock), in the style of quinn-proto's
//! `Connection` and str0m's `Rtc`: the driver feeds inputs (route candidates, a hop
//! opened, answered or failed, with the time) and polls [`Action`]s (plan with these
//! blocks, charge this fault, open this hop, replay these calls into it, forward this
//! call to hop `i`, give up).
//!
//! It owns every decision of a generation: the route request and its planning
//! ([`ClientPolicy`], through `crate::route::plan`), which failed peers are excluded, the
//! charge of each fault (`crate::failover`, applied by the driver to the peer table it
//! owns), the re-plan budget, which hops a failure replaces, and the list of calls
//! (positions and rows) a replacement hop is fed to rebuild its KV cache. The driver
//! keeps the bytes: the sessions, the hidden states recorded at each hop boundary, the
//! payments, the timers.
//!
//! # The re-plan rule
//! A hop that fails (at open, during a replay, or with a call in flight) is replaced
//! together with every hop after it: the re-plan covers the failed span's first block
//! (`FailoverDecision::Replan { blocks }`'s start) to the end of the route, so the
//! planner may cut the rest of the route anew instead of having to tile the lost span
//! alone. A hop that fails while a rebuild is opening its replacements restarts that
//! rebuild from the same block. Each new hop is opened, then fed the recorded calls
//! (all but the one in flight) with the hidden states recorded at its first block, then
//! the call in flight carries on from the first replaced hop.

mod generation;
mod policy;

#[cfg(test)]
mod tests;

pub use generation::{Action, Call, ClientError, Failover, Generation, GiveUp};
pub use policy::{ClientPolicy, PartialSpans, Planned};

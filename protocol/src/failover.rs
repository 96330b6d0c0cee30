//! What a client does when one hop of its route fails mid-generation: how the fault is
//! charged to the peer in its [`PeerTable`], and whether to re-plan the lost span (and
//! replay its inputs on the replacement to rebuild the KV cache) or give the request up.
//!
//! Sans-IO: the driver detects the fault (a stream reset, a stall past
//! [`FailoverPolicy::stall_timeout_ms`], a spot-check that disagrees) and feeds it in
//! with the current time; the node and the simulator apply the same decision. The
//! client's generation (`crate::client::Generation`) takes the decision with [`decide`]
//! and has its driver charge the peer with [`charge`] on the table it owns;
//! [`on_hop_fault`] does both at once.

use libp2p_identity::PeerId;

use crate::peers::{BanAction, PeerTable};
use crate::units::{BlockRange, UnixMillis};

/// How a hop failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The stream to the worker was reset or the connection closed.
    Disconnected,
    /// No answer within the stall timeout.
    Stalled,
    /// A spot-check recomputation of the worker's span disagreed with its output.
    WrongResult,
    /// The worker refused to serve (for example, payments lag its credit window).
    Refused,
}

impl Fault {
    /// A short name for tables and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fault::Disconnected => "disconnected",
            Fault::Stalled => "stalled",
            Fault::WrongResult => "wrong_result",
            Fault::Refused => "refused",
        }
    }
}

/// The client's failover rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailoverPolicy {
    /// Re-plans allowed for one request before it is given up.
    pub max_replans: u32,
    /// A hop silent for this long counts as [`Fault::Stalled`].
    pub stall_timeout_ms: u64,
    /// Failures charged to the peer per fault: a wrong result is proof of misbehaviour
    /// and is charged enough to ban at once under the default score policy.
    pub failures_disconnected: u32,
    pub failures_stalled: u32,
    pub failures_wrong_result: u32,
    pub failures_refused: u32,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy {
            // A route may meet several bad workers in a row before an honest one (the
            // node's test of four liars needs 4); the simulator's scenarios set their own.
            max_replans: 8,
            stall_timeout_ms: 5_000,
            failures_disconnected: 1,
            failures_stalled: 5,
            failures_wrong_result: 30,
            failures_refused: 1,
        }
    }
}

impl FailoverPolicy {
    /// Failures charged to a peer for `fault`.
    pub fn failures_for(&self, fault: Fault) -> u32 {
        match fault {
            Fault::Disconnected => self.failures_disconnected,
            Fault::Stalled => self.failures_stalled,
            Fault::WrongResult => self.failures_wrong_result,
            Fault::Refused => self.failures_refused,
        }
    }
}

/// What to do about a failed hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailoverDecision {
    /// Plan a route for `blocks` only (the rest of the route stays), excluding `exclude`,
    /// and replay `replay_tokens` positions (prompt plus tokens generated so far)
    /// through it to rebuild the KV cache before generating on.
    Replan {
        blocks: BlockRange,
        exclude: PeerId,
        replay_tokens: u64,
    },
    /// Stop: the request fails with what was generated so far.
    GiveUp { reason: GiveUpReason },
}

/// Why a request is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// [`FailoverPolicy::max_replans`] re-plans were already spent.
    TooManyReplans,
}

/// The hop that failed, and how far generation had come.
#[derive(Clone, Copy, Debug)]
pub struct FailedHop {
    pub peer: PeerId,
    pub blocks: BlockRange,
    /// Prompt tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens generated (and received by the client) before the fault.
    pub generated_tokens: u64,
    /// Re-plans already made for this request.
    pub replans_so_far: u32,
}

/// Charges `fault` to `peer` in `table`: [`FailoverPolicy::failures_for`] failures,
/// which may ban it. Returns the ban, if the charge caused one.
pub fn charge(
    policy: &FailoverPolicy,
    table: &mut PeerTable,
    peer: PeerId,
    fault: Fault,
    now: UnixMillis,
) -> Option<BanAction> {
    let mut ban = None;
    for _ in 0..policy.failures_for(fault) {
        if let Some(b) = table.record_failure(peer, now) {
            ban = Some(b);
        }
    }
    ban
}

/// Charges `fault` to `hop.peer` in `table` (which may ban it) and decides whether to
/// re-plan the lost span. Returns the decision and the ban, if the charge caused one.
pub fn on_hop_fault(
    policy: &FailoverPolicy,
    table: &mut PeerTable,
    hop: &FailedHop,
    fault: Fault,
    now: UnixMillis,
) -> (FailoverDecision, Option<BanAction>) {
    let ban = charge(policy, table, hop.peer, fault, now);
    (decide(policy, hop), ban)
}

/// Whether to re-plan the lost span of `hop` or give the request up: a re-plan while
/// fewer than [`FailoverPolicy::max_replans`] were made.
pub fn decide(policy: &FailoverPolicy, hop: &FailedHop) -> FailoverDecision {
    if hop.replans_so_far >= policy.max_replans {
        FailoverDecision::GiveUp {
            reason: GiveUpReason::TooManyReplans,
        }
    } else {
        FailoverDecision::Replan {
            blocks: hop.blocks,
            exclude: hop.peer,
            replay_tokens: hop.prompt_tokens.saturating_add(hop.generated_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::tests::identity;
    use crate::peers::ScorePolicy;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn hop(replans: u32) -> FailedHop {
        FailedHop {
            peer: identity(1).peer_id(),
            blocks: BlockRange::new(10, 20).expect("ordered"),
            prompt_tokens: 40,
            generated_tokens: 7,
            replans_so_far: replans,
        }
    }

    #[test]
    fn a_disconnect_replans_the_lost_span_and_replays_its_inputs() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let (d, ban) = on_hop_fault(
            &FailoverPolicy::default(),
            &mut t,
            &hop(0),
            Fault::Disconnected,
            NOW,
        );
        assert_eq!(
            d,
            FailoverDecision::Replan {
                blocks: BlockRange::new(10, 20).expect("ordered"),
                exclude: identity(1).peer_id(),
                replay_tokens: 47,
            }
        );
        assert_eq!(ban, None);
        assert_eq!(t.get(&identity(1).peer_id()).map(|r| r.failures), Some(1));
    }

    #[test]
    fn a_wrong_result_bans_at_once_and_stalls_add_up() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let p = identity(1).peer_id();
        let policy = FailoverPolicy::default();
        let (_, ban) = on_hop_fault(&policy, &mut t, &hop(0), Fault::WrongResult, NOW);
        assert!(matches!(ban, Some(BanAction::Ban { peer, .. }) if peer == p));
        assert!(t.is_banned(&p, NOW));

        let mut t = PeerTable::new(ScorePolicy::default());
        let mut banned_after = None;
        for i in 1..=10 {
            let (_, ban) = on_hop_fault(&policy, &mut t, &hop(0), Fault::Stalled, NOW);
            if ban.is_some() && banned_after.is_none() {
                banned_after = Some(i);
            }
        }
        // 5 failures × 2 points per stall: the 5th stall reaches the -50 threshold.
        assert_eq!(banned_after, Some(5));
    }

    #[test]
    fn gives_up_after_the_replan_budget() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let policy = FailoverPolicy {
            max_replans: 2,
            ..FailoverPolicy::default()
        };
        let (d, _) = on_hop_fault(&policy, &mut t, &hop(2), Fault::Stalled, NOW);
        assert_eq!(
            d,
            FailoverDecision::GiveUp {
                reason: GiveUpReason::TooManyReplans
            }
        );
        let (d, _) = on_hop_fault(&policy, &mut t, &hop(1), Fault::Stalled, NOW);
        assert!(matches!(d, FailoverDecision::Replan { .. }));
    }
}

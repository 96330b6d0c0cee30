//! The watcher's decision, sans-IO: given the quarantine the contract holds (read from
//! chain by the driver), the newest state of the other side we hold, and the time, say
//! whether to challenge now, finish, or look again later.
//!
//! The contract lets the counterparty of whoever started the uncooperative close replace
//! the starter's quarantined state with a newer one (higher seqno or higher `sent`)
//! before `quarantine_starts + quarantine_duration`, fining the starter. After that,
//! `conditional_close_duration` seconds for settling conditionals (cocoon uses none),
//! then anyone may finish.

use super::layout::{ClosingConfig, QuarantinedState, SemiChannelBody};
use super::units::Side;

/// What the watcher should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchAction {
    /// Nothing now; look again at `at` (unix seconds).
    WaitUntil {
        /// When the next window opens or closes.
        at: u32,
    },
    /// The other side started the close with a state older than one we hold: challenge
    /// before `deadline` (exclusive).
    Challenge {
        /// The end of the quarantine.
        deadline: u32,
    },
    /// Both windows passed: send `finish_uncooperative_close`.
    Finish,
}

/// Decides for `us`, holding `theirs_best` (the other side's newest state we hold).
pub fn judge_quarantine(
    us: Side,
    closing: &ClosingConfig,
    q: &QuarantinedState,
    theirs_best: &SemiChannelBody,
    now: u32,
) -> WatchAction {
    let quarantine_end = q
        .quarantine_starts
        .saturating_add(closing.quarantine_duration);
    let finish_after = quarantine_end.saturating_add(closing.conditional_close_duration);
    // The contract wants `quarantine_end > now` to challenge and `finish_after < now` to finish.
    if now < quarantine_end {
        let started_by_them = q.committed_by_a != us.is_a();
        let theirs = match us {
            Side::A => &q.state_b,
            Side::B => &q.state_a,
        };
        let stale = theirs_best.seqno > theirs.seqno || theirs_best.sent > theirs.sent;
        if started_by_them && q.challenged != Some(true) && stale {
            return WatchAction::Challenge {
                deadline: quarantine_end,
            };
        }
        return WatchAction::WaitUntil {
            at: finish_after.saturating_add(1),
        };
    }
    if now <= finish_after {
        return WatchAction::WaitUntil {
            at: finish_after.saturating_add(1),
        };
    }
    WatchAction::Finish
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::units::{NanoTon, SeqNo};

    const CLOSING: ClosingConfig = ClosingConfig {
        quarantine_duration: 100,
        misbehavior_fine: NanoTon(0),
        conditional_close_duration: 50,
    };

    fn q(by_a: bool, seqno_a: u64, challenged: Option<bool>) -> QuarantinedState {
        QuarantinedState {
            state_a: SemiChannelBody::new(SeqNo(seqno_a), NanoTon(seqno_a as u128 * 10)),
            state_b: SemiChannelBody::new(SeqNo(0), NanoTon(0)),
            quarantine_starts: 1000,
            committed_by_a: by_a,
            challenged,
        }
    }

    #[test]
    fn challenges_a_stale_close_by_the_other_side_in_time() {
        let best = SemiChannelBody::new(SeqNo(10), NanoTon(100));
        let j = |qs: &QuarantinedState, now| judge_quarantine(Side::B, &CLOSING, qs, &best, now);
        assert_eq!(
            j(&q(true, 3, Some(false)), 1050),
            WatchAction::Challenge { deadline: 1100 }
        );
        // Up-to-date state: nothing to challenge.
        assert_eq!(
            j(&q(true, 10, Some(false)), 1050),
            WatchAction::WaitUntil { at: 1151 }
        );
        // Started by us, or already challenged: wait.
        assert_eq!(
            j(&q(false, 3, Some(false)), 1050),
            WatchAction::WaitUntil { at: 1151 }
        );
        assert_eq!(
            j(&q(true, 3, Some(true)), 1050),
            WatchAction::WaitUntil { at: 1151 }
        );
        // Too late to challenge; then finish once both windows passed.
        assert_eq!(
            j(&q(true, 3, Some(false)), 1100),
            WatchAction::WaitUntil { at: 1151 }
        );
        assert_eq!(
            j(&q(true, 3, None), 1150),
            WatchAction::WaitUntil { at: 1151 }
        );
        assert_eq!(j(&q(true, 3, None), 1151), WatchAction::Finish);
    }
}

//! A node's peer bookkeeping, sans-IO: received announcements verified and recorded,
//! connections, pings and failed dials charged to the [`PeerTable`], bans decided and
//! expired, which learnt peers are worth dialling, and this node's announcement
//! sequence numbers.
//!
//! The daemon hosts it the way a libp2p swarm hosts a `NetworkBehaviour`: it feeds each
//! event in with the current time and applies the [`MeshAction`]s it polls out
//! (blocking, unblocking and disconnecting peers). What is done with an accepted
//! announcement's addresses (which to dial, through which relay) stays with the driver,
//! which knows multiaddrs.

use std::collections::VecDeque;

use crate::PeerId;
use crate::announce::{Announcement, Rejection, Verdict, VerifyPolicy, verify_announcement};
use crate::peers::{BanAction, PeerTable, ScorePolicy};
use crate::units::{SeqNo, UnixMillis};

/// A change the driver applies to its swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshAction {
    /// Refuse the peer (and drop its connections) until `until`.
    Block { peer: PeerId, until: UnixMillis },
    /// A ban expired: accept the peer again.
    Unblock { peer: PeerId },
    /// A banned peer connected: close its connections.
    Disconnect { peer: PeerId },
}

/// What became of a received announcement; gossipsub's acceptance follows from it.
#[derive(Debug)]
pub enum Received {
    /// Verified and recorded: forward it.
    Accepted(Box<Announcement>),
    /// Not worth forwarding (a duplicate), not evidence of misbehaviour.
    Ignored(Rejection),
    /// Invalid: dropped and charged to the peer that sent it.
    Rejected(Rejection),
}

/// The peer bookkeeping a daemon hosts.
#[derive(Debug)]
pub struct Membership {
    local: PeerId,
    table: PeerTable,
    verify: VerifyPolicy,
    last_seqno: Option<SeqNo>,
    /// Learnt peers are dialled only while fewer connections than this are open.
    max_auto_peers: usize,
    actions: VecDeque<MeshAction>,
}

impl Membership {
    pub fn new(
        local: PeerId,
        score: ScorePolicy,
        verify: VerifyPolicy,
        max_auto_peers: usize,
    ) -> Self {
        Membership {
            local,
            table: PeerTable::new(score),
            verify,
            last_seqno: None,
            max_auto_peers,
            actions: VecDeque::new(),
        }
    }

    /// What this node knows of its peers.
    pub fn table(&self) -> &PeerTable {
        &self.table
    }

    /// The table, for rules that charge peers themselves (a failed inference hop, see
    /// `failover::on_hop_fault`); bans they return go through [`Membership::apply`].
    pub fn table_mut(&mut self) -> &mut PeerTable {
        &mut self.table
    }

    /// The sequence number of this node's next announcement.
    pub fn next_seqno(&mut self, now: UnixMillis) -> SeqNo {
        let seqno = SeqNo::next(self.last_seqno, now);
        self.last_seqno = Some(seqno);
        seqno
    }

    /// An announcement received from `from` (who may only be forwarding it).
    pub fn on_announcement(&mut self, bytes: &[u8], from: PeerId, now: UnixMillis) -> Received {
        let table = &self.table;
        match verify_announcement(bytes, now, &self.verify, |p| table.last_seqno(p)) {
            Ok(ann) => {
                self.table.record_announcement(ann.clone(), now);
                Received::Accepted(Box::new(ann))
            }
            Err(rejection) => match rejection.verdict() {
                Verdict::Ignore => Received::Ignored(rejection),
                Verdict::Reject => {
                    let ban = self.table.record_rejection(from, &rejection, now);
                    self.apply(ban);
                    Received::Rejected(rejection)
                }
            },
        }
    }

    /// A connection to `peer` opened; a banned peer is disconnected.
    pub fn on_connected(&mut self, peer: PeerId, now: UnixMillis) {
        self.table.record_seen(peer, now);
        if self.table.is_banned(&peer, now) {
            self.actions.push_back(MeshAction::Disconnect { peer });
        }
    }

    /// A ping answered in `rtt_us`.
    pub fn on_rtt(&mut self, peer: PeerId, rtt_us: u64, now: UnixMillis) {
        self.table.record_rtt(peer, rtt_us, now);
    }

    /// A dial or a ping to `peer` failed.
    pub fn on_failure(&mut self, peer: PeerId, now: UnixMillis) {
        let ban = self.table.record_failure(peer, now);
        self.apply(ban);
    }

    /// Bans whose time is up are lifted.
    pub fn expire(&mut self, now: UnixMillis) {
        for action in self.table.expire(now) {
            self.apply(Some(action));
        }
    }

    /// Queues what a ban decision asks of the swarm.
    pub fn apply(&mut self, action: Option<BanAction>) {
        match action {
            Some(BanAction::Ban { peer, until }) => {
                self.actions.push_back(MeshAction::Block { peer, until })
            }
            Some(BanAction::Unban { peer }) => self.actions.push_back(MeshAction::Unblock { peer }),
            None => {}
        }
    }

    /// Whether to dial `peer`, learnt of from an announcement or mDNS: not this node,
    /// not already connected, not banned, and while fewer than the limit of connections
    /// are open.
    pub fn worth_dialling(
        &self,
        peer: &PeerId,
        connected: bool,
        open_connections: usize,
        now: UnixMillis,
    ) -> bool {
        *peer != self.local
            && !connected
            && !self.table.is_banned(peer, now)
            && open_connections < self.max_auto_peers
    }

    /// The next change for the swarm, oldest first.
    pub fn poll_action(&mut self) -> Option<MeshAction> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::sign_announcement;
    use crate::announce::tests::{identity, sample};

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn membership() -> (Membership, PeerId) {
        let me = identity(200).peer_id();
        (
            Membership::new(me, ScorePolicy::default(), VerifyPolicy::default(), 2),
            me,
        )
    }

    #[test]
    fn an_accepted_announcement_is_recorded_and_a_replay_ignored() {
        let (mut m, _) = membership();
        let author = identity(1);
        let bytes = sign_announcement(&author, &sample(&author, NOW.0, NOW));
        let from = identity(2).peer_id();
        assert!(matches!(
            m.on_announcement(&bytes, from, NOW),
            Received::Accepted(_)
        ));
        assert!(m.table().get(&author.peer_id()).is_some());
        assert!(matches!(
            m.on_announcement(&bytes, from, NOW),
            Received::Ignored(_)
        ));
        assert_eq!(m.poll_action(), None, "a duplicate is not charged");
    }

    #[test]
    fn forged_announcements_get_their_sender_blocked() {
        let (mut m, _) = membership();
        let author = identity(1);
        let mut bytes = sign_announcement(&author, &sample(&author, NOW.0, NOW));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let from = identity(3).peer_id();
        let mut blocked = None;
        for i in 0..100 {
            assert!(matches!(
                m.on_announcement(&bytes, from, NOW.plus_ms(i)),
                Received::Rejected(_)
            ));
            if let Some(action) = m.poll_action() {
                blocked = Some(action);
                break;
            }
        }
        let Some(MeshAction::Block { peer, until }) = blocked else {
            panic!("the sender was never blocked: {blocked:?}");
        };
        assert_eq!(peer, from);
        // Banned: a new connection is dropped, and it is not worth dialling.
        m.on_connected(from, NOW.plus_ms(200));
        assert_eq!(m.poll_action(), Some(MeshAction::Disconnect { peer: from }));
        assert!(!m.worth_dialling(&from, false, 0, NOW.plus_ms(200)));
        // The ban ends.
        m.expire(until.plus_ms(1));
        assert_eq!(m.poll_action(), Some(MeshAction::Unblock { peer: from }));
        assert!(m.worth_dialling(&from, false, 0, until.plus_ms(1)));
    }

    #[test]
    fn dialling_skips_self_connected_peers_and_a_full_node() {
        let (m, me) = membership();
        let other = identity(5).peer_id();
        assert!(!m.worth_dialling(&me, false, 0, NOW));
        assert!(!m.worth_dialling(&other, true, 0, NOW));
        assert!(!m.worth_dialling(&other, false, 2, NOW));
        assert!(m.worth_dialling(&other, false, 1, NOW));
    }

    #[test]
    fn sequence_numbers_increase_even_when_the_clock_does_not() {
        let (mut m, _) = membership();
        let a = m.next_seqno(NOW);
        let b = m.next_seqno(NOW);
        assert!(b > a);
    }
}

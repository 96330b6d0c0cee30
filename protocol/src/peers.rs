//! The peer table: what a node knows of each peer (its last announcement, round-trip
//! time, failures, rejected announcements), a score computed from that, and bans with
//! exponential backoff for peers whose score falls too low. Sans-IO: every call takes
//! the current time; the driver applies the bans this table decides.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;

use crate::announce::{Announcement, Rejection};
use crate::route::Candidate;
use crate::units::{ModelId, SeqNo, UnixMillis};

/// The round-trip time a candidate is planned with before any was measured, µs.
pub const UNMEASURED_RTT_US: u64 = 1_000;

/// Scoring weights and ban policy.
#[derive(Clone, Copy, Debug)]
pub struct ScorePolicy {
    /// Score lost per rejected announcement.
    pub rejection_penalty: f64,
    /// Score lost per failure (dial failure, ping timeout).
    pub failure_penalty: f64,
    /// Score lost per 100 ms of smoothed RTT.
    pub rtt_penalty_per_100ms: f64,
    /// Score gained per accepted announcement, up to `max_accept_bonus`.
    pub accept_bonus: f64,
    pub max_accept_bonus: f64,
    /// A peer whose score falls to or below this is banned.
    pub ban_threshold: f64,
    /// First ban's length; each later ban doubles it, up to `max_ban_ms`.
    pub base_ban_ms: u64,
    pub max_ban_ms: u64,
}

impl Default for ScorePolicy {
    fn default() -> Self {
        ScorePolicy {
            rejection_penalty: 10.0,
            failure_penalty: 2.0,
            rtt_penalty_per_100ms: 1.0,
            accept_bonus: 1.0,
            max_accept_bonus: 10.0,
            ban_threshold: -50.0,
            base_ban_ms: 60_000,
            max_ban_ms: 3_600_000,
        }
    }
}

/// Everything the table holds about one peer.
#[derive(Clone, Debug, Default)]
pub struct PeerRecord {
    /// Smoothed round-trip time in microseconds (EWMA, 1/8 weight like TCP's SRTT).
    pub rtt_us: Option<u64>,
    /// The last few RTT samples, for [`PeerRecord::path_rtt_us`].
    pub recent_rtts: RttWindow,
    pub failures: u32,
    pub rejections: u32,
    /// Rule name of the last rejected announcement.
    pub last_rejection: Option<&'static str>,
    pub accepted: u32,
    pub last_seen: UnixMillis,
    /// The last accepted announcement.
    pub announcement: Option<Announcement>,
    /// Highest sequence number accepted from this peer (kept after its announcement expires).
    pub last_seqno: Option<SeqNo>,
    /// End of the current ban, if banned.
    pub banned_until: Option<UnixMillis>,
    /// How many times this peer was banned.
    pub strikes: u32,
}

/// The last [`RttWindow::LEN`] round-trip samples of one peer (microseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttWindow {
    samples: [u32; RttWindow::LEN],
    len: u8,
    next: u8,
}

impl RttWindow {
    /// Samples kept: with libp2p's 15 s ping interval, the last two minutes.
    pub const LEN: usize = 8;

    pub fn push(&mut self, rtt_us: u64) {
        self.samples[usize::from(self.next)] = u32::try_from(rtt_us).unwrap_or(u32::MAX);
        self.next = ((usize::from(self.next) + 1) % Self::LEN) as u8;
        self.len = (usize::from(self.len) + 1).min(Self::LEN) as u8;
    }

    /// The lowest sample kept; `None` before the first.
    pub fn min(&self) -> Option<u64> {
        self.samples[..usize::from(self.len)]
            .iter()
            .min()
            .map(|&us| u64::from(us))
    }
}

impl PeerRecord {
    /// The round-trip time route planning charges a hop: the lowest recent sample, an
    /// estimate of the path's own delay (as BBR's min-RTT filter). A single ping answered
    /// while the peer's cores are busy (compiling kernels at start-up, computing another
    /// session's tokens) comes back tens of milliseconds late, and the smoothed RTT keeps
    /// such a sample for minutes; the planner already charges compute through the
    /// announced throughput, so counting it again in the RTT would route around workers
    /// for the load they had when they were pinged.
    pub fn path_rtt_us(&self) -> Option<u64> {
        self.recent_rtts.min()
    }
}

/// A change the driver must apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanAction {
    /// Disconnect the peer and refuse it until `until`.
    Ban { peer: PeerId, until: UnixMillis },
    /// The ban expired: accept the peer again.
    Unban { peer: PeerId },
}

/// Peer records keyed by PeerId.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    peers: BTreeMap<PeerId, PeerRecord>,
    policy: ScorePolicy,
}

impl PeerTable {
    pub fn new(policy: ScorePolicy) -> Self {
        PeerTable {
            peers: BTreeMap::new(),
            policy,
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerRecord)> {
        self.peers.iter()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn entry(&mut self, peer: PeerId, now: UnixMillis) -> &mut PeerRecord {
        let rec = self.peers.entry(peer).or_default();
        rec.last_seen = rec.last_seen.max(now);
        rec
    }

    /// The peer was seen (connected, identified).
    pub fn record_seen(&mut self, peer: PeerId, now: UnixMillis) {
        self.entry(peer, now);
    }

    /// A round-trip time was measured.
    pub fn record_rtt(&mut self, peer: PeerId, rtt_us: u64, now: UnixMillis) {
        let rec = self.entry(peer, now);
        rec.rtt_us = Some(match rec.rtt_us {
            None => rtt_us,
            Some(s) => (s * 7 + rtt_us) / 8,
        });
        rec.recent_rtts.push(rtt_us);
    }

    /// A dial or ping to the peer failed.
    pub fn record_failure(&mut self, peer: PeerId, now: UnixMillis) -> Option<BanAction> {
        self.entry(peer, now).failures += 1;
        self.maybe_ban(peer, now)
    }

    /// `peer` sent an announcement that was rejected.
    pub fn record_rejection(
        &mut self,
        peer: PeerId,
        why: &Rejection,
        now: UnixMillis,
    ) -> Option<BanAction> {
        let rec = self.entry(peer, now);
        rec.rejections += 1;
        rec.last_rejection = Some(why.rule());
        self.maybe_ban(peer, now)
    }

    /// An announcement from its author was accepted.
    pub fn record_announcement(&mut self, announcement: Announcement, now: UnixMillis) {
        let Ok(peer) = announcement.peer_id() else {
            return;
        };
        let rec = self.entry(peer, now);
        rec.accepted += 1;
        rec.last_seqno = Some(
            rec.last_seqno
                .map_or(announcement.seqno, |s| s.max(announcement.seqno)),
        );
        rec.announcement = Some(announcement);
    }

    /// The highest sequence number accepted from `peer`, for [`crate::announce::verify_announcement`].
    pub fn last_seqno(&self, peer: &PeerId) -> Option<SeqNo> {
        self.peers.get(peer).and_then(|r| r.last_seqno)
    }

    /// The peer's score: higher is better. Zero for a peer with no history.
    pub fn score(&self, peer: &PeerId) -> f64 {
        self.peers.get(peer).map_or(0.0, |r| self.score_of(r))
    }

    pub fn score_of(&self, r: &PeerRecord) -> f64 {
        let p = &self.policy;
        let bonus = (f64::from(r.accepted) * p.accept_bonus).min(p.max_accept_bonus);
        let rtt = r
            .rtt_us
            .map_or(0.0, |us| us as f64 / 100_000.0 * p.rtt_penalty_per_100ms);
        bonus
            - f64::from(r.rejections) * p.rejection_penalty
            - f64::from(r.failures) * p.failure_penalty
            - rtt
    }

    pub fn is_banned(&self, peer: &PeerId, now: UnixMillis) -> bool {
        self.peers
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| until > now)
    }

    fn maybe_ban(&mut self, peer: PeerId, now: UnixMillis) -> Option<BanAction> {
        let score = self.score(&peer);
        let policy = self.policy;
        let rec = self.peers.get_mut(&peer)?;
        if score > policy.ban_threshold || rec.banned_until.is_some_and(|u| u > now) {
            return None;
        }
        let factor = 1u64.checked_shl(rec.strikes.min(32)).unwrap_or(u64::MAX);
        let len = policy
            .base_ban_ms
            .saturating_mul(factor)
            .min(policy.max_ban_ms);
        rec.strikes += 1;
        let until = now.plus_ms(len);
        rec.banned_until = Some(until);
        Some(BanAction::Ban { peer, until })
    }

    /// Lifts expired bans (giving the peer a clean slate of penalties, but keeping its
    /// strike count so the next ban lasts longer) and drops expired announcements.
    pub fn expire(&mut self, now: UnixMillis) -> Vec<BanAction> {
        let mut out = Vec::new();
        for (peer, rec) in self.peers.iter_mut() {
            if rec.banned_until.is_some_and(|u| u <= now) {
                rec.banned_until = None;
                rec.rejections = 0;
                rec.failures = 0;
                out.push(BanAction::Unban { peer: *peer });
            }
            if rec
                .announcement
                .as_ref()
                .is_some_and(|a| a.expires_at <= now)
            {
                rec.announcement = None;
            }
        }
        out
    }

    /// Live announcements.
    pub fn announcements(&self) -> impl Iterator<Item = &Announcement> {
        self.peers.values().filter_map(|r| r.announcement.as_ref())
    }

    /// Route candidates for `model` at `now`: every peer not banned whose live
    /// announcement serves blocks of `model`, with the table's path RTT
    /// ([`UNMEASURED_RTT_US`] before a sample) and score, and no queue known. Each comes
    /// with its announcement, where a driver finds what it needs to reach the worker
    /// (session key, wallet, cipher suites).
    pub fn candidates(
        &self,
        model: ModelId,
        now: UnixMillis,
    ) -> impl Iterator<Item = (Candidate, &Announcement)> + '_ {
        self.peers.iter().filter_map(move |(peer, rec)| {
            let a = rec.announcement.as_ref()?;
            if self.is_banned(peer, now)
                || a.model_id != Some(model)
                || a.blocks.is_empty()
                || a.expires_at < now
            {
                return None;
            }
            let candidate = Candidate {
                peer: *peer,
                blocks: a.blocks,
                throughput_milli_tps: a.throughput_milli_tps,
                prices: a.prices,
                free_kv_tokens: a.free_kv_tokens,
                rtt_us: rec.path_rtt_us().unwrap_or(UNMEASURED_RTT_US),
                queued_requests: 0,
                score: self.score_of(rec),
            };
            Some((candidate, a))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::tests::{identity, sample};
    use crate::announce::{VerifyPolicy, sign_announcement, verify_announcement};

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn rejections_lower_the_score_and_end_in_a_ban_with_growing_backoff() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let p = identity(1).peer_id();
        assert_eq!(t.score(&p), 0.0);
        let mut ban = None;
        for i in 0..5 {
            let before = t.score(&p);
            ban = t.record_rejection(p, &Rejection::BadSignature, NOW);
            assert!(t.score(&p) < before, "score falls at rejection {i}");
        }
        assert_eq!(
            ban,
            Some(BanAction::Ban {
                peer: p,
                until: NOW.plus_ms(60_000)
            })
        );
        assert!(t.is_banned(&p, NOW.plus_ms(59_999)));
        assert_eq!(t.get(&p).and_then(|r| r.last_rejection), Some("signature"));
        assert!(t.expire(NOW.plus_ms(30_000)).is_empty());
        assert_eq!(
            t.expire(NOW.plus_ms(60_000)),
            vec![BanAction::Unban { peer: p }]
        );
        assert!(!t.is_banned(&p, NOW.plus_ms(60_000)));
        // The second ban lasts twice as long.
        let later = NOW.plus_ms(100_000);
        let mut ban = None;
        for _ in 0..5 {
            ban = ban.or(t.record_rejection(p, &Rejection::BadSignature, later));
        }
        assert_eq!(
            ban,
            Some(BanAction::Ban {
                peer: p,
                until: later.plus_ms(120_000)
            })
        );
    }

    #[test]
    fn accepted_announcements_feed_the_seqno_rule() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let id = identity(3);
        let bytes = sign_announcement(&id, &sample(&id, 10, NOW));
        let ann = verify_announcement(&bytes, NOW, &VerifyPolicy::default(), |p| t.last_seqno(p))
            .expect("fresh");
        t.record_announcement(ann, NOW);
        assert_eq!(t.last_seqno(&id.peer_id()), Some(SeqNo(10)));
        let again = verify_announcement(&bytes, NOW, &VerifyPolicy::default(), |p| t.last_seqno(p));
        assert_eq!(again.expect_err("replay").rule(), "seqno");
        assert!(t.score(&id.peer_id()) > 0.0);
        // Expired announcements leave the table, the seqno stays.
        t.expire(NOW.plus_ms(10 * 60 * 1000));
        assert_eq!(t.announcements().count(), 0);
        assert_eq!(t.last_seqno(&id.peer_id()), Some(SeqNo(10)));
    }

    #[test]
    fn candidates_are_the_live_unbanned_workers_of_the_model() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let model = sample(&identity(1), 1, NOW)
            .model_id
            .expect("sample has a model");
        for i in 1..=4 {
            let id = identity(i);
            let mut a = sample(&id, 1, NOW);
            if i == 3 {
                a.model_id = Some(ModelId([0xee; 32]));
            }
            t.record_announcement(a, NOW);
        }
        let banned = identity(4).peer_id();
        for _ in 0..30 {
            t.record_failure(banned, NOW);
        }
        t.record_rtt(identity(2).peer_id(), 4_000, NOW);
        let got: Vec<Candidate> = t.candidates(model, NOW).map(|(c, _)| c).collect();
        let mut want = vec![identity(1).peer_id(), identity(2).peer_id()];
        want.sort();
        assert_eq!(got.iter().map(|c| c.peer).collect::<Vec<_>>(), want);
        let rtt = |p| got.iter().find(|c| c.peer == p).map(|c| c.rtt_us);
        assert_eq!(rtt(identity(1).peer_id()), Some(UNMEASURED_RTT_US));
        assert_eq!(rtt(identity(2).peer_id()), Some(4_000));
        // Expired announcements are no candidates.
        let later = NOW.plus_ms(24 * 3600 * 1000);
        assert_eq!(t.candidates(model, later).count(), 0);
    }

    #[test]
    fn rtt_is_smoothed_and_penalised() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let p = identity(4).peer_id();
        t.record_rtt(p, 800_000, NOW);
        t.record_rtt(p, 0, NOW);
        assert_eq!(t.get(&p).and_then(|r| r.rtt_us), Some(700_000));
        assert!((t.score(&p) + 7.0).abs() < 1e-9);
    }

    #[test]
    fn path_rtt_is_the_lowest_of_the_recent_samples() {
        let mut t = PeerTable::new(ScorePolicy::default());
        let p = identity(5).peer_id();
        assert_eq!(t.get(&p).and_then(PeerRecord::path_rtt_us), None);
        // A first ping answered while the peer was busy, then quiet ones.
        t.record_rtt(p, 80_000, NOW);
        assert_eq!(t.get(&p).and_then(PeerRecord::path_rtt_us), Some(80_000));
        t.record_rtt(p, 300, NOW);
        t.record_rtt(p, 500, NOW);
        let rec = t.get(&p).expect("recorded");
        assert_eq!(rec.path_rtt_us(), Some(300));
        assert!(
            rec.rtt_us.expect("smoothed") > 60_000,
            "the EWMA still remembers"
        );
        // The window forgets: after LEN slower samples the old minimum is gone.
        for _ in 0..RttWindow::LEN {
            t.record_rtt(p, 2_000, NOW);
        }
        assert_eq!(t.get(&p).and_then(PeerRecord::path_rtt_us), Some(2_000));
        // Samples beyond u32 microseconds saturate instead of wrapping.
        let mut w = RttWindow::default();
        w.push(u64::MAX);
        assert_eq!(w.min(), Some(u64::from(u32::MAX)));
    }
}

//! What this node says about itself on the announcement topic, and what it does with
//! what others say: its signed announcement (and forged ones for `--dev-forge`), and each
//! received one verified by `cocoon_protocol::announce` before the peer table learns it.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId, gossipsub};

use cocoon_protocol::announce::{ANNOUNCE_TOPIC, Announcement, sign_announcement};
use cocoon_protocol::membership::Received;
use cocoon_protocol::units::{BlockRange, ModelId, SeqNo, UnixMillis};

use super::relay::is_relayed;
use super::{Daemon, now_ms};
use crate::control::api::ForgeKind;

impl Daemon {
    pub(super) fn schedule_announce(&mut self, delay: Duration) {
        let at = Instant::now() + delay;
        self.announce_due = Some(self.announce_due.map_or(at, |d| d.min(at)));
    }

    /// The addresses to announce. A node listening through relays is behind a NAT: it
    /// announces only its relayed addresses, so peers come through the relay and DCUtR
    /// upgrades the connection (a direct dial would only hit the NAT).
    pub(super) fn my_addrs(&self) -> Vec<Multiaddr> {
        if !self.relay_listeners.is_empty() {
            return self
                .swarm
                .listeners()
                .filter(|a| is_relayed(a))
                .cloned()
                .collect();
        }
        let mut addrs: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        for a in self.swarm.listeners() {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        addrs
    }

    pub(super) fn my_announcement(&mut self, now: UnixMillis) -> Announcement {
        let seqno = self.peers.next_seqno(now);
        Announcement {
            node_key: self.identity.public_key(),
            role: self.me.role,
            model_id: self.me.model_id,
            n_blocks: self.me.n_blocks,
            blocks: self.me.blocks,
            prices: self.me.prices,
            throughput_milli_tps: self.me.throughput_milli_tps,
            free_kv_tokens: self.free_kv_tokens(),
            noise_static_key: self.identity.noise_public_key(),
            ton_wallet: self.me.ton_wallet.clone(),
            listen_addrs: self
                .my_addrs()
                .iter()
                .take(16)
                .map(|a| a.to_vec())
                .collect(),
            seqno,
            issued_at: now,
            expires_at: now.plus_ms(self.me.ttl_ms),
            cipher_suites: self.me.cipher_suites.clone(),
        }
    }

    pub(super) fn publish(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {
                self.metrics.announcements_published.inc();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub(super) fn announce(&mut self) {
        let waiting_for_relay = !self.relay_listeners.is_empty() && self.my_addrs().is_empty();
        if waiting_for_relay && self.started.elapsed() < Duration::from_secs(20) {
            // Not reachable yet: announce once the relay reservation gives an address.
            self.schedule_announce(Duration::from_millis(500));
            return;
        }
        let ann = self.my_announcement(now_ms());
        let bytes = sign_announcement(&self.identity, &ann);
        match self.publish(bytes) {
            Ok(()) => tracing::debug!(seqno = %ann.seqno, "announced"),
            Err(e) => tracing::debug!(error = %e, "announcement not published"),
        }
    }

    pub(super) fn on_gossip(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let from = propagation_source;
                let acceptance = match self.peers.on_announcement(&message.data, from, now_ms()) {
                    Received::Accepted(ann) => {
                        self.on_accepted(&ann, from);
                        gossipsub::MessageAcceptance::Accept
                    }
                    Received::Ignored(rejection) => {
                        self.metrics.received(rejection.rule());
                        tracing::debug!(peer = %from, %rejection, "announcement ignored");
                        gossipsub::MessageAcceptance::Ignore
                    }
                    Received::Rejected(rejection) => {
                        self.metrics.received(rejection.rule());
                        tracing::warn!(peer = %from, rule = rejection.rule(), "announcement from {from} rejected: {rejection}");
                        self.apply_mesh_actions();
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Subscribed { peer_id, topic }
                if topic == gossipsub::IdentTopic::new(ANNOUNCE_TOPIC).hash() =>
            {
                tracing::debug!(peer = %peer_id, "peer subscribed to announcements");
                // A new listener: tell it who we are soon (debounced).
                self.schedule_announce(Duration::from_millis(400));
            }
            _ => {}
        }
    }

    /// A verified announcement (already in the peer table): dial its author where it
    /// says it listens.
    fn on_accepted(&mut self, ann: &Announcement, via: PeerId) {
        let author = ann.peer_id().ok();
        self.metrics.received("accepted");
        let mut addrs: Vec<Multiaddr> = ann
            .listen_addrs
            .iter()
            .filter_map(|b| Multiaddr::try_from(b.clone()).ok())
            .collect();
        // A peer that listens through a relay is behind a NAT: reach it through the relay
        // and let DCUtR punch the direct path.
        if addrs.iter().any(is_relayed) {
            addrs.retain(is_relayed);
        }
        tracing::debug!(author = ?author, seqno = %ann.seqno, %via, "announcement accepted");
        if let Some(author) = author {
            if !addrs.is_empty() {
                self.live.entry(author).or_default().listen_addrs = addrs.clone();
            }
            self.dial_known(author, addrs);
        }
    }

    /// Publishes a deliberately invalid announcement (only with `--dev-forge`).
    pub(super) fn forge(&mut self, kind: ForgeKind) -> Result<String, String> {
        let now = now_ms();
        let mut ann = self.my_announcement(now);
        let bytes = match kind {
            ForgeKind::BadSignature => {
                let mut b = sign_announcement(&self.identity, &ann);
                let last = b.len() - 1;
                b[last] ^= 0x01;
                b
            }
            ForgeKind::Expired => {
                ann.issued_at = UnixMillis(now.0.saturating_sub(20 * 60 * 1000));
                ann.expires_at = UnixMillis(now.0.saturating_sub(10 * 60 * 1000));
                sign_announcement(&self.identity, &ann)
            }
            ForgeKind::BlocksBeyondModel => {
                ann.model_id = Some(ann.model_id.unwrap_or(ModelId([0; 32])));
                ann.blocks = BlockRange::new(0, ann.n_blocks + 5).map_err(|e| e.to_string())?;
                sign_announcement(&self.identity, &ann)
            }
            ForgeKind::ReplayedSeqno => {
                ann.seqno = SeqNo(ann.seqno.0.saturating_sub(1_000_000));
                sign_announcement(&self.identity, &ann)
            }
        };
        self.publish(bytes)?;
        Ok(format!("published a forged announcement ({kind:?})"))
    }
}

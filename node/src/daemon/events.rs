//! The swarm's events: connections, identify, pings, Kademlia, mDNS, AutoNAT, relays and
//! hole punching, each fed to the peer table or the relay logic; bans applied to the
//! swarm; the periodic housekeeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, autonat, identify, kad, mdns, ping as lping, relay};

use cocoon_protocol::membership::MeshAction;

use super::relay::{RELAY_HOP, is_loopback, is_public_candidate, is_relayed};
use super::{Daemon, now_ms};
use crate::swarm::BehaviourEvent;

impl Daemon {
    pub(super) fn housekeeping(&mut self) {
        let now = now_ms();
        self.peers.expire(now);
        self.apply_mesh_actions();
        let now_i = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relay_retries)
            .into_iter()
            .partition(|(at, _)| *at <= now_i);
        self.relay_retries = later;
        for (_, circuit) in due {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    self.relay_listeners.insert(id, circuit);
                }
                Err(e) => {
                    tracing::warn!(%circuit, error = %e, "cannot listen through relay");
                    self.relay_retries
                        .push((now_i + Duration::from_secs(10), circuit));
                }
            }
        }
        self.maybe_place();
        if self.announce_due.is_some_and(|t| t <= Instant::now()) {
            self.announce_due = None;
            self.announce();
        }
        let connected = self
            .live
            .values()
            .filter(|l| !l.connections.is_empty())
            .count();
        self.metrics.peers_connected.set(connected as i64);
        self.metrics
            .peers_known
            .set(self.peers.table().len() as i64);
        let table = self.peers.table();
        let banned = table
            .iter()
            .filter(|(p, _)| table.is_banned(p, now))
            .count();
        self.metrics.peers_banned.set(banned as i64);
    }

    pub(super) fn kad_bootstrap(&mut self) {
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            tracing::debug!(error = %e, "kademlia bootstrap skipped");
        }
    }

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // A relay must know its public addresses before it can grant reservations
                // (they go into the reservation); a relay is public by definition. A relay
                // that listens on loopback only (a devnet) serves loopback peers.
                if self.swarm.behaviour().relay_server.is_enabled()
                    && (is_public_candidate(&address) || self.loopback_only)
                {
                    self.swarm.add_external_address(address);
                }
                self.schedule_announce(Duration::from_millis(300));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(circuit) = self.relay_listeners.remove(&listener_id) {
                    tracing::warn!(%circuit, reason = ?reason, "relay listener closed; retrying in 5 s");
                    self.relay_retries
                        .push((Instant::now() + Duration::from_secs(5), circuit));
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(?listener_id, %error, "listener error");
            }
            // An address a peer saw us at. DCUtR uses it as a hole-punching candidate;
            // only AutoNAT (a successful dial-back) or being a relay confirms it as
            // external, so NATed nodes never advertise a public address that drops dials.
            SwarmEvent::NewExternalAddrCandidate { address } => {
                tracing::debug!(%address, "external address candidate");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.schedule_announce(Duration::from_millis(300));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                let relayed = is_relayed(&addr)
                    || matches!(&endpoint, ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr));
                tracing::info!(peer = %peer_id, %addr, relayed, "connected");
                let stored = if relayed && !is_relayed(&addr) {
                    addr.with(Protocol::P2pCircuit)
                } else {
                    addr
                };
                self.live
                    .entry(peer_id)
                    .or_default()
                    .connections
                    .insert(connection_id, stored);
                self.peers.on_connected(peer_id, now_ms());
                self.apply_mesh_actions();
                if !self.bootstrapped {
                    self.bootstrapped = true;
                    self.kad_bootstrap();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(l) = self.live.get_mut(&peer_id) {
                    l.connections.remove(&connection_id);
                    if l.connections.is_empty() {
                        tracing::info!(peer = %peer_id, "disconnected");
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                self.peers.on_failure(peer, now_ms());
                self.apply_mesh_actions();
            }
            _ => {}
        }
    }

    /// Applies to the swarm what the peer bookkeeping decided.
    pub(super) fn apply_mesh_actions(&mut self) {
        while let Some(action) = self.peers.poll_action() {
            match action {
                MeshAction::Block { peer, until } => {
                    tracing::warn!(%peer, secs = until.saturating_sub(now_ms()) / 1000, "peer banned");
                    self.swarm.behaviour_mut().blocked.block_peer(peer);
                    self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
                }
                MeshAction::Unblock { peer } => {
                    tracing::info!(%peer, "ban expired");
                    self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .remove_blacklisted_peer(&peer);
                }
                MeshAction::Disconnect { peer } => {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
            }
        }
    }

    /// Dials a peer we learnt of (announcement, mDNS), unless connected, banned, or we
    /// already hold `MAX_AUTO_PEERS` connections. Concurrent with any dial already in
    /// flight (a Kademlia query may be trying stale addresses).
    pub(super) fn dial_known(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let connected = self.swarm.is_connected(&peer);
        let open = self.swarm.connected_peers().count();
        if !self.peers.worth_dialling(&peer, connected, open, now_ms()) {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Disconnected)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "not dialing");
        }
    }

    pub(super) fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(e) => {
                self.libp2p_metrics.record(&e);
                self.on_gossip(e);
            }
            BehaviourEvent::Identify(e) => {
                self.libp2p_metrics.record(&e);
                if let identify::Event::Received { peer_id, info, .. } = e {
                    let live = self.live.entry(peer_id).or_default();
                    live.agent = Some(info.agent_version.clone());
                    live.protocols = info.protocols.iter().map(|p| p.to_string()).collect();
                    live.listen_addrs = info.listen_addrs.clone();
                    // Loopback addresses are only useful to peers on this host.
                    let local_link = live.connections.values().any(is_loopback);
                    for a in info
                        .listen_addrs
                        .iter()
                        .filter(|a| local_link || !is_loopback(a))
                    {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, a.clone());
                    }
                    if info.protocols.iter().any(|p| p.as_ref() == RELAY_HOP) && self.want_relay {
                        self.listen_via_relay(peer_id);
                    }
                }
            }
            BehaviourEvent::Ping(e) => {
                self.libp2p_metrics.record(&e);
                let lping::Event { peer, result, .. } = e;
                match result {
                    Ok(rtt) => self.peers.on_rtt(peer, rtt.as_micros() as u64, now_ms()),
                    Err(err) => {
                        tracing::debug!(%peer, error = %err, "ping failed");
                        self.peers.on_failure(peer, now_ms());
                        self.apply_mesh_actions();
                    }
                }
            }
            BehaviourEvent::Kad(e) => {
                self.libp2p_metrics.record(&e);
                if let kad::Event::RoutingUpdated { peer, .. } = e {
                    tracing::trace!(%peer, "kademlia routing updated");
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in list {
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    tracing::info!(%peer, "found on the LAN by mDNS");
                    for a in &addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
                    }
                    self.dial_known(peer, addrs);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { old, new }) => {
                tracing::info!(?old, ?new, "NAT status changed");
                self.nat_status = match &new {
                    autonat::NatStatus::Public(a) => format!("public ({a})"),
                    autonat::NatStatus::Private => "private".into(),
                    autonat::NatStatus::Unknown => "unknown".into(),
                };
                match new {
                    autonat::NatStatus::Public(_) => self.enable_relay_server(),
                    autonat::NatStatus::Private => {
                        self.want_relay = true;
                        let relays: Vec<PeerId> = self
                            .live
                            .iter()
                            .filter(|(_, l)| {
                                !l.connections.is_empty()
                                    && l.protocols.iter().any(|p| p == RELAY_HOP)
                            })
                            .map(|(p, _)| *p)
                            .collect();
                        for r in relays {
                            self.listen_via_relay(r);
                        }
                    }
                    autonat::NatStatus::Unknown => {}
                }
            }
            BehaviourEvent::Autonat(_) => {}
            BehaviourEvent::RelayServer(e) => {
                self.libp2p_metrics.record(&e);
                tracing::debug!(event = ?e, "relay server");
            }
            BehaviourEvent::RelayClient(e) => match &e {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } => {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                }
                other => tracing::debug!(event = ?other, "relay client"),
            },
            BehaviourEvent::Dcutr(e) => {
                self.libp2p_metrics.record(&e);
                match &e.result {
                    Ok(conn) => {
                        tracing::info!(peer = %e.remote_peer_id, connection = ?conn, "hole punch succeeded: direct connection")
                    }
                    Err(err) => {
                        tracing::info!(peer = %e.remote_peer_id, error = %err, "hole punch failed")
                    }
                }
            }
            BehaviourEvent::Blocked(_) | BehaviourEvent::Stream(_) => {}
        }
    }
}

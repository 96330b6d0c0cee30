//! Relays: serving as one once AutoNAT says this node is public, listening through one
//! when it says private, and the address rules both need.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::Daemon;
use crate::config::RelayServerMode;
use crate::swarm;

/// Relay hop protocol, advertised through identify by peers that relay.
pub(super) const RELAY_HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

impl Daemon {
    pub(super) fn enable_relay_server(&mut self) {
        if self.relay_mode == RelayServerMode::Auto
            && !self.swarm.behaviour().relay_server.is_enabled()
        {
            tracing::info!("AutoNAT says public: serving as a relay from now on");
            let peer = self.local_peer();
            self.swarm.behaviour_mut().relay_server = Some(swarm::relay_server(peer)).into();
        }
    }

    pub(super) fn listen_via_relay(&mut self, relay_peer: PeerId) {
        if self.relay_listening.contains(&relay_peer) {
            return;
        }
        let Some(addr) = self
            .live
            .get(&relay_peer)
            .and_then(|l| l.connections.values().find(|a| !is_relayed(a)).cloned())
        else {
            return;
        };
        let circuit = strip_p2p(addr)
            .with(Protocol::P2p(relay_peer))
            .with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                tracing::info!(%circuit, "listening through relay");
                self.relay_listeners.insert(id, circuit);
                self.relay_listening.insert(relay_peer);
            }
            Err(e) => tracing::warn!(%circuit, error = %e, "cannot listen through relay"),
        }
    }
}

/// Whether an address goes through a relay circuit.
pub(super) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether an address is on this host only.
pub(super) fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn strip_p2p(addr: Multiaddr) -> Multiaddr {
    addr.into_iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Whether an address a peer saw us at may be our public one (not loopback, not relayed).
pub(super) fn is_public_candidate(addr: &Multiaddr) -> bool {
    let ip_ok = addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        _ => false,
    });
    ip_ok && !is_relayed(addr)
}

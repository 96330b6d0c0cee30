//! The node's own Prometheus metrics, beside libp2p's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `accepted`, or the name of the rule that rejected it.
    pub result: String,
}

/// Counters and gauges of the mesh layer.
#[derive(Clone, Default)]
pub struct MeshMetrics {
    pub announcements_received: Family<ResultLabel, Counter>,
    pub announcements_published: Counter,
    pub peers_connected: Gauge,
    pub peers_known: Gauge,
    pub peers_banned: Gauge,
}

impl MeshMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = MeshMetrics::default();
        let r = registry.sub_registry_with_prefix("cocoon");
        r.register(
            "announcements_received",
            "Announcements received by gossip, by verdict",
            m.announcements_received.clone(),
        );
        r.register(
            "announcements_published",
            "Announcements this node published",
            m.announcements_published.clone(),
        );
        r.register(
            "peers_connected",
            "Peers with an open connection",
            m.peers_connected.clone(),
        );
        r.register(
            "peers_known",
            "Peers in the peer table",
            m.peers_known.clone(),
        );
        r.register(
            "peers_banned",
            "Peers currently banned",
            m.peers_banned.clone(),
        );
        m
    }

    pub fn received(&self, result: &str) {
        self.announcements_received
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

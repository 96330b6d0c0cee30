//! The libp2p swarm: one composed behaviour (thin; every decision about announcements
//! and peers is taken by `cocoon_protocol`) and the transports it runs on.
//!
//! Protocol ids (also in README.md): identify `/ipfs/id/1.0.0` (+ push), ping
//! `/ipfs/ping/1.0.0`, Kademlia [`KAD_PROTOCOL`], gossipsub `/meshsub/1.1.0` and
//! `/meshsub/1.2.0` with topic `cocoon/announce/1`, relay `/libp2p/circuit/relay/0.2.0/hop`
//! and `/stop`, DCUtR `/libp2p/dcutr`, AutoNAT `/libp2p/autonat/1.0.0`, and [`PING_PROTOCOL`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::Context;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, allow_block_list, autonat, dcutr, gossipsub, identify, kad, mdns, noise,
    ping, relay, tcp, yamux,
};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use cocoon_protocol::announce::ANNOUNCE_TOPIC;

/// The private Kademlia DHT of the mesh (a custom id keeps it apart from IPFS's).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cocoon/kad/1.0.0");
/// On-demand ping for `cocoon ping`: 32 bytes echoed back, as `/ipfs/ping/1.0.0` does.
pub const PING_PROTOCOL: StreamProtocol = StreamProtocol::new("/cocoon/ping/1.0.0");
/// Identify's protocol version string.
pub const IDENTIFY_VERSION: &str = "/cocoon/1.0.0";

/// The composed behaviour.
#[derive(libp2p::swarm::NetworkBehaviour)]
pub struct Behaviour {
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub relay_client: relay::client::Behaviour,
    pub relay_server: Toggle<relay::Behaviour>,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub stream: libp2p_stream::Behaviour,
}

/// Knobs the daemon passes to the swarm.
pub struct SwarmOptions {
    pub mdns: bool,
    pub relay_server: bool,
    pub autonat_delay: Duration,
}

/// A relay server with the default limits.
pub fn relay_server(peer: libp2p::PeerId) -> relay::Behaviour {
    relay::Behaviour::new(
        peer,
        relay::Config {
            max_circuit_duration: Duration::from_secs(600),
            max_circuit_bytes: 4 << 20,
            ..relay::Config::default()
        },
    )
}

/// Gossipsub in signed, strict-validation mode: every message waits for the daemon's
/// verdict; peer scoring on, with invalid messages on the announce topic heavily penalised.
fn gossipsub(key: &libp2p::identity::Keypair) -> anyhow::Result<gossipsub::Behaviour> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(700))
        .max_transmit_size(64 * 1024)
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec())
        })
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let mut gs =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
    let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
    let mut params = gossipsub::PeerScoreParams {
        // Loopback devnets and testbeds put many peers on one address.
        ip_colocation_factor_whitelist: HashSet::from([IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ..gossipsub::PeerScoreParams::default()
    };
    params.topics.insert(
        topic.hash(),
        // Announcements are rare, so delivery-rate penalties (P3, P3b) are off; what
        // counts is invalid messages (P4), whose penalty grows with their square.
        gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.01,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 100.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: 0.5,
            first_message_deliveries_cap: 10.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            invalid_message_deliveries_weight: -20.0,
            invalid_message_deliveries_decay: 0.5,
            ..gossipsub::TopicScoreParams::default()
        },
    );
    gs.with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| anyhow::anyhow!("gossipsub scoring: {e}"))?;
    gs.subscribe(&topic)
        .context("subscribing to the announce topic")?;
    Ok(gs)
}

/// Builds the swarm over TCP+Noise+Yamux, QUIC, DNS and relayed circuits.
/// How long a QUIC connection may go without a packet before it counts as lost.
const QUIC_IDLE_TIMEOUT_MS: u32 = 3_000;

pub fn build(
    key: libp2p::identity::Keypair,
    opts: &SwarmOptions,
    registry: &mut Registry,
) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .context("tcp transport")?
        .with_quic_config(|mut c| {
            // libp2p-quic's defaults (10 s idle, 5 s keep-alive) leave a peer that died
            // without closing (kill -9, power loss) looking alive for 10 s, and a client
            // mid-generation waiting that long to fail over; TCP learns it at once from
            // the reset. A keep-alive every second keeps live idle connections open.
            c.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
            c.keep_alive_interval = Duration::from_secs(1);
            c
        })
        .with_dns()
        .context("dns")?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .context("relay client transport")?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            let peer = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(Duration::from_secs(30));
            let mut kad =
                kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if opts.mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config {
                        query_interval: Duration::from_secs(5),
                        ..mdns::Config::default()
                    },
                    peer,
                )?)
            } else {
                None
            };
            let autonat = autonat::Behaviour::new(
                peer,
                autonat::Config {
                    boot_delay: opts.autonat_delay,
                    retry_interval: Duration::from_secs(30),
                    refresh_interval: Duration::from_secs(120),
                    only_global_ips: false,
                    throttle_server_period: Duration::from_millis(500),
                    ..autonat::Config::default()
                },
            );
            Ok(Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                relay_client,
                relay_server: Toggle::from(opts.relay_server.then(|| relay_server(peer))),
                dcutr: dcutr::Behaviour::new(peer),
                autonat,
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public())
                        .with_agent_version(format!("cocoon/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(10)),
                ),
                kad,
                gossipsub: gossipsub(key)
                    .map_err(|e| Box::<dyn std::error::Error + Send + Sync>::from(e.to_string()))?,
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| anyhow::anyhow!("building behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

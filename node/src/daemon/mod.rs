//! `cocoon node`: the daemon. Owns the swarm and drives it: feeds every announcement,
//! ping and failure to the sans-IO rules in `cocoon_protocol`, applies the bans they
//! decide, re-announces periodically and on change, and answers the control API.

mod announce;
mod control;
mod events;
mod inference;
mod metrics;
mod ping;
mod relay;
mod startup;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use libp2p::metrics::Metrics;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm};

use cocoon_protocol::announce::Prices;
use cocoon_protocol::identity::NodeIdentity;
use cocoon_protocol::membership::Membership;
use cocoon_protocol::session::CipherSuite;
use cocoon_protocol::units::{BlockRange, ModelId, Role, UnixMillis};

use crate::config::{NodeConfig, RelayServerMode, files};
use crate::swarm::Behaviour;
use metrics::MeshMetrics;

/// Peers found through announcements or mDNS are dialled only below this many connections.
const MAX_AUTO_PEERS: usize = 64;

/// Where and how to run the daemon.
pub struct DaemonArgs {
    pub data_dir: PathBuf,
    pub config: NodeConfig,
    /// Enables `POST /v1/dev/forge` (tests of the validation path).
    pub dev_forge: bool,
    /// Test tooling for the client's defences (see `cocoon node --help` hidden flags).
    pub dev_misbehave: Option<crate::infer::worker::Misbehave>,
    pub dev_announce_blocks: Option<String>,
    pub dev_tap: Option<PathBuf>,
}

fn now_ms() -> UnixMillis {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Default)]
struct PeerLive {
    connections: HashMap<ConnectionId, Multiaddr>,
    agent: Option<String>,
    protocols: Vec<String>,
    listen_addrs: Vec<Multiaddr>,
}

/// What this node announces about itself.
struct SelfDescription {
    role: Role,
    model_id: Option<ModelId>,
    n_blocks: u32,
    blocks: BlockRange,
    prices: Prices,
    throughput_milli_tps: u64,
    free_kv_tokens: u64,
    ton_wallet: String,
    ttl_ms: u64,
    /// Session cipher suites accepted as a worker and usable as a client.
    cipher_suites: Vec<CipherSuite>,
}

struct Daemon {
    swarm: Swarm<Behaviour>,
    identity: NodeIdentity,
    me: SelfDescription,
    /// Peer records, scores and bans (sans-IO, in `cocoon_protocol::membership`).
    peers: Membership,
    live: HashMap<PeerId, PeerLive>,
    announce_due: Option<Instant>,
    nat_status: String,
    relay_mode: RelayServerMode,
    relay_listening: HashSet<PeerId>,
    /// Circuit listeners by id, so a closed one can be retried.
    relay_listeners: HashMap<libp2p::core::transport::ListenerId, Multiaddr>,
    relay_retries: Vec<(Instant, Multiaddr)>,
    want_relay: bool,
    libp2p_metrics: Metrics,
    metrics: MeshMetrics,
    stream_control: libp2p_stream::Control,
    started: Instant,
    bootstrapped: bool,
    data_dir: PathBuf,
    /// Every configured listen address is on loopback (a devnet or a test).
    loopback_only: bool,
    infer: inference::InferState,
    /// Payment channels, when a TON chain is configured.
    channels: Option<Arc<crate::pay::Channels>>,
    /// An error that must stop the daemon (set by background loads).
    fatal: Option<anyhow::Error>,
}

/// Runs the daemon until Ctrl-C or SIGTERM.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone();
    let startup::Started {
        daemon: mut d,
        control: mut req_rx,
        mesh: mut mesh_rx,
        infer: mut infer_rx,
        announce_every,
        stop_pay,
        addr_path,
    } = startup::start(args).await?;
    let mut announce_tick = tokio::time::interval(announce_every);
    let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
    let mut kad_tick = tokio::time::interval(Duration::from_secs(60));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let result = loop {
        tokio::select! {
            event = d.swarm.select_next_some() => d.on_swarm_event(event),
            Some(req) = req_rx.recv() => d.on_control(req),
            Some(q) = mesh_rx.recv() => d.on_mesh_query(q),
            Some(e) = infer_rx.recv() => {
                d.on_infer_event(e);
                if let Some(e) = d.fatal.take() {
                    break Err(e);
                }
            }
            _ = announce_tick.tick() => d.schedule_announce(Duration::ZERO),
            _ = housekeeping.tick() => d.housekeeping(),
            _ = kad_tick.tick() => d.kad_bootstrap(),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };
    tracing::info!("shutting down");
    let _ = stop_pay.send(true);
    let _ = std::fs::remove_file(&addr_path);
    let _ = std::fs::remove_file(data_dir.join(files::API_ADDR));
    result
}

impl Daemon {
    fn local_peer(&self) -> PeerId {
        self.identity.peer_id()
    }
}

//! `cocoon node`: the daemon. Owns the swarm and drives it: feeds every announcement,
//! ping and failure to the sans-IO rules in `cocoon_protocol`, applies the bans they
//! decide, re-announces periodically and on change, and answers the control API.

mod inference;
mod metrics;
mod ping;

pub(crate) use inference::channel_price;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, gossipsub, identify, kad, mdns, ping as lping, relay,
};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use cocoon_protocol::announce::{
    ANNOUNCE_TOPIC, Announcement, Prices, Rejection, VerifyPolicy, sign_announcement,
    verify_announcement,
};
use cocoon_protocol::identity::NodeIdentity;
use cocoon_protocol::peers::{BanAction, PeerTable, ScorePolicy};
use cocoon_protocol::session::CipherSuite;
use cocoon_protocol::units::{BlockRange, ModelId, NanoTon, Role, SeqNo, UnixMillis};

use crate::config::{NodeConfig, RelayServerMode, files};
use crate::control::api::{ForgeKind, ModelInfo, ModelWorker, PeerDetail, PeerInfo, StatusInfo};
use crate::control::server::ControlRequest;
use crate::swarm::{self, Behaviour, BehaviourEvent, SwarmOptions};
use metrics::MeshMetrics;

/// Where a control request's answer goes.
type Reply<T> = tokio::sync::oneshot::Sender<Result<T, String>>;

/// Peers found through announcements or mDNS are dialled only below this many connections.
const MAX_AUTO_PEERS: usize = 64;

/// Relay hop protocol, advertised through identify by peers that relay.
const RELAY_HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

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

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
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
    table: PeerTable,
    live: HashMap<PeerId, PeerLive>,
    policy: VerifyPolicy,
    last_seqno: Option<SeqNo>,
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
    let DaemonArgs {
        data_dir,
        mut config,
        dev_forge,
        dev_misbehave,
        dev_announce_blocks,
        dev_tap,
    } = args;
    let identity = crate::keys::load_or_create_identity(&data_dir)?;
    if let Some(p) = &config.model {
        config.model = Some(crate::default_model::resolve(&p.to_string_lossy())?);
    }
    let (model_id, n_blocks, block_bytes) = match &config.model {
        Some(path) => {
            let d = crate::model_info::describe_model(path)?;
            // The file, not the configuration, says how many blocks the model has.
            config.n_blocks = d.n_blocks;
            (Some(d.id), d.n_blocks, d.block_bytes)
        }
        None => (config.parsed_model_id()?, config.n_blocks, Vec::new()),
    };
    let auto_span = config.auto_span_within(&block_bytes)?;
    let blocks = if model_id.is_none() && config.blocks.is_none() {
        if config.role == Role::Worker {
            tracing::warn!("no model (--model or --model-id): this worker serves no blocks");
        }
        BlockRange::EMPTY
    } else {
        config.block_range()?
    };
    anyhow::ensure!(
        blocks.is_empty() || model_id.is_some(),
        "serving blocks {blocks} needs a model: pass --model FILE or --model-id HEX"
    );
    let infer_blocks = blocks;
    // A worker with a model file announces its blocks once they are loaded.
    let loads_blocks = config.role == Role::Worker && config.model.is_some();
    let mut me = SelfDescription {
        role: config.role,
        model_id,
        n_blocks,
        blocks: if loads_blocks {
            BlockRange::EMPTY
        } else {
            blocks
        },
        prices: Prices {
            prompt: NanoTon(config.price_prompt_nanoton),
            completion: NanoTon(config.price_completion_nanoton),
        },
        throughput_milli_tps: (config.throughput_tps.max(0.0) * 1000.0) as u64,
        free_kv_tokens: config.free_kv_tokens,
        ton_wallet: config.ton_wallet.clone(),
        ttl_ms: config.announce_ttl_secs.max(10) * 1000,
        cipher_suites: config.session_cipher.suites(),
    };
    let api_listen: std::net::SocketAddr = config
        .api_listen
        .parse()
        .with_context(|| format!("--api-listen {}", config.api_listen))?;
    let dev_announce_blocks = dev_announce_blocks
        .map(|b| b.parse::<BlockRange>())
        .transpose()
        .context("--dev-announce-blocks")?;
    let infer_setup = inference::InferSetup {
        model_path: config.model.clone(),
        blocks: infer_blocks,
        auto_span,
        backend: config.backend,
        kv_budget_bytes: config.kv_budget_mib << 20,
        forward_timeout: Duration::from_secs(config.forward_timeout_secs.max(1)),
        local_blocks: config.local_blocks,
        channel_deposit_nanoton: config.channel_deposit_nanoton,
        api_listen,
        dev_announce_blocks,
        dev_misbehave,
        dev_tap,
    };

    let mut registry = Registry::default();
    let relay_on = config.relay_server == RelayServerMode::On || config.role == Role::Relay;
    let mut swarm = swarm::build(
        identity.libp2p_keypair(),
        &SwarmOptions {
            mdns: config.mdns,
            relay_server: relay_on,
            autonat_delay: Duration::from_secs(config.autonat_delay_secs),
        },
        &mut registry,
    )?;
    let libp2p_metrics = Metrics::new(&mut registry);
    let metrics = MeshMetrics::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));

    // `--listen none`: no direct listener at all (a node reachable only through relays).
    for addr in config.listen.iter().filter(|a| a.as_str() != "none") {
        let ma: Multiaddr = addr.parse().with_context(|| format!("--listen {addr}"))?;
        swarm
            .listen_on(ma)
            .with_context(|| format!("listening on {addr}"))?;
    }
    for addr in &config.bootstrap {
        let ma: Multiaddr = addr
            .parse()
            .with_context(|| format!("--bootstrap {addr}"))?;
        if let Some(Protocol::P2p(peer)) = ma.iter().last() {
            swarm.behaviour_mut().kad.add_address(&peer, ma.clone());
        }
        if let Err(e) = swarm.dial(ma.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let mut relay_listening = HashSet::new();
    let mut relay_listeners = HashMap::new();
    for addr in &config.relays {
        let ma: Multiaddr = addr.parse().with_context(|| format!("--relay {addr}"))?;
        let Some(Protocol::P2p(relay_peer)) = ma.iter().last() else {
            anyhow::bail!("--relay {addr} must end in /p2p/<peer id>");
        };
        swarm
            .dial(ma.clone())
            .with_context(|| format!("dialing relay {addr}"))?;
        let circuit = ma.with(Protocol::P2pCircuit);
        let id = swarm
            .listen_on(circuit.clone())
            .with_context(|| format!("listening through relay {addr}"))?;
        relay_listeners.insert(id, circuit);
        relay_listening.insert(relay_peer);
    }

    let mut stream_control = swarm.behaviour().stream.new_control();
    let (stop_pay, pay_stopped) = tokio::sync::watch::channel(false);
    let channels = if config.ton_url.is_empty() {
        None
    } else {
        let settings = crate::pay::TonSettings {
            url: config.ton_url.clone(),
            api_key: config.ton_api_key.clone(),
        };
        let seed = identity.ed25519_secret();
        let channels =
            crate::pay::Channels::load(&data_dir, &settings, &seed, stream_control.clone())
                .context("payment channels")?;
        channels.spawn(pay_stopped)?;
        let url_path = data_dir.join(files::TON_URL);
        std::fs::write(&url_path, format!("{}\n", config.ton_url))
            .with_context(|| format!("writing {}", url_path.display()))?;
        if me.ton_wallet.is_empty() {
            me.ton_wallet = cocoon_ton::address::raw(channels.wallet_address());
        }
        tracing::info!(wallet = %me.ton_wallet, chain = %config.ton_url, "payment channels on");
        Some(channels)
    };
    let incoming = stream_control
        .accept(swarm::PING_PROTOCOL)
        .map_err(|_| anyhow::anyhow!("ping protocol registered twice"))?;
    tokio::spawn(ping::serve(incoming));
    let (mesh_tx, mut mesh_rx) = mpsc::channel(64);
    let (infer_tx, mut infer_rx) = mpsc::unbounded_channel();
    let infer = inference::InferState {
        setup: infer_setup,
        engine: None,
        events: infer_tx,
        mesh: crate::infer::MeshLink {
            queries: mesh_tx,
            control: stream_control.clone(),
        },
        place_at: None,
        failover: cocoon_protocol::failover::FailoverPolicy {
            max_replans: 8,
            stall_timeout_ms: config.forward_timeout_secs.max(1) * 1000,
            ..Default::default()
        },
    };

    let cookie = crate::control::create_cookie(&data_dir)?;
    let (req_tx, mut req_rx) = mpsc::channel(64);
    let (control_addr, server) = crate::control::server::bind(
        config.control_port,
        cookie,
        req_tx,
        registry.clone(),
        dev_forge,
    )
    .await?;
    let addr_path = data_dir.join(files::CONTROL_ADDR);
    std::fs::write(&addr_path, format!("{control_addr}\n"))
        .with_context(|| format!("writing {}", addr_path.display()))?;
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "control API stopped");
        }
    });
    tracing::info!(peer_id = %identity.peer_id(), control = %control_addr, data_dir = %data_dir.display(), role = %config.role, "node started");

    let mut d = Daemon {
        swarm,
        identity,
        me,
        table: PeerTable::new(ScorePolicy::default()),
        live: HashMap::new(),
        policy: VerifyPolicy::default(),
        last_seqno: None,
        announce_due: Some(Instant::now() + Duration::from_millis(500)),
        nat_status: "unknown".into(),
        relay_mode: if relay_on {
            RelayServerMode::On
        } else {
            config.relay_server
        },
        relay_listening,
        relay_listeners,
        relay_retries: Vec::new(),
        want_relay: false,
        libp2p_metrics,
        metrics,
        stream_control,
        started: Instant::now(),
        bootstrapped: false,
        data_dir: data_dir.clone(),
        loopback_only: !config.listen.is_empty()
            && config
                .listen
                .iter()
                .all(|a| a.parse::<Multiaddr>().is_ok_and(|ma| is_loopback(&ma))),
        infer,
        channels,
        fatal: None,
    };
    d.start_inference();

    let mut announce_tick =
        tokio::time::interval(Duration::from_secs(config.announce_interval_secs.max(1)));
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

    fn schedule_announce(&mut self, delay: Duration) {
        let at = Instant::now() + delay;
        self.announce_due = Some(self.announce_due.map_or(at, |d| d.min(at)));
    }

    fn housekeeping(&mut self) {
        let now = now_ms();
        for action in self.table.expire(now) {
            if let BanAction::Unban { peer } = action {
                tracing::info!(%peer, "ban expired");
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            }
        }
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
        self.metrics.peers_known.set(self.table.len() as i64);
        let banned = self
            .table
            .iter()
            .filter(|(p, _)| self.table.is_banned(p, now))
            .count();
        self.metrics.peers_banned.set(banned as i64);
    }

    fn kad_bootstrap(&mut self) {
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            tracing::debug!(error = %e, "kademlia bootstrap skipped");
        }
    }

    /// The addresses to announce. A node listening through relays is behind a NAT: it
    /// announces only its relayed addresses, so peers come through the relay and DCUtR
    /// upgrades the connection (a direct dial would only hit the NAT).
    fn my_addrs(&self) -> Vec<Multiaddr> {
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

    fn my_announcement(&mut self, now: UnixMillis) -> Announcement {
        let seqno = SeqNo::next(self.last_seqno, now);
        self.last_seqno = Some(seqno);
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

    fn publish(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {
                self.metrics.announcements_published.inc();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn announce(&mut self) {
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

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
                self.table.record_seen(peer_id, now_ms());
                if self.table.is_banned(&peer_id, now_ms()) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
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
                if let Some(action) = self.table.record_failure(peer, now_ms()) {
                    self.apply(action);
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, action: BanAction) {
        match action {
            BanAction::Ban { peer, until } => {
                tracing::warn!(%peer, secs = until.saturating_sub(now_ms()) / 1000, "peer banned");
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
            }
            BanAction::Unban { peer } => {
                self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .remove_blacklisted_peer(&peer);
            }
        }
    }

    /// Dials a peer we learnt of (announcement, mDNS), unless connected, banned, or we
    /// already hold [`MAX_AUTO_PEERS`] connections. Concurrent with any dial already in
    /// flight (a Kademlia query may be trying stale addresses).
    fn dial_known(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == self.local_peer()
            || self.swarm.is_connected(&peer)
            || self.table.is_banned(&peer, now_ms())
            || self.swarm.connected_peers().count() >= MAX_AUTO_PEERS
        {
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

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
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
                    Ok(rtt) => self
                        .table
                        .record_rtt(peer, rtt.as_micros() as u64, now_ms()),
                    Err(err) => {
                        tracing::debug!(%peer, error = %err, "ping failed");
                        if let Some(a) = self.table.record_failure(peer, now_ms()) {
                            self.apply(a);
                        }
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

    fn enable_relay_server(&mut self) {
        if self.relay_mode == RelayServerMode::Auto
            && !self.swarm.behaviour().relay_server.is_enabled()
        {
            tracing::info!("AutoNAT says public: serving as a relay from now on");
            let peer = self.local_peer();
            self.swarm.behaviour_mut().relay_server = Some(swarm::relay_server(peer)).into();
        }
    }

    fn listen_via_relay(&mut self, relay_peer: PeerId) {
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

    fn on_gossip(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let now = now_ms();
                let table = &self.table;
                let verdict =
                    verify_announcement(&message.data, now, &self.policy, |p| table.last_seqno(p));
                let acceptance = match verdict {
                    Ok(ann) => {
                        let author = ann.peer_id().ok();
                        self.metrics.received("accepted");
                        let mut addrs: Vec<Multiaddr> = ann
                            .listen_addrs
                            .iter()
                            .filter_map(|b| Multiaddr::try_from(b.clone()).ok())
                            .collect();
                        // A peer that listens through a relay is behind a NAT: reach it
                        // through the relay and let DCUtR punch the direct path.
                        if addrs.iter().any(is_relayed) {
                            addrs.retain(is_relayed);
                        }
                        tracing::debug!(author = ?author, seqno = %ann.seqno, via = %propagation_source, "announcement accepted");
                        self.table.record_announcement(ann, now);
                        if let Some(author) = author {
                            if !addrs.is_empty() {
                                self.live.entry(author).or_default().listen_addrs = addrs.clone();
                            }
                            self.dial_known(author, addrs);
                        }
                        gossipsub::MessageAcceptance::Accept
                    }
                    Err(rejection) => self.on_rejection(propagation_source, &rejection, now),
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

    fn on_rejection(
        &mut self,
        from: PeerId,
        rejection: &Rejection,
        now: UnixMillis,
    ) -> gossipsub::MessageAcceptance {
        self.metrics.received(rejection.rule());
        match rejection.verdict() {
            cocoon_protocol::announce::Verdict::Ignore => {
                tracing::debug!(peer = %from, %rejection, "announcement ignored");
                gossipsub::MessageAcceptance::Ignore
            }
            cocoon_protocol::announce::Verdict::Reject => {
                tracing::warn!(peer = %from, rule = rejection.rule(), "announcement from {from} rejected: {rejection}");
                if let Some(a) = self.table.record_rejection(from, rejection, now) {
                    self.apply(a);
                }
                gossipsub::MessageAcceptance::Reject
            }
        }
    }

    fn peer_info(&self, peer: &PeerId) -> PeerInfo {
        let now = now_ms();
        let rec = self.table.get(peer);
        let live = self.live.get(peer);
        let conns: Vec<&Multiaddr> = live
            .map(|l| l.connections.values().collect())
            .unwrap_or_default();
        let connection = if conns.is_empty() {
            "none"
        } else if conns.iter().any(|a| !is_relayed(a)) {
            "direct"
        } else {
            "relayed"
        };
        let addresses: Vec<String> = if conns.is_empty() {
            live.map(|l| l.listen_addrs.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default()
        } else {
            conns.iter().map(|a| a.to_string()).collect()
        };
        let ann = rec.and_then(|r| r.announcement.as_ref());
        PeerInfo {
            peer_id: peer.to_string(),
            connected: !conns.is_empty(),
            connection: connection.into(),
            addresses,
            rtt_ms: rec.and_then(|r| r.rtt_us).map(|us| us as f64 / 1000.0),
            path_rtt_ms: rec
                .and_then(|r| r.path_rtt_us())
                .map(|us| us as f64 / 1000.0),
            role: ann.map(|a| a.role.to_string()),
            model_id: ann.and_then(|a| a.model_id).map(|m| m.to_hex()),
            blocks: ann.map(|a| a.blocks.to_string()),
            score: self.table.score(peer),
            gossip_score: self.swarm.behaviour().gossipsub.peer_score(peer),
            rejections: rec.map_or(0, |r| r.rejections),
            last_rejection: rec.and_then(|r| r.last_rejection).map(str::to_owned),
            failures: rec.map_or(0, |r| r.failures),
            banned: self.table.is_banned(peer, now),
            agent: live.and_then(|l| l.agent.clone()),
        }
    }

    fn all_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.table.iter().map(|(p, _)| *p).collect();
        for (p, l) in &self.live {
            if !l.connections.is_empty() && !peers.contains(p) {
                peers.push(*p);
            }
        }
        peers.retain(|p| *p != self.local_peer());
        peers.sort();
        peers
    }

    fn on_control(&mut self, req: ControlRequest) {
        match req {
            ControlRequest::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ControlRequest::Peers(tx) => {
                let list = self.all_peers().iter().map(|p| self.peer_info(p)).collect();
                let _ = tx.send(list);
            }
            ControlRequest::Peer(id, tx) => {
                let res = id
                    .parse::<PeerId>()
                    .map_err(|_| format!("{id:?} is not a peer id"))
                    .and_then(|p| {
                        if self.table.get(&p).is_none() && !self.live.contains_key(&p) {
                            return Err(format!("peer {p} is not known to this node"));
                        }
                        let ann = self
                            .table
                            .get(&p)
                            .and_then(|r| r.announcement.as_ref())
                            .map(announcement_json);
                        Ok(PeerDetail {
                            peer: self.peer_info(&p),
                            protocols: self
                                .live
                                .get(&p)
                                .map(|l| l.protocols.clone())
                                .unwrap_or_default(),
                            announcement: ann,
                        })
                    });
                let _ = tx.send(res);
            }
            ControlRequest::Ping(id, count, tx) => match id.parse::<PeerId>() {
                Ok(peer) => {
                    let addrs = self
                        .live
                        .get(&peer)
                        .map(|l| l.listen_addrs.clone())
                        .unwrap_or_default();
                    if !self.swarm.is_connected(&peer) {
                        self.dial_known(peer, addrs);
                    }
                    tokio::spawn(ping::ping(self.stream_control.clone(), peer, count, tx));
                }
                Err(_) => {
                    let _ = tx.send(Err(format!("{id:?} is not a peer id")));
                }
            },
            ControlRequest::Models(tx) => {
                let _ = tx.send(self.models());
            }
            ControlRequest::Forge(kind, tx) => {
                let _ = tx.send(self.forge(kind));
            }
            ControlRequest::Routes(model, k, tx) => {
                let _ = tx.send(self.routes(&model, k));
            }
            ControlRequest::Channels(tx) => {
                let Some((tx, ch)) = self.channels_or_refuse(tx) else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = tx.send(ch.list().await.map_err(|e| format!("{e:#}")));
                });
            }
            ControlRequest::ChannelOpen(peer, deposit, tx) => {
                let Some((tx, ch)) = self.channels_or_refuse(tx) else {
                    return;
                };
                match self.channel_peer(&peer) {
                    Ok((peer, key, wallet)) => {
                        tokio::spawn(async move {
                            let res = ch
                                .open_with(
                                    peer,
                                    key,
                                    &wallet,
                                    cocoon_protocol::channel::NanoTon(deposit),
                                )
                                .await;
                            let _ = tx.send(res.map_err(|e| format!("{e:#}")));
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            ControlRequest::ChannelClose(id, force, tx) => {
                let Some((tx, ch)) = self.channels_or_refuse(tx) else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = tx.send(ch.close(&id, force).await.map_err(|e| format!("{e:#}")));
                });
            }
        }
    }

    /// The channels, or an error answer when this node has no chain configured.
    fn channels_or_refuse<T>(&self, tx: Reply<T>) -> Option<(Reply<T>, Arc<crate::pay::Channels>)> {
        match &self.channels {
            Some(ch) => Some((tx, ch.clone())),
            None => {
                let _ = tx.send(Err(
                    "this node has no TON chain configured (start it with --ton-url)".into(),
                ));
                None
            }
        }
    }

    /// A peer's channel key and wallet, from its verified announcement.
    fn channel_peer(&self, id: &str) -> Result<(PeerId, [u8; 32], String), String> {
        let peer: PeerId = id.parse().map_err(|_| format!("{id:?} is not a peer id"))?;
        let ann = self
            .table
            .get(&peer)
            .and_then(|r| r.announcement.as_ref())
            .ok_or_else(|| format!("no announcement from {peer} is known to this node"))?;
        if ann.ton_wallet.is_empty() {
            return Err(format!("{peer} announces no TON wallet"));
        }
        Ok((peer, ann.node_key, ann.ton_wallet.clone()))
    }

    fn status(&self) -> StatusInfo {
        StatusInfo {
            peer_id: self.local_peer().to_string(),
            role: self.me.role.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            nat_status: self.nat_status.clone(),
            relay_server: self.swarm.behaviour().relay_server.is_enabled(),
            model_id: self.me.model_id.map(|m| m.to_hex()),
            n_blocks: self.me.n_blocks,
            blocks: self.me.blocks.to_string(),
            connected_peers: self
                .live
                .values()
                .filter(|l| !l.connections.is_empty())
                .count(),
            known_peers: self.all_peers().len(),
            announcements: self.table.announcements().count(),
            uptime_secs: self.started.elapsed().as_secs(),
            noise_static_key: hex::encode(self.identity.noise_public_key()),
        }
    }

    fn models(&self) -> Vec<ModelInfo> {
        let mut by_model: HashMap<ModelId, (u32, Vec<&Announcement>)> = HashMap::new();
        let mine = self.me.model_id.map(|m| (m, self.me.n_blocks));
        if let Some((m, n)) = mine {
            by_model.entry(m).or_insert((n, Vec::new()));
        }
        for a in self.table.announcements() {
            if let Some(m) = a.model_id {
                let e = by_model.entry(m).or_insert((a.n_blocks, Vec::new()));
                e.0 = e.0.max(a.n_blocks);
                if !a.blocks.is_empty() {
                    e.1.push(a);
                }
            }
        }
        let mut out: Vec<ModelInfo> = by_model
            .into_iter()
            .map(|(model, (n_blocks, anns))| {
                let mut covered = vec![false; n_blocks as usize];
                let mut workers: Vec<ModelWorker> = anns
                    .iter()
                    .map(|a| {
                        for b in a.blocks.start()..a.blocks.end().min(n_blocks) {
                            covered[b as usize] = true;
                        }
                        ModelWorker {
                            peer_id: a.peer_id().map(|p| p.to_string()).unwrap_or_default(),
                            blocks: a.blocks.to_string(),
                            price_prompt_nanoton: a.prices.prompt.0,
                            price_completion_nanoton: a.prices.completion.0,
                            throughput_tps: a.throughput_milli_tps as f64 / 1000.0,
                        }
                    })
                    .collect();
                if self.me.model_id == Some(model) && !self.me.blocks.is_empty() {
                    for b in self.me.blocks.start()..self.me.blocks.end().min(n_blocks) {
                        covered[b as usize] = true;
                    }
                    workers.push(ModelWorker {
                        peer_id: format!("{} (self)", self.local_peer()),
                        blocks: self.me.blocks.to_string(),
                        price_prompt_nanoton: self.me.prices.prompt.0,
                        price_completion_nanoton: self.me.prices.completion.0,
                        throughput_tps: self.me.throughput_milli_tps as f64 / 1000.0,
                    });
                }
                workers.sort_by(|a, b| a.blocks.cmp(&b.blocks));
                let covered_blocks = covered.iter().filter(|c| **c).count() as u32;
                ModelInfo {
                    model_id: model.to_hex(),
                    n_blocks,
                    covered_blocks,
                    complete: covered_blocks == n_blocks,
                    workers,
                }
            })
            .collect();
        out.sort_by(|a, b| a.model_id.cmp(&b.model_id));
        out
    }

    /// Publishes a deliberately invalid announcement (only with `--dev-forge`).
    fn forge(&mut self, kind: ForgeKind) -> Result<String, String> {
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

fn is_loopback(addr: &Multiaddr) -> bool {
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
fn is_public_candidate(addr: &Multiaddr) -> bool {
    let ip_ok = addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        _ => false,
    });
    ip_ok && !is_relayed(addr)
}

fn announcement_json(a: &Announcement) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        let addrs: Vec<String> = a
            .listen_addrs
            .iter()
            .map(|b| {
                Multiaddr::try_from(b.clone()).map_or_else(|_| hex::encode(b), |m| m.to_string())
            })
            .collect();
        obj.insert("listen_addrs".into(), serde_json::json!(addrs));
        obj.insert(
            "peer_id".into(),
            serde_json::json!(a.peer_id().map(|p| p.to_string()).unwrap_or_default()),
        );
    }
    v
}

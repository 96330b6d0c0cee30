//! Starting the daemon: the node's identity and model, what it announces about itself,
//! the swarm with its listeners, bootstrap peers and relays, the payment channels and
//! the control API, in the order they depend on each other.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::Multiaddr;
use libp2p::metrics::Metrics;
use libp2p::multiaddr::Protocol;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use cocoon_protocol::announce::{Prices, VerifyPolicy};
use cocoon_protocol::membership::Membership;
use cocoon_protocol::peers::ScorePolicy;
use cocoon_protocol::units::{BlockRange, NanoTon, Role};

use super::metrics::MeshMetrics;
use super::relay::is_loopback;
use super::{Daemon, DaemonArgs, MAX_AUTO_PEERS, SelfDescription, inference, ping};
use crate::config::{RelayServerMode, files};
use crate::control::server::ControlRequest;
use crate::infer::MeshQuery;
use crate::swarm::{self, SwarmOptions};

/// A started daemon and what its loop listens to.
pub(super) struct Started {
    pub daemon: Daemon,
    pub control: mpsc::Receiver<ControlRequest>,
    pub mesh: mpsc::Receiver<MeshQuery>,
    pub infer: mpsc::UnboundedReceiver<inference::InferEvent>,
    pub announce_every: Duration,
    /// Tells the payment channels' background tasks to stop.
    pub stop_pay: watch::Sender<bool>,
    /// The file that tells local tools where the control API listens.
    pub addr_path: PathBuf,
}

/// Builds the daemon from its arguments: identity, model, swarm and listeners, relays,
/// payment channels, the control API; inference is started.
pub(super) async fn start(args: DaemonArgs) -> anyhow::Result<Started> {
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
    let (mesh_tx, mesh_rx) = mpsc::channel(64);
    let (infer_tx, infer_rx) = mpsc::unbounded_channel();
    let infer = inference::InferState {
        setup: infer_setup,
        engine: None,
        events: infer_tx,
        mesh: crate::infer::MeshLink {
            queries: mesh_tx,
            control: stream_control.clone(),
        },
        place_at: None,
        // The client's policy (one default for the node, `cocoon routes` and the
        // simulator), with the stall timeout this node was configured with.
        failover: cocoon_protocol::failover::FailoverPolicy {
            stall_timeout_ms: config.forward_timeout_secs.max(1) * 1000,
            ..cocoon_protocol::client::ClientPolicy::default().failover
        },
    };

    let cookie = crate::control::create_cookie(&data_dir)?;
    let (req_tx, req_rx) = mpsc::channel(64);
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
        me,
        peers: Membership::new(
            identity.peer_id(),
            ScorePolicy::default(),
            VerifyPolicy::default(),
            MAX_AUTO_PEERS,
        ),
        identity,
        live: HashMap::new(),
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
    Ok(Started {
        daemon: d,
        control: req_rx,
        mesh: mesh_rx,
        infer: infer_rx,
        announce_every: Duration::from_secs(config.announce_interval_secs.max(1)),
        stop_pay,
        addr_path,
    })
}

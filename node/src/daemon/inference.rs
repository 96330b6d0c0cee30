//! The daemon's inference duties: loading the worker's block range (or picking it with
//! `--blocks auto`), serving `/cocoon/infer/1`, loading the client's generator and its
//! OpenAI API, and answering the generator's questions about the mesh.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_protocol::client::ClientPolicy;
use cocoon_protocol::failover::{self, FailoverPolicy};
use cocoon_protocol::route::{self, Candidate};
use cocoon_protocol::units::{BlockRange, ModelId, Role};
use tokio::sync::mpsc;

use super::{Daemon, now_ms};
use crate::cmd::run::Backend;
use crate::config::files;
use crate::control::api::{RouteHop, RouteInfo, RoutesInfo};
use crate::infer::client::ClientPay;
use crate::infer::engine::EngineHandle;
use crate::infer::generator::Generator;
use crate::infer::tap::Tap;
use crate::infer::worker::{Misbehave, WorkerPay, WorkerService};
use crate::infer::{MeshLink, MeshQuery, WorkerView, infer_protocol};

/// How this node takes part in inference.
pub struct InferSetup {
    /// The GGUF file, when the node has the model.
    pub model_path: Option<PathBuf>,
    /// The blocks to load (empty with `--blocks auto` until placed).
    pub blocks: BlockRange,
    /// `--blocks auto`: the span length to place once the mesh has been seen.
    pub auto_span: Option<u32>,
    pub backend: Backend,
    pub kv_budget_bytes: usize,
    pub forward_timeout: Duration,
    pub local_blocks: bool,
    /// Deposit of a channel the client opens on demand to pay a worker.
    pub channel_deposit_nanoton: u64,
    pub api_listen: SocketAddr,
    /// Blocks announced instead of the ones served (a lying worker, for tests).
    pub dev_announce_blocks: Option<BlockRange>,
    pub dev_misbehave: Option<Misbehave>,
    pub dev_tap: Option<PathBuf>,
}

/// Results of background loads, delivered to the daemon loop.
pub enum InferEvent {
    EngineReady(anyhow::Result<EngineHandle>),
    GeneratorReady(anyhow::Result<Arc<Generator>>),
}

/// Inference state the daemon holds.
pub struct InferState {
    pub setup: InferSetup,
    pub engine: Option<EngineHandle>,
    pub events: mpsc::UnboundedSender<InferEvent>,
    pub mesh: MeshLink,
    /// When `--blocks auto` places its span.
    pub place_at: Option<Instant>,
    /// How failed hops are charged (the client's `ClientPolicy::failover` with the
    /// node's stall timeout; the generation itself decides when to give up).
    pub failover: FailoverPolicy,
}

/// How long `--blocks auto` listens to announcements before choosing.
pub const AUTO_PLACEMENT_DELAY: Duration = Duration::from_secs(4);

impl Daemon {
    /// Starts what the role and model call for: a worker loads its blocks (now, or after
    /// [`AUTO_PLACEMENT_DELAY`] with `--blocks auto`), a client loads its generator.
    pub(super) fn start_inference(&mut self) {
        if self.me.role == Role::Worker && self.infer.setup.auto_span.is_some() {
            self.infer.place_at = Some(Instant::now() + AUTO_PLACEMENT_DELAY);
            return;
        }
        let Some(path) = self.infer.setup.model_path.clone() else {
            return;
        };
        match self.me.role {
            Role::Worker if !self.infer.setup.blocks.is_empty() => {
                self.load_engine(path, self.infer.setup.blocks)
            }
            Role::Client => {
                let Some(model_id) = self.me.model_id else {
                    return;
                };
                let (mesh, events) = (self.infer.mesh.clone(), self.infer.events.clone());
                let (backend, secret) = (
                    self.infer.setup.backend,
                    zeroize::Zeroizing::new(*self.identity.noise_secret()),
                );
                let forward_timeout = self.infer.setup.forward_timeout;
                let local = self.infer.setup.local_blocks;
                let suites = self.me.cipher_suites.clone();
                let pay = self.channels.clone().map(|channels| ClientPay {
                    channels,
                    deposit: cocoon_protocol::channel::NanoTon(u128::from(
                        self.infer.setup.channel_deposit_nanoton,
                    )),
                });
                tokio::task::spawn_blocking(move || {
                    let g = Generator::load(&path, model_id, backend, local, mesh, secret).map(
                        |mut g| {
                            g.forward_timeout = forward_timeout;
                            g.pay = pay;
                            g.cipher_suites = suites;
                            Arc::new(g)
                        },
                    );
                    let _ = events.send(InferEvent::GeneratorReady(g));
                });
            }
            _ => {}
        }
    }

    fn load_engine(&mut self, path: PathBuf, blocks: BlockRange) {
        let (backend, budget) = (self.infer.setup.backend, self.infer.setup.kv_budget_bytes);
        let events = self.infer.events.clone();
        tracing::info!(%blocks, "loading blocks");
        tokio::task::spawn_blocking(move || {
            let range = blocks.start() as usize..blocks.end() as usize;
            let e = EngineHandle::start(&path, range, budget, backend);
            let _ = events.send(InferEvent::EngineReady(e));
        });
    }

    /// `--blocks auto`: once the mesh has been heard, serve the span that raises the
    /// swarm's weakest blocks (a decision of `cocoon_protocol::route`).
    pub(super) fn maybe_place(&mut self) {
        if self.infer.place_at.is_none_or(|t| t > Instant::now()) {
            return;
        }
        self.infer.place_at = None;
        let (Some(span), Some(model)) = (self.infer.setup.auto_span, self.me.model_id) else {
            return;
        };
        let others: Vec<Candidate> = self
            .worker_views(model)
            .into_iter()
            .map(|w| route::placement_candidate(w.candidate))
            .collect();
        // Our own speed is unknown until loaded; rank spans by the others alone.
        match route::choose_span(self.me.n_blocks, span, &others, 1000) {
            Ok(blocks) => {
                tracing::info!(%blocks, seen = others.len(), "--blocks auto chose a span");
                self.infer.setup.blocks = blocks;
                match self.infer.setup.model_path.clone() {
                    Some(path) => self.load_engine(path, blocks),
                    // Without a model file the node only announces (devnets, tests).
                    None => {
                        self.me.blocks = blocks;
                        self.schedule_announce(Duration::ZERO);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "--blocks auto could not choose a span"),
        }
    }

    pub(super) fn on_infer_event(&mut self, event: InferEvent) {
        match event {
            InferEvent::EngineReady(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "cannot load the model's blocks");
                self.fatal = Some(e.context("loading the model's blocks"));
            }
            InferEvent::EngineReady(Ok(engine)) => {
                let info = engine.info().clone();
                tracing::info!(
                    blocks = ?info.blocks, device = %info.device,
                    tps = format!("{:.1}", info.decode_tokens_per_second),
                    ciphers = ?self.me.cipher_suites,
                    "blocks loaded; serving /cocoon/infer/1"
                );
                if self.me.throughput_milli_tps == 0 {
                    self.me.throughput_milli_tps = (info.decode_tokens_per_second * 1000.0) as u64;
                }
                let served = self.infer.setup.blocks;
                self.me.blocks = served;
                if let Some(lie) = self.infer.setup.dev_announce_blocks {
                    tracing::warn!(%served, announced = %lie, "misbehaving: announcing blocks not served");
                    self.me.blocks = lie;
                }
                let Some(model_id) = self.me.model_id else {
                    return;
                };
                let mut service = WorkerService::new(
                    engine.clone(),
                    model_id,
                    zeroize::Zeroizing::new(*self.identity.noise_secret()),
                );
                service.misbehave = self.infer.setup.dev_misbehave;
                service.pay = self.channels.clone().map(|channels| WorkerPay {
                    channels,
                    price: cocoon_protocol::channel::Price::from(self.me.prices),
                    credit_window: None,
                });
                if let Some(path) = &self.infer.setup.dev_tap {
                    match Tap::create(path) {
                        Ok(t) => service.tap = Some(t),
                        Err(e) => tracing::error!(error = %e, "cannot open the stream tap"),
                    }
                }
                // One listener per suite offered: the stream's protocol id names the suite.
                let service = Arc::new(service);
                for &suite in &self.me.cipher_suites {
                    match self.stream_control.accept(infer_protocol(suite)) {
                        Ok(incoming) => {
                            tokio::spawn(service.clone().serve(suite, incoming));
                        }
                        Err(_) => tracing::error!("{} registered twice", infer_protocol(suite)),
                    }
                }
                self.infer.engine = Some(engine);
                self.schedule_announce(Duration::ZERO);
            }
            InferEvent::GeneratorReady(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "cannot load the model's head");
                self.fatal = Some(e.context("loading the model's head"));
            }
            InferEvent::GeneratorReady(Ok(generator)) => {
                let addr = self.infer.setup.api_listen;
                let events = self.infer.events.clone();
                let data_dir = self.data_dir.clone();
                tokio::spawn(async move {
                    match crate::openai::bind(addr, generator).await {
                        Ok((bound, server)) => {
                            let path = data_dir.join(files::API_ADDR);
                            if let Err(e) = std::fs::write(&path, format!("{bound}\n")) {
                                tracing::error!(error = %e, "cannot write {}", path.display());
                            }
                            tracing::info!(api = %format!("http://{bound}/v1"), "OpenAI API ready");
                            if let Err(e) = server.await {
                                tracing::error!(error = %e, "OpenAI API stopped");
                            }
                        }
                        Err(e) => {
                            let _ = events.send(InferEvent::GeneratorReady(Err(e)));
                        }
                    }
                });
            }
        }
    }

    /// Live, unbanned workers of `model` as route candidates (`PeerTable::candidates`),
    /// with what reaching and paying them takes.
    pub(super) fn worker_views(&self, model: ModelId) -> Vec<WorkerView> {
        self.peers
            .table()
            .candidates(model, now_ms())
            .map(|(candidate, a)| WorkerView {
                candidate,
                noise_key: a.noise_static_key,
                node_key: a.node_key,
                wallet: a.ton_wallet.clone(),
                cipher_suites: a.cipher_suites.clone(),
            })
            .collect()
    }

    pub(super) fn on_mesh_query(&mut self, q: MeshQuery) {
        match q {
            MeshQuery::Workers { model, reply } => {
                let _ = reply.send(self.worker_views(model));
            }
            MeshQuery::Charge { peer, fault } => {
                tracing::warn!(%peer, fault = fault.as_str(), "inference fault");
                let ban = failover::charge(
                    &self.infer.failover,
                    self.peers.table_mut(),
                    peer,
                    fault,
                    now_ms(),
                );
                self.peers.apply(ban);
                self.apply_mesh_actions();
            }
            MeshQuery::Dial { peer } => {
                let addrs = self
                    .live
                    .get(&peer)
                    .map(|l| l.listen_addrs.clone())
                    .unwrap_or_default();
                self.dial_known(peer, addrs);
            }
        }
    }

    /// `cocoon routes`: coverage and the `k` best chains for `model` (hex id; empty: this
    /// node's model).
    pub(super) fn routes(&self, model: &str, k: usize) -> Result<RoutesInfo, String> {
        let model = if model.is_empty() {
            self.me
                .model_id
                .ok_or("this node has no model: name one (64 hex digits)")?
        } else {
            model.parse::<ModelId>().map_err(|e| e.to_string())?
        };
        let n_blocks = self
            .peers
            .table()
            .announcements()
            .filter(|a| a.model_id == Some(model))
            .map(|a| a.n_blocks)
            .chain(
                self.me
                    .model_id
                    .filter(|m| *m == model)
                    .map(|_| self.me.n_blocks),
            )
            .max()
            .ok_or_else(|| format!("no worker announces model {}", model.short()))?;
        let candidates: Vec<Candidate> = self
            .worker_views(model)
            .into_iter()
            .map(|w| w.candidate)
            .collect();
        // The client's own rules: whole spans, or sub-spans where those cannot tile.
        let policy = ClientPolicy::default();
        let blocks = BlockRange::new(0, n_blocks).map_err(|e| e.to_string())?;
        let planned = policy.plan(&candidates, blocks, &[]);
        let partial = planned.as_ref().is_ok_and(|p| p.partial);
        let error = planned.err().map(|e| e.to_string());
        let request = policy.route_request(blocks, Vec::new(), partial);
        let routes = route::plan_k(&candidates, &request, &policy.cost, k)
            .into_iter()
            .map(|r| RouteInfo {
                hops: r
                    .hops
                    .iter()
                    .map(|h| RouteHop {
                        peer_id: h.peer.to_string(),
                        blocks: h.blocks.to_string(),
                    })
                    .collect(),
                expected_ms_per_token: r.cost.expected_us_per_token / 1000.0,
                price_per_token_nanoton: r.cost.price_per_token.0,
                prompt_price_per_token_nanoton: r.cost.prompt_price_per_token.0,
            })
            .collect();
        Ok(RoutesInfo {
            model_id: model.to_hex(),
            n_blocks,
            coverage: route::coverage(&candidates, n_blocks),
            routes,
            error,
        })
    }

    /// Free KV capacity to announce, in tokens.
    pub(super) fn free_kv_tokens(&self) -> u64 {
        self.infer
            .engine
            .as_ref()
            .map_or(self.me.free_kv_tokens, |e| e.free_kv_positions())
    }
}

//! The client's side of sharded inference: a [`RemoteChain`] of workers, planned with
//! `cocoon_protocol::route`, each reached through its own end-to-end Noise session.
//!
//! The decisions are `cocoon_protocol::client::Generation`'s (the simulator drives the
//! same machine): the route, the failed peers left out, the faults charged, the re-plan
//! budget, which hops a failure replaces and which recorded calls (the prompt in one
//! call, then one token per call) a replacement is fed. This driver keeps the I/O: the
//! libp2p streams, the Noise sessions, the payment meters, the timeouts, and the hidden
//! states that entered every hop boundary, which a replay feeds the replacement so that
//! its KV cache is rebuilt exactly as an uninterrupted run would have, then carries on.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use cocoon_protocol::channel::metering::{check_receipt, check_terms, forward_usage};
use cocoon_protocol::channel::{NanoTon as ChannelNanoTon, Price};
use cocoon_protocol::client::{Action, Call, ClientPolicy, Generation, GiveUp};
use cocoon_protocol::failover::{FailoverPolicy, Fault};
use cocoon_protocol::session::{
    CipherSuite, ClientEvent, ClientSession, OpenSession, SessionLimits, WireDtype,
};
use cocoon_protocol::units::{BlockRange, ModelId, NanoTon, UnixMillis};
use cocoon_shaders::engine::{BlockChain, EngineError};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{MeshLink, WorkerView, infer_protocol};
use crate::pay::Channels;
use crate::pay::meter::{PayerMeter, Shared, lock};

/// Pause between attempts to open a stream to a worker still being dialled.
const RETRY_DIAL: Duration = Duration::from_millis(250);

/// How a chain is built and how long it waits.
#[derive(Clone, Debug)]
pub struct ChainOptions {
    pub model: ModelId,
    /// The blocks the chain covers: `[0, n)`, or `[1, n-1)` when the client runs the first
    /// and last blocks itself.
    pub blocks: BlockRange,
    /// Positions each worker must hold (prompt + new tokens).
    pub max_positions: u32,
    pub dtype: WireDtype,
    pub price_cap: Option<NanoTon>,
    pub open_timeout: Duration,
    pub forward_timeout: Duration,
    /// Pay workers that charge, through this node's channels; `None`: only free workers
    /// serve (a charging one refuses the session).
    pub pay: Option<ClientPay>,
    /// Cipher suites this client may use; each hop runs the one
    /// [`CipherSuite::choose`] picks with the worker's announced list.
    pub cipher_suites: Vec<CipherSuite>,
}

/// How the client pays: its channels, and the deposit of a channel it opens on demand.
#[derive(Clone)]
pub struct ClientPay {
    pub channels: Arc<Channels>,
    pub deposit: ChannelNanoTon,
}

impl std::fmt::Debug for ClientPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPay")
            .field("deposit", &self.deposit)
            .finish_non_exhaustive()
    }
}

/// One hop that failed and what replaced it.
#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    pub peer: String,
    pub blocks: String,
    pub reason: String,
    pub replaced_by: Vec<String>,
}

/// One hop of the live route, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct HopInfo {
    pub peer: String,
    pub blocks: String,
    /// The session's cipher suite.
    pub cipher: CipherSuite,
}

struct HopConn {
    peer: PeerId,
    blocks: BlockRange,
    suite: CipherSuite,
    session: ClientSession,
    stream: libp2p::Stream,
    /// The channel's meter when the worker charges.
    pay: Option<Shared<PayerMeter>>,
    /// Bytes read from the stream, and the frame being sent (one Noise message at most):
    /// both kept for the session's life, so that a forward allocates nothing.
    read_buf: Vec<u8>,
    sending: Vec<u8>,
}

/// Bytes of one read from a worker's stream.
const READ_BUF: usize = 64 * 1024;

/// Why a hop failed; each one penalises the worker.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("cannot reach the worker: {0}")]
    Unreachable(String),
    #[error("the worker refused the session: {0}")]
    Rejected(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the worker closed the stream")]
    Closed,
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("session: {0}")]
    Session(#[from] cocoon_protocol::session::SessionError),
    #[error("the worker answered with an error: {0}")]
    Remote(String),
    #[error("the worker returned {got} floats for {expected}")]
    WrongShape { got: usize, expected: usize },
    #[error("payment: {0}")]
    Payment(String),
}

impl HopError {
    /// The fault as `cocoon_protocol::failover` charges it. Bad ciphertext counts as a
    /// wrong result: libp2p's own encryption already guards every link, so only the worker
    /// (or a bug) can produce it.
    pub fn fault(&self) -> Fault {
        match self {
            HopError::Unreachable(_) | HopError::Closed | HopError::Io(_) => Fault::Disconnected,
            HopError::Timeout(_) => Fault::Stalled,
            HopError::Session(_) | HopError::WrongShape { .. } => Fault::WrongResult,
            HopError::Rejected(_) | HopError::Remote(_) | HopError::Payment(_) => Fault::Refused,
        }
    }
}

/// Workers `[0, n_blocks)` along a planned route: the I/O of a
/// [`cocoon_protocol::client::Generation`], which decides the route, the failovers and
/// the replays.
pub struct RemoteChain {
    rt: tokio::runtime::Handle,
    mesh: MeshLink,
    noise_secret: Zeroizing<[u8; 32]>,
    opts: ChainOptions,
    d_model: usize,
    tag: u64,
    generation: Generation,
    /// Sessions of the generation's hops, in its order (the live route, then the hop
    /// being opened).
    hops: Vec<HopConn>,
    /// The workers of the last candidate list, for their keys and wallets.
    workers: Vec<WorkerView>,
    /// Hidden states that entered each hop boundary, all positions so far.
    history: BTreeMap<u32, Vec<f32>>,
    next_request: u64,
    pub failovers: Vec<Failover>,
}

impl RemoteChain {
    /// Plans a route and opens a session to every hop (re-planning around workers that
    /// cannot be reached or refuse).
    pub fn open(
        rt: tokio::runtime::Handle,
        mesh: MeshLink,
        noise_secret: Zeroizing<[u8; 32]>,
        opts: ChainOptions,
        d_model: usize,
    ) -> Result<Self, EngineError> {
        let defaults = ClientPolicy::default();
        let policy = ClientPolicy {
            kv_positions: u64::from(opts.max_positions),
            price_cap: opts.price_cap,
            failover: FailoverPolicy {
                // The forward timeout is this driver's stall timer.
                stall_timeout_ms: u64::try_from(opts.forward_timeout.as_millis())
                    .unwrap_or(u64::MAX),
                ..defaults.failover
            },
            ..defaults
        };
        let generation = Generation::new(policy, opts.blocks);
        let mut chain = Self {
            rt,
            mesh,
            noise_secret,
            opts,
            d_model,
            tag: rand::random(),
            generation,
            hops: Vec::new(),
            workers: Vec::new(),
            history: BTreeMap::new(),
            next_request: 1,
            failovers: Vec::new(),
        };
        let rt = chain.rt.clone();
        rt.block_on(chain.drive(&mut []))?;
        Ok(chain)
    }

    /// The live route.
    pub fn route(&self) -> Vec<HopInfo> {
        self.hops
            .iter()
            .map(|h| HopInfo {
                peer: h.peer.to_string(),
                blocks: h.blocks.to_string(),
                cipher: h.suite,
            })
            .collect()
    }

    /// Carries out the generation's actions until it waits for the next call: the route
    /// is open ([`Action::Ready`]), the call in flight is through ([`Action::CallDone`],
    /// `hidden` then holding the last hop's output), or it gave up.
    async fn drive(&mut self, hidden: &mut [f32]) -> Result<(), EngineError> {
        loop {
            let Some(action) = self.generation.poll_action() else {
                return Err(remote("the generation stopped without an answer"));
            };
            match action {
                Action::NeedCandidates { .. } => {
                    self.workers = self.mesh.workers(self.opts.model).await;
                    let cands: Vec<_> = self.workers.iter().map(|w| w.candidate.clone()).collect();
                    self.generation.candidates(&cands).map_err(remote)?;
                }
                Action::Planned {
                    from_hop,
                    hops,
                    partial,
                } => {
                    tracing::debug!(from_hop, hops = hops.len(), partial, "route planned");
                }
                Action::Charge { peer, fault, .. } => self.mesh.charge(peer, fault).await,
                Action::Close { from_hop } => {
                    for old in self.hops.drain(from_hop.min(self.hops.len())..) {
                        close_quietly(old).await;
                    }
                }
                Action::Open { hop, peer, blocks } => {
                    let Some(view) = self.workers.iter().find(|w| w.candidate.peer == peer) else {
                        return Err(remote(format!("planned peer {peer} is unknown")));
                    };
                    match self.connect(view, blocks).await {
                        Ok(conn) => {
                            self.hops.push(conn);
                            self.generation.hop_opened(hop).map_err(remote)?;
                        }
                        Err(e) => self.on_fault(hop, peer, blocks, &e)?,
                    }
                }
                Action::Replay {
                    hop,
                    boundary,
                    calls,
                } => self.replay(hop, boundary, &calls).await?,
                Action::Forward { hop, call } => self.forward_one(hop, call, hidden).await?,
                Action::Rerouted { from_hop } => {
                    let replaced: Vec<String> = self.hops[from_hop..]
                        .iter()
                        .map(|h| format!("{} ({})", h.peer, h.blocks))
                        .collect();
                    if let Some(f) = self.failovers.last_mut() {
                        f.replaced_by = replaced;
                    }
                    let from_block = self.hops.get(from_hop).map_or(0, |h| h.blocks.start());
                    tracing::info!("failover: route rebuilt from block {from_block}");
                }
                Action::Ready | Action::CallDone { .. } => return Ok(()),
                Action::GiveUp { reason } => return Err(self.given_up(reason)),
            }
        }
    }

    /// The error a given-up generation ends with, naming the last worker that failed.
    fn given_up(&self, reason: GiveUp) -> EngineError {
        let last = self.failovers.last();
        match (reason, last) {
            (GiveUp::TooManyReplans { .. }, Some(f)) => remote(format!(
                "gave up after {} failed workers (TooManyReplans); last: {}",
                self.failovers.len(),
                f.reason
            )),
            (GiveUp::NoRoute { blocks, error }, Some(f)) => remote(format!(
                "no route for blocks {blocks}: {error}; last refusal: worker {} ({}): {}",
                f.peer, f.blocks, f.reason
            )),
            (reason, _) => remote(reason),
        }
    }

    /// Feeds hop `hop` the recorded `calls` with the inputs recorded at `boundary`; its
    /// outputs become the record of its last block's boundary.
    async fn replay(
        &mut self,
        hop: usize,
        boundary: u32,
        calls: &[Call],
    ) -> Result<(), EngineError> {
        let input = self.history.get(&boundary).cloned().unwrap_or_default();
        let mut output = Vec::with_capacity(input.len());
        let timeout = self.opts.forward_timeout;
        for call in calls {
            let lo = call.start_pos as usize * self.d_model;
            let hi = lo + call.rows as usize * self.d_model;
            let Some(rows_in) = input.get(lo..hi) else {
                return Err(remote(format!("no recorded input at block {boundary}")));
            };
            let request_id = self.next_request;
            self.next_request += 1;
            let Some(conn) = self.hops.get_mut(hop) else {
                return Err(remote(format!("no session for hop {hop}")));
            };
            match forward_hop(
                conn,
                request_id,
                call.start_pos,
                rows_in,
                call.rows,
                timeout,
            )
            .await
            {
                Ok(out) => output.extend_from_slice(&out),
                Err(e) => {
                    let (peer, blocks) = (conn.peer, conn.blocks);
                    return self.on_fault(hop, peer, blocks, &e);
                }
            }
        }
        if !calls.is_empty()
            && let Some(conn) = self.hops.get(hop)
        {
            self.history.insert(conn.blocks.end(), output);
        }
        self.generation.hop_answered(hop).map_err(remote)
    }

    /// Sends `hidden` (the inputs of hop `hop`) through hop `hop`, recording them at its
    /// first block; its output replaces them.
    async fn forward_one(
        &mut self,
        hop: usize,
        call: Call,
        hidden: &mut [f32],
    ) -> Result<(), EngineError> {
        let Some(conn) = self.hops.get_mut(hop) else {
            return Err(remote(format!("no session for hop {hop}")));
        };
        let keep = call.start_pos as usize * self.d_model;
        let recorded = self.history.entry(conn.blocks.start()).or_default();
        recorded.truncate(keep);
        if recorded.len() == keep {
            recorded.extend_from_slice(hidden);
        }
        let request_id = self.next_request;
        self.next_request += 1;
        let timeout = self.opts.forward_timeout;
        match forward_hop(conn, request_id, call.start_pos, hidden, call.rows, timeout).await {
            Ok(out) => {
                hidden.copy_from_slice(&out);
                self.generation.hop_answered(hop).map_err(remote)
            }
            Err(e) => {
                let (peer, blocks) = (conn.peer, conn.blocks);
                self.on_fault(hop, peer, blocks, &e)
            }
        }
    }

    /// A hop failed: logged for the report, and handed to the generation, which has the
    /// daemon charge the worker and decides (with the simulator's rule) what replaces it.
    fn on_fault(
        &mut self,
        hop: usize,
        peer: PeerId,
        blocks: BlockRange,
        e: &HopError,
    ) -> Result<(), EngineError> {
        tracing::warn!(%peer, %blocks, error = %e, "worker failed; routing around it");
        self.failovers.push(Failover {
            peer: peer.to_string(),
            blocks: blocks.to_string(),
            reason: e.to_string(),
            replaced_by: Vec::new(),
        });
        self.generation
            .hop_failed(hop, e.fault(), now_ms())
            .map_err(remote)
    }

    /// The channel paying `view` and its meter, when the worker charges and this client
    /// pays (opening a channel on demand).
    async fn payment_channel(
        &self,
        view: &WorkerView,
    ) -> Result<Option<(String, Shared<PayerMeter>, Price)>, HopError> {
        let price = Price::from(view.candidate.prices);
        let Some(pay) = self.opts.pay.as_ref().filter(|_| price != Price::default()) else {
            return Ok(None);
        };
        let (addr, meter) = pay
            .channels
            .payer_meter(
                view.candidate.peer,
                view.node_key,
                &view.wallet,
                price,
                pay.deposit,
            )
            .await
            .map_err(|e| HopError::Payment(format!("{e:#}")))?;
        Ok(Some((addr, meter, price)))
    }

    async fn connect(&self, view: &WorkerView, blocks: BlockRange) -> Result<HopConn, HopError> {
        let peer = view.candidate.peer;
        let paid = self.payment_channel(view).await?;
        let suite = CipherSuite::choose(&self.opts.cipher_suites, &view.cipher_suites);
        let stream = self.open_stream(peer, suite).await?;
        let open = OpenSession {
            model_id: self.opts.model.0,
            blocks,
            max_positions: self.opts.max_positions,
            dtype: self.opts.dtype,
            tag: self.tag,
            channel: paid.as_ref().map(|(addr, _, _)| addr.clone()),
        };
        let (session, hello) = ClientSession::start(
            suite,
            &self.noise_secret,
            &view.noise_key,
            open,
            SessionLimits::default(),
        )?;
        let mut conn = HopConn {
            peer,
            blocks,
            suite,
            session,
            stream,
            pay: None,
            read_buf: vec![0u8; READ_BUF],
            sending: Vec::new(),
        };
        conn.stream.write_all(&hello).await?;
        conn.stream.flush().await?;
        let timeout = self.opts.open_timeout;
        let reply = tokio::time::timeout(timeout, async {
            loop {
                // The first event answers the open; none yet: read on.
                if let Some(event) = read_events(&mut conn).await?.into_iter().next() {
                    match event {
                        ClientEvent::Opened(accepted) => {
                            return agree_terms(&mut conn, paid, accepted.payment).await;
                        }
                        ClientEvent::Rejected { code, message } => {
                            return Err(HopError::Rejected(format!("{code:?}: {message}")));
                        }
                        ClientEvent::Closed => return Err(HopError::Closed),
                        other => {
                            return Err(HopError::Remote(format!(
                                "unexpected reply to open: {}",
                                event_name(&other)
                            )));
                        }
                    }
                }
            }
        })
        .await;
        match reply {
            Err(_) => Err(HopError::Timeout(timeout)),
            Ok(r) => r.map(|()| conn),
        }
    }

    /// A stream to `peer`, asking the daemon to connect first; a dial still in flight
    /// (through a relay, say) is waited for until the open timeout.
    async fn open_stream(
        &self,
        peer: PeerId,
        suite: CipherSuite,
    ) -> Result<libp2p::Stream, HopError> {
        let mut control = self.mesh.control.clone();
        let deadline = tokio::time::Instant::now() + self.opts.open_timeout;
        loop {
            self.mesh.dial(peer);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, control.open_stream(peer, infer_protocol(suite))).await
            {
                Err(_) => return Err(HopError::Timeout(self.opts.open_timeout)),
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) if tokio::time::Instant::now() + RETRY_DIAL >= deadline => {
                    return Err(HopError::Unreachable(e.to_string()));
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "no stream yet; retrying");
                    tokio::time::sleep(RETRY_DIAL).await;
                }
            }
        }
    }

    /// Ends every session politely.
    pub fn close(mut self) {
        let hops: Vec<HopConn> = self.hops.drain(..).collect();
        self.rt.block_on(async {
            for h in hops {
                close_quietly(h).await;
            }
        });
    }
}

impl BlockChain for RemoteChain {
    fn forward(&mut self, start_pos: usize, hidden: &mut [f32]) -> Result<(), EngineError> {
        let rt = self.rt.clone();
        let start_pos = u32::try_from(start_pos).map_err(remote)?;
        let rows = u32::try_from(hidden.len() / self.d_model).map_err(remote)?;
        self.generation
            .forward(Call { start_pos, rows })
            .map_err(remote)?;
        rt.block_on(self.drive(hidden))
    }
}

/// A worker's terms against what its announcement promised; in a paid session the
/// newest state signed so far goes out first, so a worker that missed it (a restart, a
/// lost stream) holds it before serving more.
async fn agree_terms(
    conn: &mut HopConn,
    paid: Option<(String, Shared<PayerMeter>, Price)>,
    terms: Option<cocoon_protocol::session::PaymentTerms>,
) -> Result<(), HopError> {
    let (Some((_, meter, announced)), Some(terms)) = (paid, terms) else {
        // Unpaid, or a worker serving for free whatever it announced.
        return Ok(());
    };
    let offered = Price {
        per_prompt_token: ChannelNanoTon(u128::from(terms.price_prompt_nanoton)),
        per_completion_token: ChannelNanoTon(u128::from(terms.price_completion_nanoton)),
    };
    check_terms(&announced, &offered).map_err(|e| HopError::Payment(e.to_string()))?;
    let latest = lock(&meter).latest_state().map(<[u8]>::to_vec);
    if let Some(state) = latest {
        let bytes = conn.session.payment(&state)?;
        conn.stream.write_all(&bytes).await?;
        conn.stream.flush().await?;
    }
    conn.pay = Some(meter);
    Ok(())
}

/// Pays for the forward just received: a new state, committed, then sent.
async fn pay_for(conn: &mut HopConn, rows: u32) -> Result<(), HopError> {
    let Some(meter) = &conn.pay else {
        return Ok(());
    };
    let state = lock(meter)
        .pay_for(forward_usage(rows))
        .map_err(|e| HopError::Payment(format!("{e:#}")))?;
    let bytes = conn.session.payment(&state)?;
    conn.stream.write_all(&bytes).await?;
    conn.stream.flush().await?;
    Ok(())
}

async fn forward_hop(
    conn: &mut HopConn,
    request_id: u64,
    start_pos: u32,
    hidden: &[f32],
    rows: u32,
    timeout: Duration,
) -> Result<Vec<f32>, HopError> {
    let step = async {
        // Every check is made before the first frame is sealed: an error sends nothing.
        // Then each frame goes out as soon as it is sealed, so that the worker opens the
        // first chunks of a prompt's tensor while the last are still being sealed.
        let mut frames = conn.session.forward_frames(request_id, start_pos, hidden)?;
        conn.sending.clear();
        while frames.next_frame_into(&mut conn.sending)? {
            conn.stream.write_all(&conn.sending).await?;
            conn.sending.clear();
        }
        drop(frames);
        conn.stream.flush().await?;
        let mut charged = false;
        loop {
            for event in read_events(conn).await? {
                match event {
                    ClientEvent::Receipt(r) if r.request_id == request_id => {
                        check_receipt(rows, r.usage)
                            .map_err(|e| HopError::Payment(e.to_string()))?;
                        charged = true;
                    }
                    ClientEvent::Result {
                        request_id: id,
                        hidden: out,
                        ..
                    } if id == request_id => {
                        if out.len() != hidden.len() {
                            return Err(HopError::WrongShape {
                                got: out.len(),
                                expected: hidden.len(),
                            });
                        }
                        if conn.pay.is_some() {
                            if !charged {
                                return Err(HopError::Payment(
                                    "a result came without its receipt".into(),
                                ));
                            }
                            pay_for(conn, rows).await?;
                        }
                        return Ok(out);
                    }
                    ClientEvent::Error { code, message, .. } => {
                        return Err(HopError::Remote(format!("{code:?}: {message}")));
                    }
                    ClientEvent::Closed => return Err(HopError::Closed),
                    other => tracing::debug!(event = event_name(&other), "ignored"),
                }
            }
        }
    };
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| HopError::Timeout(timeout))?
}

async fn read_events(conn: &mut HopConn) -> Result<Vec<ClientEvent>, HopError> {
    loop {
        let n = conn.stream.read(&mut conn.read_buf).await?;
        if n == 0 {
            return Err(HopError::Closed);
        }
        let events = conn.session.on_bytes(&conn.read_buf[..n])?;
        if !events.is_empty() {
            return Ok(events);
        }
    }
}

async fn close_quietly(mut conn: HopConn) {
    if let Ok(bytes) = conn.session.close() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            conn.stream.write_all(&bytes).await?;
            conn.stream.close().await
        })
        .await;
    }
}

fn event_name(e: &ClientEvent) -> &'static str {
    match e {
        ClientEvent::Opened(_) => "opened",
        ClientEvent::Rejected { .. } => "rejected",
        ClientEvent::Result { .. } => "result",
        ClientEvent::Error { .. } => "error",
        ClientEvent::Receipt(_) => "receipt",
        ClientEvent::Closed => "closed",
    }
}

/// The wall clock as the protocol's time.
fn now_ms() -> UnixMillis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn remote(e: impl std::fmt::Display) -> EngineError {
    EngineError::Remote(e.to_string())
}

//! The client's side of sharded inference: a [`RemoteChain`] of workers, planned with
//! `cocoon_protocol::route`, each reached through its own end-to-end Noise session.
//!
//! Failover: the chain remembers, for every hop's first block, the hidden states that
//! entered it and how the calls were split (the prompt in one call, then one token per
//! call). When a hop fails it re-plans blocks from that hop's start on, opens sessions to
//! the replacements and replays the recorded calls with the same split, which rebuilds
//! their KV caches exactly as an uninterrupted run would have, then carries on.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use cocoon_protocol::channel::metering::{check_receipt, check_terms, forward_usage};
use cocoon_protocol::channel::{NanoTon as ChannelNanoTon, Price};
use cocoon_protocol::failover::{FailedHop, FailoverDecision, Fault};
use cocoon_protocol::route::{self, CostModel, Route, RouteRequest};
use cocoon_protocol::session::{
    CipherSuite, ClientEvent, ClientSession, OpenSession, SessionLimits, WireDtype,
};
use cocoon_protocol::units::{BlockRange, ModelId, NanoTon};
use cocoon_shaders::engine::{BlockChain, EngineError};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{MeshLink, WorkerView, infer_protocol};
use crate::daemon::channel_price;
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
    /// May a hop run part of a worker's span (needed when `blocks` is not `[0, n)`).
    pub allow_partial: bool,
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

/// Workers `[0, n_blocks)` along a planned route.
pub struct RemoteChain {
    rt: tokio::runtime::Handle,
    mesh: MeshLink,
    noise_secret: Zeroizing<[u8; 32]>,
    opts: ChainOptions,
    d_model: usize,
    tag: u64,
    hops: Vec<HopConn>,
    /// (start position, rows) of every call so far.
    calls: Vec<(u32, u32)>,
    /// Hidden states that entered each hop boundary, all positions so far.
    history: BTreeMap<u32, Vec<f32>>,
    excluded: Vec<PeerId>,
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
        let mut chain = Self {
            rt,
            mesh,
            noise_secret,
            opts,
            d_model,
            tag: rand::random(),
            hops: Vec::new(),
            calls: Vec::new(),
            history: BTreeMap::new(),
            excluded: Vec::new(),
            next_request: 1,
            failovers: Vec::new(),
        };
        let rt = chain.rt.clone();
        let first = chain.opts.blocks.start();
        rt.block_on(chain.rebuild_from(0, first))?;
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

    /// Plans blocks `[from_block, n)` among the workers the mesh knows, minus the
    /// excluded ones.
    async fn plan(&self, from_block: u32) -> Result<(Route, Vec<WorkerView>), EngineError> {
        let workers = self.mesh.workers(self.opts.model).await;
        let candidates: Vec<_> = workers
            .iter()
            .filter(|w| !self.excluded.contains(&w.candidate.peer))
            .map(|w| w.candidate.clone())
            .collect();
        let request = RouteRequest {
            blocks: BlockRange::new(from_block, self.opts.blocks.end()).map_err(remote)?,
            kv_tokens_needed: u64::from(self.opts.max_positions),
            price_cap: self.opts.price_cap,
            exclude: self.excluded.clone(),
            allow_partial: self.opts.allow_partial,
            max_hops: 32,
            min_score: cocoon_protocol::peers::ScorePolicy::default().ban_threshold,
        };
        let route = route::plan(&candidates, &request, &CostModel::default())
            .map_err(|e| remote(format!("no route for blocks {from_block}..: {e}")))?;
        Ok((route, workers))
    }

    /// Replaces every hop from index `hop_index` (whose first block is `from_block`) by
    /// a fresh plan, replaying the recorded calls (all but the one in flight) into each
    /// new hop.
    async fn rebuild_from(&mut self, hop_index: usize, from_block: u32) -> Result<(), EngineError> {
        let replay_calls = self.calls.len().saturating_sub(1);
        'plan: loop {
            // Hops of a previous, abandoned attempt go too.
            for old in self.hops.drain(hop_index..) {
                close_quietly(old).await;
            }
            let (route, workers) = match self.plan(from_block).await {
                Ok(planned) => planned,
                // Say why the workers that could have served are out.
                Err(e) => match self.failovers.last() {
                    Some(f) => {
                        return Err(remote(format!(
                            "{e}; last refusal: worker {} ({}): {}",
                            f.peer, f.blocks, f.reason
                        )));
                    }
                    None => return Err(e),
                },
            };
            for hop in route.hops {
                let Some(view) = workers.iter().find(|w| w.candidate.peer == hop.peer) else {
                    return Err(remote(format!("planned peer {} is unknown", hop.peer)));
                };
                let mut conn = match self.connect(view, hop.blocks).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.on_fault(hop.peer, hop.blocks, &e).await?;
                        continue 'plan;
                    }
                };
                // Replay the finished calls into the new hop; its outputs are what the
                // next boundary saw.
                let start = hop.blocks.start();
                let input = self.history.get(&start).cloned().unwrap_or_default();
                let mut output = Vec::with_capacity(input.len());
                for &(pos, rows) in &self.calls[..replay_calls] {
                    let lo = pos as usize * self.d_model;
                    let hi = lo + rows as usize * self.d_model;
                    let Some(rows_in) = input.get(lo..hi) else {
                        return Err(remote(format!("no recorded input at block {start}")));
                    };
                    let request_id = self.next_request;
                    self.next_request += 1;
                    match forward_hop(
                        &mut conn,
                        request_id,
                        pos,
                        rows_in,
                        rows,
                        self.opts.forward_timeout,
                    )
                    .await
                    {
                        Ok(out) => output.extend_from_slice(&out),
                        Err(e) => {
                            self.on_fault(hop.peer, hop.blocks, &e).await?;
                            continue 'plan;
                        }
                    }
                }
                if replay_calls > 0 {
                    self.history.insert(hop.blocks.end(), output);
                }
                self.hops.push(conn);
            }
            return Ok(());
        }
    }

    /// A hop failed: the daemon charges the fault to the worker's score and decides, by
    /// `cocoon_protocol::failover` (the simulator's rule too), whether to re-plan.
    async fn on_fault(
        &mut self,
        peer: PeerId,
        blocks: BlockRange,
        e: &HopError,
    ) -> Result<(), EngineError> {
        tracing::warn!(%peer, %blocks, error = %e, "worker failed; routing around it");
        self.excluded.push(peer);
        let prompt_tokens = self.calls.first().map_or(0, |c| u64::from(c.1));
        let total: u64 = self.calls.iter().map(|c| u64::from(c.1)).sum();
        let hop = FailedHop {
            peer,
            blocks,
            prompt_tokens,
            generated_tokens: total.saturating_sub(prompt_tokens),
            replans_so_far: self.failovers.len() as u32,
        };
        self.failovers.push(Failover {
            peer: peer.to_string(),
            blocks: blocks.to_string(),
            reason: e.to_string(),
            replaced_by: Vec::new(),
        });
        match self.mesh.fault(hop, e.fault()).await {
            FailoverDecision::Replan { .. } => Ok(()),
            FailoverDecision::GiveUp { reason } => Err(remote(format!(
                "gave up after {} failed workers ({reason:?}); last: {e}",
                self.failovers.len()
            ))),
        }
    }

    /// The channel paying `view` and its meter, when the worker charges and this client
    /// pays (opening a channel on demand).
    async fn payment_channel(
        &self,
        view: &WorkerView,
    ) -> Result<Option<(String, Shared<PayerMeter>, Price)>, HopError> {
        let price = channel_price(&view.candidate.prices);
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

    async fn forward_async(
        &mut self,
        start_pos: u32,
        hidden: &mut [f32],
    ) -> Result<(), EngineError> {
        let rows = (hidden.len() / self.d_model) as u32;
        if self.calls.last() != Some(&(start_pos, rows)) {
            // A call replaces any recorded positions at or after it (a rewind).
            self.calls.retain(|&(p, _)| p < start_pos);
            self.calls.push((start_pos, rows));
        }
        let mut i = 0;
        while i < self.hops.len() {
            let boundary = self.hops[i].blocks.start();
            let keep = start_pos as usize * self.d_model;
            let recorded = self.history.entry(boundary).or_default();
            recorded.truncate(keep);
            if recorded.len() == keep {
                recorded.extend_from_slice(hidden);
            }
            let request_id = self.next_request;
            self.next_request += 1;
            let timeout = self.opts.forward_timeout;
            let hop = &mut self.hops[i];
            match forward_hop(hop, request_id, start_pos, hidden, rows, timeout).await {
                Ok(out) => {
                    hidden.copy_from_slice(&out);
                    i += 1;
                }
                Err(e) => {
                    let (peer, blocks) = (self.hops[i].peer, self.hops[i].blocks);
                    self.on_fault(peer, blocks, &e).await?;
                    self.rebuild_from(i, boundary).await?;
                    let replaced: Vec<String> = self.hops[i..]
                        .iter()
                        .map(|h| format!("{} ({})", h.peer, h.blocks))
                        .collect();
                    if let Some(f) = self.failovers.last_mut() {
                        f.replaced_by = replaced;
                    }
                    tracing::info!(%peer, %blocks, "failover: route rebuilt from block {boundary}");
                }
            }
        }
        Ok(())
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
        let start = u32::try_from(start_pos).map_err(remote)?;
        rt.block_on(self.forward_async(start, hidden))
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

fn remote(e: impl std::fmt::Display) -> EngineError {
    EngineError::Remote(e.to_string())
}

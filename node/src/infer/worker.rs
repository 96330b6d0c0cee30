//! The worker side of `/cocoon/infer/1`: each inbound stream is one end-to-end Noise
//! session (`cocoon_protocol::session::WorkerSession`) whose forwards run on the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cocoon_protocol::channel::metering::forward_usage;
use cocoon_protocol::channel::{NanoTon, Price};
use cocoon_protocol::session::{
    CipherSuite, ErrorCode, OpenAccepted, OpenSession, Receipt, SessionLimits, WorkerEvent,
    WorkerSession,
};
use cocoon_protocol::units::{BlockRange, ModelId};
use cocoon_shaders::engine::{EngineError, SessionId};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use zeroize::Zeroizing;

use super::engine::EngineHandle;
use super::tap::Tap;
use crate::pay::Channels;
use crate::pay::meter::{PayeeMeter, Shared, lock};

/// How a worker with a chain charges: per token at its announced prices, through
/// channels its clients opened to it.
pub struct WorkerPay {
    pub channels: Arc<Channels>,
    pub price: Price,
    /// Credit window; `None`: `cocoon_protocol::channel::metering::default_credit_window`.
    pub credit_window: Option<NanoTon>,
}

/// Deliberate faults, for tests of the client's defences (hidden `--dev-misbehave`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Misbehave {
    /// Answer every forward with one row too few.
    WrongShape,
    /// Accept sessions, then never answer a forward.
    Stall,
    /// Flip one byte of every result's ciphertext.
    Tamper,
}

/// Everything a stream handler needs.
pub struct WorkerService {
    pub engine: EngineHandle,
    pub model_id: ModelId,
    pub noise_secret: Zeroizing<[u8; 32]>,
    pub limits: SessionLimits,
    /// A session with no message for this long is closed and its KV cache freed.
    pub idle_timeout: Duration,
    pub misbehave: Option<Misbehave>,
    pub tap: Option<Tap>,
    /// Payments; `None` (or zero prices) serves for free.
    pub pay: Option<WorkerPay>,
    next_session: AtomicU64,
}

impl WorkerService {
    pub fn new(engine: EngineHandle, model_id: ModelId, noise_secret: Zeroizing<[u8; 32]>) -> Self {
        Self {
            engine,
            model_id,
            noise_secret,
            limits: SessionLimits::default(),
            idle_timeout: Duration::from_secs(300),
            misbehave: None,
            tap: None,
            pay: None,
            next_session: AtomicU64::new(1),
        }
    }

    /// Serves every inbound inference stream of `suite`'s protocol until the swarm goes
    /// away.
    pub async fn serve(
        self: Arc<Self>,
        suite: CipherSuite,
        mut incoming: libp2p_stream::IncomingStreams,
    ) {
        while let Some((peer, stream)) = incoming.next().await {
            let me = self.clone();
            tokio::spawn(async move {
                let id = SessionId(me.next_session.fetch_add(1, Ordering::Relaxed));
                match me.serve_stream(suite, peer, stream, id).await {
                    Ok(()) => tracing::debug!(%peer, "inference session ended"),
                    Err(e) => tracing::info!(%peer, error = %e, "inference session ended"),
                }
                me.engine.close(id);
            });
        }
    }

    async fn serve_stream(
        &self,
        suite: CipherSuite,
        peer: PeerId,
        mut stream: libp2p::Stream,
        id: SessionId,
    ) -> anyhow::Result<()> {
        let mut session = WorkerSession::new(suite, &self.noise_secret, self.limits.clone());
        let mut buf = vec![0u8; 64 * 1024];
        // The reply being sent (a result goes one frame at a time), kept between replies
        // so that a result allocates nothing.
        let mut sending = Vec::new();
        // The blocks this session runs: all of ours, or the sub-span it asked for.
        let mut span = self.engine.info().blocks.clone();
        // The channel's meter, in a paid session.
        let mut meter: Option<Shared<PayeeMeter>> = None;
        let d_model = self.engine.info().d_model;
        loop {
            let n = match tokio::time::timeout(self.idle_timeout, stream.read(&mut buf)).await {
                Err(_) => anyhow::bail!("idle for {:?}", self.idle_timeout),
                Ok(r) => r?,
            };
            if n == 0 {
                return Ok(());
            }
            if let Some(tap) = &self.tap {
                tap.record(&buf[..n]);
            }
            for event in session.on_bytes(&buf[..n])? {
                sending.clear();
                match event {
                    WorkerEvent::Open { open, .. } => {
                        span = open.blocks.start() as usize..open.blocks.end() as usize;
                        let reply = self.open(&mut session, id, peer, &open, &mut meter).await?;
                        sending.extend_from_slice(&reply);
                    }
                    WorkerEvent::Payment { state_boc } => {
                        let Some(m) = &meter else {
                            anyhow::bail!("a payment in a session that names no channel");
                        };
                        let accepted = lock(m).accept(&state_boc);
                        match accepted {
                            Ok(a) => {
                                tracing::debug!(%peer, seqno = a.seqno.0, paid = %a.paid, "payment accepted");
                                continue;
                            }
                            Err(e) => {
                                // A forged or stale state: say why, then end the session.
                                let msg = format!("payment refused: {e:#}");
                                let out = session.error(0, ErrorCode::PaymentRequired, &msg)?;
                                stream.write_all(&out).await?;
                                stream.flush().await?;
                                anyhow::bail!(msg);
                            }
                        }
                    }
                    WorkerEvent::Forward {
                        request_id,
                        start_pos,
                        hidden,
                    } => {
                        if self.misbehave == Some(Misbehave::Stall) {
                            tracing::warn!(%peer, "misbehaving: stalling");
                            std::future::pending::<()>().await;
                        }
                        let usage = forward_usage((hidden.len() / d_model.max(1)) as u32);
                        let lagging = meter.as_ref().and_then(|m| lock(m).check(usage).err());
                        if let Some(e) = lagging {
                            let out = session.error(
                                request_id,
                                ErrorCode::PaymentRequired,
                                &e.to_string(),
                            )?;
                            stream.write_all(&out).await?;
                            stream.flush().await?;
                            continue;
                        }
                        let forward =
                            self.engine
                                .forward(id, start_pos as usize, hidden, span.clone());
                        match forward.await {
                            Ok(mut out) => {
                                if self.misbehave == Some(Misbehave::WrongShape) {
                                    out.truncate(out.len() - d_model);
                                }
                                // The count is committed before the result goes out.
                                let receipt = match &meter {
                                    None => Ok(None),
                                    Some(m) => charge(m, request_id, usage).map(Some),
                                };
                                match receipt {
                                    Ok(Some(r)) => sending.extend_from_slice(&session.receipt(&r)?),
                                    Ok(None) => {}
                                    Err(e) => {
                                        let msg = format!("{e:#}");
                                        let out = session.error(
                                            request_id,
                                            ErrorCode::PaymentRequired,
                                            &msg,
                                        )?;
                                        stream.write_all(&out).await?;
                                        stream.flush().await?;
                                        continue;
                                    }
                                };
                                // Each frame goes out as soon as it is sealed (the receipt,
                                // if any, with the first), so that the client opens the
                                // first chunks of a long result while the last are sealed.
                                let mut frames =
                                    session.result_frames(request_id, start_pos, &out)?;
                                let count = frames.frame_count();
                                for i in 1..=count {
                                    frames.next_frame_into(&mut sending)?;
                                    if i == count && self.misbehave == Some(Misbehave::Tamper) {
                                        let last = sending.len() - 1;
                                        sending[last] ^= 0x40;
                                    }
                                    if let Some(tap) = &self.tap {
                                        tap.record(&sending);
                                    }
                                    stream.write_all(&sending).await?;
                                    sending.clear();
                                }
                                stream.flush().await?;
                                continue;
                            }
                            Err(e) => sending.extend_from_slice(&session.error(
                                request_id,
                                error_code(&e),
                                &e.to_string(),
                            )?),
                        }
                    }
                    WorkerEvent::Close => return Ok(()),
                }
                if let Some(tap) = &self.tap {
                    tap.record(&sending);
                }
                stream.write_all(&sending).await?;
                stream.flush().await?;
            }
        }
    }

    /// Checks an open request against what this worker serves (and, when it charges,
    /// against a channel the client pays it through) and reserves a KV cache.
    async fn open(
        &self,
        session: &mut WorkerSession,
        id: SessionId,
        peer: PeerId,
        open: &OpenSession,
        meter: &mut Option<Shared<PayeeMeter>>,
    ) -> anyhow::Result<Vec<u8>> {
        let info = self.engine.info();
        let served = BlockRange::new(info.blocks.start as u32, info.blocks.end as u32)?;
        if open.model_id != self.model_id.0 {
            return Ok(session.reject(
                ErrorCode::WrongModel,
                &format!("this worker serves model {}", self.model_id.short()),
            )?);
        }
        if open.blocks.is_empty()
            || open.blocks.start() < served.start()
            || open.blocks.end() > served.end()
        {
            return Ok(session.reject(
                ErrorCode::WrongBlocks,
                &format!("this worker serves blocks {served}, not {}", open.blocks),
            )?);
        }
        let mut terms = None;
        if let Some(pay) = self.pay.as_ref().filter(|p| p.price != Price::default()) {
            let Some(channel) = &open.channel else {
                let msg = format!(
                    "this worker charges {} per prompt and {} per completion token: \
                     open a payment channel to it and name it",
                    pay.price.per_prompt_token, pay.price.per_completion_token
                );
                return Ok(session.reject(ErrorCode::PaymentRequired, &msg)?);
            };
            let found = pay
                .channels
                .payee_meter(peer, channel, pay.price, pay.credit_window)
                .and_then(|m| {
                    let t = lock(&m).terms()?;
                    Ok((m, t))
                });
            match found {
                Ok((m, t)) => {
                    *meter = Some(m);
                    terms = Some(t);
                }
                Err(e) => {
                    return Ok(session.reject(ErrorCode::PaymentRequired, &format!("{e:#}"))?);
                }
            }
        }
        match self.engine.open(id, open.max_positions as usize).await {
            Ok(()) => Ok(session.accept(OpenAccepted {
                kv_positions: open.max_positions,
                d_model: info.d_model as u32,
                payment: terms,
            })?),
            Err(e) => Ok(session.reject(error_code(&e), &e.to_string())?),
        }
    }
}

/// Counts a forward's tokens as served (committed) and writes its receipt.
fn charge(
    meter: &Shared<PayeeMeter>,
    request_id: u64,
    usage: cocoon_protocol::channel::Usage,
) -> anyhow::Result<Receipt> {
    let mut m = lock(meter);
    let owed = m.charge(usage)?;
    let nano = |v: NanoTon| u64::try_from(v.0).unwrap_or(u64::MAX);
    Ok(Receipt {
        request_id,
        usage,
        owed_nanoton: nano(owed),
        paid_nanoton: nano(m.paid()),
    })
}

fn error_code(e: &EngineError) -> ErrorCode {
    match e {
        EngineError::KvBudget { .. } => ErrorCode::KvBudget,
        EngineError::Gpu(_) | EngineError::Model(_) => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    }
}

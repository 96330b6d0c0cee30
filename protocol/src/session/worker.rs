//! The worker's end of a session: reads handshake message 1 and its `OpenSession`,
//! answers with an accept or a reject in message 2, then reads forwards and sends
//! results, per-request errors and a close.

use snow::HandshakeState;

use super::established::{Established, TensorFrames, TensorKind};
use super::frame::FrameDecoder;
use super::noise::{self, Transport, TransportStats};
use super::{
    CipherSuite, ErrorCode, OpenAccepted, OpenSession, Receipt, SessionError, SessionLimits,
    WireDtype, wire,
};
use crate::proto::infer as pb;

/// What the client's bytes amounted to.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerEvent {
    /// The client asks for a session; answer with `accept` or `reject`.
    Open {
        open: OpenSession,
        client_static_public: [u8; 32],
    },
    /// Hidden states to run through the worker's blocks.
    Forward {
        request_id: u64,
        start_pos: u32,
        hidden: Vec<f32>,
    },
    /// A payment: the client's signed channel state as a BoC (opaque to the session; the
    /// driver verifies it before serving more).
    Payment { state_boc: Vec<u8> },
    /// The client ended the session.
    Close,
}

enum State {
    AwaitingOpen(Box<HandshakeState>),
    /// The Open arrived; the driver has not answered yet.
    OpenReceived {
        hs: Box<HandshakeState>,
        dtype: WireDtype,
        rekey_every: u64,
    },
    Open(Box<Established>),
    /// Rejected here, or closed by the client: nothing more may arrive.
    Ended,
}

/// The worker's end of one session with one client.
pub struct WorkerSession {
    frames: FrameDecoder,
    state: State,
    limits: SessionLimits,
    /// Whether this side sent its Close.
    closed_here: bool,
    dead: bool,
}

impl std::fmt::Debug for WorkerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSession")
            .field("state", &self.state_name())
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl WorkerSession {
    /// A session in `suite` waiting for a client's handshake message 1.
    pub fn new(
        suite: CipherSuite,
        worker_static_secret: &[u8; 32],
        limits: SessionLimits,
    ) -> WorkerSession {
        WorkerSession {
            frames: FrameDecoder::new(),
            state: State::AwaitingOpen(Box::new(noise::responder(suite, worker_static_secret))),
            limits,
            closed_here: false,
            dead: false,
        }
    }

    /// Feed bytes read from the stream (any split); returns completed events.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<Vec<WorkerEvent>, SessionError> {
        if self.dead {
            return Err(SessionError::Dead);
        }
        self.frames.push(bytes);
        let mut events = Vec::new();
        loop {
            let frame = match self.frames.next_frame_slice() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(events),
                Err(e) => {
                    self.dead = true;
                    return Err(e.into());
                }
            };
            if let Err(e) = on_frame(
                &mut self.state,
                &self.limits,
                self.closed_here,
                frame,
                &mut events,
            ) {
                self.dead = true;
                return Err(e);
            }
        }
    }

    /// Handshake message 2, carrying the reply. Exactly one of accept/reject after Open.
    pub fn accept(&mut self, accepted: OpenAccepted) -> Result<Vec<u8>, SessionError> {
        if accepted.d_model == 0 {
            return Err(SessionError::Protocol("accept with d_model 0".into()));
        }
        let (mut hs, dtype, rekey_every) = self.take_open("accept")?;
        let reply = pb::OpenReply {
            accepted: true,
            error_code: wire::code_to_pb(ErrorCode::Unknown),
            error_message: String::new(),
            kv_positions: accepted.kv_positions,
            d_model: accepted.d_model,
            rekey_every,
            payment_terms: accepted.payment.as_ref().map(wire::terms_to_pb),
        };
        let sent =
            noise::write_handshake(&mut hs, &wire::encode(pb::envelope::Body::OpenReply(reply)))
                .map_err(SessionError::from)
                .and_then(|m| noise::frame_handshake(&m))
                .and_then(|bytes| Ok((bytes, Transport::new(*hs, rekey_every)?)));
        match sent {
            Ok((bytes, transport)) => {
                self.state = State::Open(Box::new(Established::new(
                    transport,
                    accepted.d_model,
                    accepted.kv_positions,
                    dtype,
                    &self.limits,
                )));
                Ok(bytes)
            }
            Err(e) => {
                self.dead = true;
                Err(e)
            }
        }
    }

    /// Handshake message 2 carrying a refusal; the session ends.
    pub fn reject(&mut self, code: ErrorCode, message: &str) -> Result<Vec<u8>, SessionError> {
        let (mut hs, _, rekey_every) = self.take_open("reject")?;
        let reply = pb::OpenReply {
            accepted: false,
            error_code: wire::code_to_pb(code),
            error_message: wire::clip_message(message),
            kv_positions: 0,
            d_model: 0,
            rekey_every,
            payment_terms: None,
        };
        let sent =
            noise::write_handshake(&mut hs, &wire::encode(pb::envelope::Body::OpenReply(reply)))
                .map_err(SessionError::from)
                .and_then(|m| noise::frame_handshake(&m));
        self.closed_here = true;
        if sent.is_err() {
            self.dead = true;
        }
        sent
    }

    /// Framed, chunked ciphertext of the hidden states out of the worker's last block
    /// (`n_tokens × d_model`, row-major) for forward `request_id`.
    pub fn result(
        &mut self,
        request_id: u64,
        start_pos: u32,
        hidden: &[f32],
    ) -> Result<Vec<u8>, SessionError> {
        let mut out = Vec::new();
        self.result_into(request_id, start_pos, hidden, &mut out)?;
        Ok(out)
    }

    /// Like [`WorkerSession::result`], appending the frames to `out` (a buffer the
    /// driver reuses). On error nothing is appended.
    pub fn result_into(
        &mut self,
        request_id: u64,
        start_pos: u32,
        hidden: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        let est = self.open_for("result")?;
        est.seal_tensor_into(TensorKind::Result, request_id, start_pos, hidden, out)
    }

    /// The same result as [`WorkerSession::result`], sealed one frame at a time as the
    /// driver writes them (see [`TensorFrames`]). Every check is done here: an error
    /// sends nothing.
    pub fn result_frames<'a>(
        &'a mut self,
        request_id: u64,
        start_pos: u32,
        hidden: &'a [f32],
    ) -> Result<TensorFrames<'a>, SessionError> {
        self.open_for("result")?;
        let State::Open(est) = &mut self.state else {
            unreachable!("open_for checked that the session is open");
        };
        let tensor = est.prepare_tensor(TensorKind::Result, request_id, start_pos, hidden)?;
        Ok(TensorFrames::new(est, tensor, &mut self.dead))
    }

    /// Framed receipt for a forward of a paid session; send it just before the result.
    pub fn receipt(&mut self, receipt: &Receipt) -> Result<Vec<u8>, SessionError> {
        let est = self.open_for("receipt")?;
        est.seal(pb::envelope::Body::Receipt(wire::receipt_to_pb(receipt)))
    }

    /// Framed report that forward `request_id` failed; the session stays open.
    pub fn error(
        &mut self,
        request_id: u64,
        code: ErrorCode,
        message: &str,
    ) -> Result<Vec<u8>, SessionError> {
        let est = self.open_for("error")?;
        est.seal(pb::envelope::Body::Error(pb::Error {
            request_id,
            code: wire::code_to_pb(code),
            message: wire::clip_message(message),
        }))
    }

    /// Framed Close. Forwards still in flight from the client are then read and dropped.
    pub fn close(&mut self) -> Result<Vec<u8>, SessionError> {
        let est = self.open_for("close")?;
        let bytes = est.seal(pb::envelope::Body::Close(pb::Close {}))?;
        self.closed_here = true;
        Ok(bytes)
    }

    /// Whether results can be sent: accepted, not closed by either side, not dead.
    pub fn is_open(&self) -> bool {
        !self.dead && !self.closed_here && matches!(self.state, State::Open(_))
    }

    /// Messages and rekeys so far (zero before the session is open).
    pub fn stats(&self) -> TransportStats {
        match &self.state {
            State::Open(est) => est.stats(),
            _ => TransportStats::default(),
        }
    }

    fn state_name(&self) -> &'static str {
        if self.dead {
            return "dead";
        }
        match (&self.state, self.closed_here) {
            (_, true) => "closed",
            (State::AwaitingOpen(_), _) => "awaiting the client's Open",
            (State::OpenReceived { .. }, _) => "awaiting accept or reject",
            (State::Open(_), _) => "open",
            (State::Ended, _) => "ended by the client",
        }
    }

    fn take_open(
        &mut self,
        call: &'static str,
    ) -> Result<(Box<HandshakeState>, WireDtype, u64), SessionError> {
        if self.dead {
            return Err(SessionError::Dead);
        }
        let state = self.state_name();
        match std::mem::replace(&mut self.state, State::Ended) {
            State::OpenReceived {
                hs,
                dtype,
                rekey_every,
            } => Ok((hs, dtype, rekey_every)),
            other => {
                self.state = other;
                Err(SessionError::WrongState { call, state })
            }
        }
    }

    fn open_for(&mut self, call: &'static str) -> Result<&mut Established, SessionError> {
        if self.dead {
            return Err(SessionError::Dead);
        }
        let state = self.state_name();
        match &mut self.state {
            State::Open(est) if !self.closed_here => Ok(est),
            _ => Err(SessionError::WrongState { call, state }),
        }
    }
}

fn on_frame(
    state: &mut State,
    limits: &SessionLimits,
    closed_here: bool,
    frame: &[u8],
    events: &mut Vec<WorkerEvent>,
) -> Result<(), SessionError> {
    use pb::envelope::Body;
    match state {
        State::AwaitingOpen(hs) => {
            let payload = noise::read_handshake(hs, frame)?;
            let open = match wire::decode(&payload)? {
                Body::Open(o) => o,
                other => {
                    return Err(SessionError::Protocol(format!(
                        "expected the client's OpenSession, got {}",
                        wire::kind(&other)
                    )));
                }
            };
            let (open, proposed) = wire::open_from_pb(open)?;
            let client_static_public: [u8; 32] = hs
                .get_remote_static()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| {
                    SessionError::Protocol("handshake gave no 32-byte client static key".into())
                })?;
            let State::AwaitingOpen(hs) = std::mem::replace(state, State::Ended) else {
                unreachable!("matched AwaitingOpen above");
            };
            *state = State::OpenReceived {
                hs,
                dtype: open.dtype,
                rekey_every: proposed.min(limits.rekey_every.max(1)),
            };
            events.push(WorkerEvent::Open {
                open,
                client_static_public,
            });
            Ok(())
        }
        State::OpenReceived { .. } => Err(SessionError::Protocol(
            "the client sent a message before the session was accepted".into(),
        )),
        State::Open(est) => {
            let body = est.open(frame)?;
            if est.reassembling() && !matches!(body, Body::Forward(_)) {
                return Err(SessionError::Protocol(format!(
                    "{} arrived in the middle of a chunked Forward",
                    wire::kind(&body)
                )));
            }
            match body {
                Body::Forward(chunk) => {
                    if let Some(t) = est.take_chunk(chunk)?
                        && !closed_here
                    {
                        events.push(WorkerEvent::Forward {
                            request_id: t.request_id,
                            start_pos: t.start_pos,
                            hidden: t.hidden,
                        });
                    }
                }
                Body::Payment(p) => {
                    wire::check_payment_state(&p.state_boc)?;
                    if !closed_here {
                        events.push(WorkerEvent::Payment {
                            state_boc: p.state_boc,
                        });
                    }
                }
                Body::Close(_) => {
                    events.push(WorkerEvent::Close);
                    *state = State::Ended;
                }
                other => {
                    return Err(SessionError::Protocol(format!(
                        "a client may not send {}",
                        wire::kind(&other)
                    )));
                }
            }
            Ok(())
        }
        State::Ended => Err(SessionError::Protocol(
            "the client sent a message after the session ended".into(),
        )),
    }
}

//! The client's end of a session: opens it with handshake message 1 (carrying the
//! `OpenSession`), reads the worker's reply, then sends forwards and reads results.

use snow::HandshakeState;

use super::established::{Established, TensorFrames, TensorKind};
use super::frame::FrameDecoder;
use super::noise::{self, Transport, TransportStats};
use super::{
    CipherSuite, ErrorCode, OpenAccepted, OpenSession, Receipt, SessionError, SessionLimits, wire,
};
use crate::proto::infer as pb;

/// What the worker's bytes amounted to.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// The worker accepted the session.
    Opened(OpenAccepted),
    /// The worker refused the session; it is over.
    Rejected { code: ErrorCode, message: String },
    /// Hidden states out of the worker's last block for a forward.
    Result {
        request_id: u64,
        start_pos: u32,
        hidden: Vec<f32>,
    },
    /// A forward failed on the worker; the session stays open.
    Error {
        request_id: u64,
        code: ErrorCode,
        message: String,
    },
    /// The worker's charge for a forward of a paid session (it precedes the result).
    Receipt(Receipt),
    /// The worker ended the session.
    Closed,
}

enum State {
    AwaitingReply(Box<HandshakeState>),
    Open(Box<Established>),
    /// Rejected by the worker or closed by it: nothing more may arrive.
    Ended,
}

/// The client's end of one session with one worker.
pub struct ClientSession {
    frames: FrameDecoder,
    state: State,
    limits: SessionLimits,
    dtype: super::WireDtype,
    /// Whether this side sent its Close.
    closed_here: bool,
    dead: bool,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("state", &self.state_name())
            .field("closed_here", &self.closed_here)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// Handshake message 1, in `suite`, carries the encoded OpenSession. Returns framed
    /// bytes to write.
    pub fn start(
        suite: CipherSuite,
        client_static_secret: &[u8; 32],
        worker_static_public: &[u8; 32],
        open: OpenSession,
        limits: SessionLimits,
    ) -> Result<(ClientSession, Vec<u8>), SessionError> {
        if let Some(c) = &open.channel
            && c.len() > super::MAX_CHANNEL_LEN
        {
            return Err(SessionError::Protocol(format!(
                "payment channel address of {} bytes exceeds {}",
                c.len(),
                super::MAX_CHANNEL_LEN
            )));
        }
        let mut hs = noise::initiator(suite, client_static_secret, worker_static_public)?;
        let payload = wire::encode(pb::envelope::Body::Open(wire::open_to_pb(
            &open,
            limits.rekey_every.max(1),
        )));
        let message = noise::write_handshake(&mut hs, &payload)?;
        let bytes = noise::frame_handshake(&message)?;
        let session = ClientSession {
            frames: FrameDecoder::new(),
            state: State::AwaitingReply(Box::new(hs)),
            dtype: open.dtype,
            limits,
            closed_here: false,
            dead: false,
        };
        Ok((session, bytes))
    }

    /// Feed bytes read from the stream (any split); returns completed events.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<Vec<ClientEvent>, SessionError> {
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
                self.dtype,
                frame,
                &mut events,
            ) {
                self.dead = true;
                return Err(e);
            }
        }
    }

    /// Framed, chunked ciphertext for one forward (hidden is n_tokens × d_model
    /// row-major). Errors before the worker accepted.
    pub fn forward(
        &mut self,
        request_id: u64,
        start_pos: u32,
        hidden: &[f32],
    ) -> Result<Vec<u8>, SessionError> {
        let mut out = Vec::new();
        self.forward_into(request_id, start_pos, hidden, &mut out)?;
        Ok(out)
    }

    /// Like [`ClientSession::forward`], appending the frames to `out` (a buffer the
    /// driver reuses). On error nothing is appended.
    pub fn forward_into(
        &mut self,
        request_id: u64,
        start_pos: u32,
        hidden: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        let est = self.open_for("forward")?;
        est.seal_tensor_into(TensorKind::Forward, request_id, start_pos, hidden, out)
    }

    /// The same forward as [`ClientSession::forward`], sealed one frame at a time as the
    /// driver writes them (see [`TensorFrames`]). Every check is done here: an error
    /// sends nothing.
    pub fn forward_frames<'a>(
        &'a mut self,
        request_id: u64,
        start_pos: u32,
        hidden: &'a [f32],
    ) -> Result<TensorFrames<'a>, SessionError> {
        self.open_for("forward")?;
        let State::Open(est) = &mut self.state else {
            unreachable!("open_for checked that the session is open");
        };
        let tensor = est.prepare_tensor(TensorKind::Forward, request_id, start_pos, hidden)?;
        Ok(TensorFrames::new(est, tensor, &mut self.dead))
    }

    /// Framed payment: `state_boc` is the client's signed channel state (a BoC of at most
    /// [`super::MAX_PAYMENT_STATE`] bytes). Errors before the worker accepted.
    pub fn payment(&mut self, state_boc: &[u8]) -> Result<Vec<u8>, SessionError> {
        wire::check_payment_state(state_boc)?;
        let est = self.open_for("payment")?;
        est.seal(pb::envelope::Body::Payment(pb::Payment {
            state_boc: state_boc.to_vec(),
        }))
    }

    /// Framed Close. Before the worker's reply there is nothing to encrypt with: the
    /// session just ends here and the bytes are empty (drop the stream).
    pub fn close(&mut self) -> Result<Vec<u8>, SessionError> {
        if self.dead {
            return Err(SessionError::Dead);
        }
        match &mut self.state {
            State::AwaitingReply(_) => {
                self.state = State::Ended;
                self.closed_here = true;
                Ok(Vec::new())
            }
            _ => {
                let est = self.open_for("close")?;
                let bytes = est.seal(pb::envelope::Body::Close(pb::Close {}))?;
                self.closed_here = true;
                Ok(bytes)
            }
        }
    }

    /// Whether forwards can be sent: accepted, not closed by either side, not dead.
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
            (State::AwaitingReply(_), _) => "awaiting the worker's reply",
            (State::Open(_), _) => "open",
            (State::Ended, _) => "ended by the worker",
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
    dtype: super::WireDtype,
    frame: &[u8],
    events: &mut Vec<ClientEvent>,
) -> Result<(), SessionError> {
    use pb::envelope::Body;
    match state {
        State::AwaitingReply(hs) => {
            let payload = noise::read_handshake(hs, frame)?;
            let reply = match wire::decode(&payload)? {
                Body::OpenReply(r) => r,
                other => {
                    return Err(SessionError::Protocol(format!(
                        "expected the worker's OpenReply, got {}",
                        wire::kind(&other)
                    )));
                }
            };
            if !reply.accepted {
                events.push(ClientEvent::Rejected {
                    code: wire::code_from_pb(reply.error_code),
                    message: wire::check_message(reply.error_message)?,
                });
                *state = State::Ended;
                return Ok(());
            }
            if reply.d_model == 0 {
                return Err(SessionError::Protocol(
                    "OpenReply accepts with d_model 0".into(),
                ));
            }
            let proposed = limits.rekey_every.max(1);
            if reply.rekey_every == 0 || reply.rekey_every > proposed {
                return Err(SessionError::Protocol(format!(
                    "OpenReply sets rekey_every {}, outside 1..={proposed}",
                    reply.rekey_every
                )));
            }
            let State::AwaitingReply(hs) = std::mem::replace(state, State::Ended) else {
                unreachable!("matched AwaitingReply above");
            };
            let transport = Transport::new(*hs, reply.rekey_every)?;
            *state = State::Open(Box::new(Established::new(
                transport,
                reply.d_model,
                reply.kv_positions,
                dtype,
                limits,
            )));
            events.push(ClientEvent::Opened(OpenAccepted {
                kv_positions: reply.kv_positions,
                d_model: reply.d_model,
                payment: reply.payment_terms.map(wire::terms_from_pb),
            }));
            Ok(())
        }
        State::Open(est) => {
            let body = est.open(frame)?;
            if est.reassembling() && !matches!(body, Body::Result(_)) {
                return Err(SessionError::Protocol(format!(
                    "{} arrived in the middle of a chunked Result",
                    wire::kind(&body)
                )));
            }
            match body {
                Body::Result(chunk) => {
                    if let Some(t) = est.take_chunk(chunk)? {
                        events.push(ClientEvent::Result {
                            request_id: t.request_id,
                            start_pos: t.start_pos,
                            hidden: t.hidden,
                        });
                    }
                }
                Body::Error(e) => events.push(ClientEvent::Error {
                    request_id: e.request_id,
                    code: wire::code_from_pb(e.code),
                    message: wire::check_message(e.message)?,
                }),
                Body::Receipt(r) => events.push(ClientEvent::Receipt(wire::receipt_from_pb(r))),
                Body::Close(_) => {
                    events.push(ClientEvent::Closed);
                    *state = State::Ended;
                }
                other => {
                    return Err(SessionError::Protocol(format!(
                        "a worker may not send {}",
                        wire::kind(&other)
                    )));
                }
            }
            Ok(())
        }
        State::Ended => Err(SessionError::Protocol(
            "the worker sent a message after the session ended".into(),
        )),
    }
}

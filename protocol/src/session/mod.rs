//! End-to-end inference sessions between a client and one worker, sans-IO: the client's
//! and the worker's state machines over `Noise_IK_25519_ChaChaPoly_BLAKE2s` (or, where
//! both ends run AES in hardware, `Noise_IK_25519_AESGCM_BLAKE2s`: see [`CipherSuite`]).
//! Bytes read from the stream go in (`on_bytes`), events come out; calls return the
//! framed ciphertext to write. The driver (node or simulator) owns the stream, and tells
//! both ends the session's suite (the node through the stream's protocol id).
//!
//! The conversation: the client's handshake message 1 carries an `OpenSession`; the
//! worker answers with message 2 carrying an accept (`kv_positions`, `d_model`) or a
//! reject. Then the client sends forwards (hidden states in) and a close; the worker sends
//! results (hidden states out), per-request errors and a close. A paid session (its open
//! names a channel) adds the worker's terms to the accept, a receipt before each result
//! and the client's payments (signed channel states, opaque here). Tensors larger than one
//! Noise message travel as chunks. Both ends rekey each direction every `rekey_every`
//! messages, an interval the client proposes and the worker may lower. Any error while
//! reading the peer's bytes kills the session: that call returns the error, every later
//! call `SessionError::Dead`. Errors in a local call (a wrong shape, a call in the wrong
//! state) send nothing and leave the session as it was.

mod client;
mod established;
pub mod frame;
pub mod noise;
mod suite;
mod wire;
mod worker;

#[cfg(test)]
mod tests;

pub use crate::tensor::WireDtype;
pub use client::{ClientEvent, ClientSession};
pub use established::TensorFrames;
pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use noise::{NoiseError, TransportStats};
pub use suite::{CipherSuite, aes_hardware};
pub use worker::{WorkerEvent, WorkerSession};

use crate::channel::Usage;
use crate::tensor::{ReassemblyError, TensorError};
use crate::units::BlockRange;

/// Largest Noise message, and so largest frame body.
pub const MAX_NOISE_MESSAGE: usize = 65535;
/// Tensor bytes carried by one chunk: a full chunk's envelope plus the AEAD tag stays
/// under [`MAX_NOISE_MESSAGE`].
pub const MAX_CHUNK_DATA: usize = 65_280;
/// Longest error or refusal message, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;
/// Longest payment channel address in an open request, in bytes.
pub const MAX_CHANNEL_LEN: usize = 256;
/// Longest signed channel state (a BoC) in a payment, in bytes.
pub const MAX_PAYMENT_STATE: usize = 1024;

/// Bounds a session applies to what the peer sends, and how often it rekeys.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// Most tokens in one forward or result.
    pub max_tokens_per_forward: u32,
    /// Most bytes of one reassembled tensor.
    pub max_message_bytes: usize,
    /// Transport messages per direction between rekeys. The client proposes its value;
    /// the worker uses the smaller of the proposal and its own. 0 counts as 1.
    pub rekey_every: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_tokens_per_forward: 4096,
            max_message_bytes: 16 << 20,
            rekey_every: 4096,
        }
    }
}

/// What a client asks a worker to serve.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenSession {
    /// The model (hash of its weights manifest).
    pub model_id: [u8; 32],
    /// The blocks to run, `[start, end)`.
    pub blocks: BlockRange,
    /// KV positions to reserve.
    pub max_positions: u32,
    /// Dtype of every tensor, both ways.
    pub dtype: WireDtype,
    /// The client's own number for this session.
    pub tag: u64,
    /// Payment channel address, when payments are on.
    pub channel: Option<String>,
}

/// A worker's acceptance of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAccepted {
    /// KV positions reserved: every tensor must keep `start_pos + n_tokens` within it.
    pub kv_positions: u32,
    /// Values per token of the hidden states.
    pub d_model: u32,
    /// The worker's terms when the session is paid (it named a payment channel).
    pub payment: Option<PaymentTerms>,
}

/// What a paid session costs, as the worker states it in its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentTerms {
    /// Nanoton per prompt token (each row of a forward of two or more tokens).
    pub price_prompt_nanoton: u64,
    /// Nanoton per completion token (the row of a one-token forward).
    pub price_completion_nanoton: u64,
    /// Most nanotons served ahead of the payments the worker holds, channel-wide.
    pub credit_window_nanoton: u64,
}

/// A worker's charge for one forward of a paid session, sent just before its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The forward charged.
    pub request_id: u64,
    /// Tokens charged for this forward.
    pub usage: Usage,
    /// Cost of everything served in the channel so far, as the worker counts it.
    pub owed_nanoton: u64,
    /// Cumulative `sent` of the newest payment the worker accepted.
    pub paid_nanoton: u64,
}

/// Why a worker refused a session or a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    WrongModel,
    WrongBlocks,
    KvBudget,
    Busy,
    Internal,
    /// A tensor's shape does not match the session.
    BadShape,
    /// Positions beyond the KV positions granted.
    PositionOutOfRange,
    /// The payment channel does not cover the work.
    PaymentRequired,
    /// A code this version does not know.
    Unknown,
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SessionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("session is dead after an earlier error")]
    Dead,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("tensor chunks: {0}")]
    Reassembly(#[from] ReassemblyError),
    #[error(
        "positions {start_pos}..{start_pos}+{n_tokens} exceed the {kv_positions} KV positions granted"
    )]
    OutOfPositions {
        start_pos: u32,
        n_tokens: u32,
        kv_positions: u32,
    },
    #[error("{call} is not allowed while the session is {state}")]
    WrongState {
        call: &'static str,
        state: &'static str,
    },
}

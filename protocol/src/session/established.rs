//! The open phase both ends share once the handshake is done: sealing envelopes and
//! chunked tensors into frames, opening frames back into envelopes, and reassembling
//! and checking the tensors a peer sends against the session's shape, dtype, limits and
//! granted KV positions.

use super::noise::{Transport, TransportStats};
use super::{MAX_CHUNK_DATA, SessionError, SessionLimits, WireDtype, wire};
use crate::proto::infer as pb;
use crate::tensor::{self, ChunkHeader, Reassembler, TensorError, TensorLimits};

/// Which way a tensor travels, which decides its envelope field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Client → worker.
    Forward,
    /// Worker → client.
    Result,
}

/// A whole tensor received from the peer.
#[derive(Debug)]
pub struct ReceivedTensor {
    pub request_id: u64,
    pub start_pos: u32,
    pub hidden: Vec<f32>,
}

/// An open session's transport and the shape every tensor in it must have.
#[derive(Debug)]
pub struct Established {
    transport: Transport,
    d_model: u32,
    kv_positions: u32,
    dtype: WireDtype,
    limits: TensorLimits,
    reassembler: Reassembler,
}

impl Established {
    pub fn new(
        transport: Transport,
        d_model: u32,
        kv_positions: u32,
        dtype: WireDtype,
        limits: &SessionLimits,
    ) -> Self {
        Established {
            transport,
            d_model,
            kv_positions,
            dtype,
            limits: TensorLimits {
                max_tokens: limits.max_tokens_per_forward,
                max_bytes: limits.max_message_bytes,
            },
            reassembler: Reassembler::new(limits.max_message_bytes),
        }
    }

    pub fn stats(&self) -> TransportStats {
        self.transport.stats()
    }

    /// Whether a tensor from the peer is partly received.
    pub fn reassembling(&self) -> bool {
        self.reassembler.in_progress()
    }

    /// One frame holding `body`.
    pub fn seal(&mut self, body: pb::envelope::Body) -> Result<Vec<u8>, SessionError> {
        self.transport.seal_frame(&wire::encode(body))
    }

    fn check_positions(&self, start_pos: u32, n_tokens: u32) -> Result<(), SessionError> {
        match start_pos.checked_add(n_tokens) {
            Some(end) if end <= self.kv_positions => Ok(()),
            _ => Err(SessionError::OutOfPositions {
                start_pos,
                n_tokens,
                kv_positions: self.kv_positions,
            }),
        }
    }

    /// Frames holding `hidden` (`n_tokens × d_model`, row-major), chunked to fit.
    pub fn seal_tensor(
        &mut self,
        kind: TensorKind,
        request_id: u64,
        start_pos: u32,
        hidden: &[f32],
    ) -> Result<Vec<u8>, SessionError> {
        let n_tokens = tensor::count_tokens(hidden.len(), self.d_model)?;
        tensor::check_header(n_tokens, self.d_model, self.dtype, &self.limits)?;
        self.check_positions(start_pos, n_tokens)?;
        let bytes = tensor::encode_values(hidden, self.dtype)?;
        let chunks = tensor::split_chunks(&bytes, MAX_CHUNK_DATA);
        let chunk_count = chunks.len() as u32;
        let mut out = Vec::with_capacity(bytes.len() + chunks.len() * 64);
        let mut plain = Vec::with_capacity(MAX_CHUNK_DATA + 64);
        for (i, data) in chunks.into_iter().enumerate() {
            let chunk = pb::TensorChunk {
                request_id,
                start_pos,
                n_tokens,
                dtype: wire::dtype_to_pb(self.dtype),
                chunk_index: i as u32,
                chunk_count,
                data: data.to_vec(),
            };
            let body = match kind {
                TensorKind::Forward => pb::envelope::Body::Forward(chunk),
                TensorKind::Result => pb::envelope::Body::Result(chunk),
            };
            plain.clear();
            prost::Message::encode(
                &pb::Envelope { body: Some(body) },
                &mut plain,
            )
            .expect("a Vec grows to fit");
            self.transport.seal_frame_into(&plain, &mut out)?;
        }
        Ok(out)
    }

    /// The envelope inside one frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<pb::envelope::Body, SessionError> {
        wire::decode(&self.transport.open(frame)?)
    }

    /// Takes one chunk from the peer; returns the tensor once its last chunk is in.
    pub fn take_chunk(
        &mut self,
        chunk: pb::TensorChunk,
    ) -> Result<Option<ReceivedTensor>, SessionError> {
        let dtype = wire::dtype_from_pb(chunk.dtype)?;
        if dtype != self.dtype {
            return Err(SessionError::Protocol(format!(
                "tensor chunk in {dtype:?}, but the session's dtype is {:?}",
                self.dtype
            )));
        }
        tensor::check_header(chunk.n_tokens, self.d_model, dtype, &self.limits)?;
        self.check_positions(chunk.start_pos, chunk.n_tokens)?;
        let header = ChunkHeader {
            request_id: chunk.request_id,
            start_pos: chunk.start_pos,
            n_tokens: chunk.n_tokens,
            dtype,
            chunk_count: chunk.chunk_count,
        };
        let Some(bytes) = self
            .reassembler
            .push(header, chunk.chunk_index, &chunk.data)?
        else {
            return Ok(None);
        };
        let hidden =
            tensor::decode_values(&bytes, header.n_tokens, self.d_model, dtype, &self.limits)
                .map_err(|e: TensorError| SessionError::Tensor(e))?;
        Ok(Some(ReceivedTensor {
            request_id: header.request_id,
            start_pos: header.start_pos,
            hidden,
        }))
    }
}

//! The open phase both ends share once the handshake is done: sealing envelopes and
//! chunked tensors into frames, opening frames back into envelopes, and reassembling
//! and checking the tensors a peer sends against the session's shape, dtype, limits and
//! granted KV positions.

use bytes::BytesMut;

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
    /// Plaintext of the message being sealed, kept between messages.
    sealing: Vec<u8>,
    /// Plaintext of the message being opened; its allocation is reused once the body
    /// decoded from it (which may hold slices of it) is dropped.
    opening: BytesMut,
}

/// Values of one full chunk: chunk boundaries fall between values, so each chunk is
/// encoded straight from the caller's slice.
fn values_per_chunk(dtype: WireDtype) -> usize {
    MAX_CHUNK_DATA / dtype.size()
}

const _: () = assert!(MAX_CHUNK_DATA.is_multiple_of(4));

/// A tensor checked against the session and ready to be sealed one chunk at a time.
#[derive(Debug)]
pub struct OutgoingTensor<'h> {
    kind: TensorKind,
    fields: wire::ChunkFields,
    hidden: &'h [f32],
}

impl OutgoingTensor<'_> {
    /// Chunks (and so frames) of the whole tensor.
    pub fn chunk_count(&self) -> u32 {
        self.fields.chunk_count
    }

    /// Chunks sealed so far.
    pub fn chunks_sealed(&self) -> u32 {
        self.fields.chunk_index
    }

    /// Whether every chunk has been sealed.
    pub fn is_done(&self) -> bool {
        self.fields.chunk_index == self.fields.chunk_count
    }
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
            sealing: Vec::new(),
            opening: BytesMut::new(),
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
        self.sealing.clear();
        prost::Message::encode(&pb::Envelope { body: Some(body) }, &mut self.sealing)
            .expect("a Vec grows to fit");
        self.transport.seal_frame(&self.sealing)
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

    /// Checks `hidden` (`n_tokens × d_model`, row-major) against the session, every
    /// value included, before any of it is sealed: an error here sends nothing.
    pub fn prepare_tensor<'h>(
        &self,
        kind: TensorKind,
        request_id: u64,
        start_pos: u32,
        hidden: &'h [f32],
    ) -> Result<OutgoingTensor<'h>, SessionError> {
        let n_tokens = tensor::count_tokens(hidden.len(), self.d_model)?;
        tensor::check_header(n_tokens, self.d_model, self.dtype, &self.limits)?;
        self.check_positions(start_pos, n_tokens)?;
        tensor::check_values(hidden, self.dtype)?;
        let chunk_count = hidden.len().div_ceil(values_per_chunk(self.dtype));
        Ok(OutgoingTensor {
            kind,
            fields: wire::ChunkFields {
                request_id,
                start_pos,
                n_tokens,
                dtype: self.dtype,
                chunk_index: 0,
                chunk_count: u32::try_from(chunk_count)
                    .expect("a tensor within the byte limit has few chunks"),
            },
            hidden,
        })
    }

    /// Seals the next chunk of `t` and appends its frame to `out`; returns false (and
    /// appends nothing) once every chunk is sealed.
    pub fn seal_next_chunk(
        &mut self,
        t: &mut OutgoingTensor<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        if t.is_done() {
            return Ok(false);
        }
        let per_chunk = values_per_chunk(t.fields.dtype);
        let from = t.fields.chunk_index as usize * per_chunk;
        let values = &t.hidden[from..(from + per_chunk).min(t.hidden.len())];
        let data_len = tensor::encoded_len(values.len(), t.fields.dtype);
        self.sealing.clear();
        wire::put_chunk_prefix(
            t.kind == TensorKind::Forward,
            &t.fields,
            data_len,
            &mut self.sealing,
        );
        let at = self.sealing.len();
        self.sealing.resize(at + data_len, 0);
        tensor::write_values(values, t.fields.dtype, &mut self.sealing[at..]);
        self.transport.seal_frame_into(&self.sealing, out)?;
        t.fields.chunk_index += 1;
        Ok(true)
    }

    /// Frames holding `hidden` (`n_tokens × d_model`, row-major), chunked to fit,
    /// appended to `out`.
    pub fn seal_tensor_into(
        &mut self,
        kind: TensorKind,
        request_id: u64,
        start_pos: u32,
        hidden: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        let mut t = self.prepare_tensor(kind, request_id, start_pos, hidden)?;
        // Frame header, envelope and chunk header, and tag: well under 64 bytes a chunk.
        out.reserve(tensor::encoded_len(hidden.len(), self.dtype) + 64 * t.chunk_count() as usize);
        while self.seal_next_chunk(&mut t, out)? {}
        Ok(())
    }

    /// The envelope inside one frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<pb::envelope::Body, SessionError> {
        // Room for the whole message, so that it opens in place.
        self.opening.clear();
        self.opening.resize(frame.len(), 0);
        let n = self.transport.open_into(frame, &mut self.opening)?;
        self.opening.truncate(n);
        wire::decode_shared(self.opening.split().freeze())
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
            tensor::decode_values(bytes, header.n_tokens, self.d_model, dtype, &self.limits)
                .map_err(|e: TensorError| SessionError::Tensor(e))?;
        Ok(Some(ReceivedTensor {
            request_id: header.request_id,
            start_pos: header.start_pos,
            hidden,
        }))
    }
}

/// The frames of one tensor, sealed one chunk at a time as the driver asks for them, so
/// that a driver can write each frame while it seals the next (the peer then opens the
/// first chunks while the last are still being sealed). Every value was checked before
/// the first chunk: a tensor either goes out whole or fails before sending anything.
/// Dropping it after some but not all of its frames were sealed ends the session (the
/// peer would wait for the rest forever): every later call fails with `Dead`.
pub struct TensorFrames<'a> {
    est: &'a mut Established,
    tensor: OutgoingTensor<'a>,
    dead: &'a mut bool,
}

impl std::fmt::Debug for TensorFrames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFrames")
            .field("chunk_count", &self.tensor.chunk_count())
            .field("sealed", &self.tensor.chunks_sealed())
            .finish_non_exhaustive()
    }
}

impl<'a> TensorFrames<'a> {
    pub(super) fn new(
        est: &'a mut Established,
        tensor: OutgoingTensor<'a>,
        dead: &'a mut bool,
    ) -> Self {
        TensorFrames { est, tensor, dead }
    }

    /// Frames of the whole tensor.
    pub fn frame_count(&self) -> u32 {
        self.tensor.chunk_count()
    }

    /// Seals the next chunk and appends its frame to `out`; false once all are sealed.
    /// An error (the transport failed) ends the session.
    pub fn next_frame_into(&mut self, out: &mut Vec<u8>) -> Result<bool, SessionError> {
        self.est
            .seal_next_chunk(&mut self.tensor, out)
            .inspect_err(|_| *self.dead = true)
    }
}

impl Drop for TensorFrames<'_> {
    fn drop(&mut self) {
        if self.tensor.chunks_sealed() > 0 && !self.tensor.is_done() {
            *self.dead = true;
        }
    }
}

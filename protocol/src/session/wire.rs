//! Conversions between the session's Rust types and the `cocoon.infer.v1` protobuf
//! messages, with the checks applied to whatever a peer sent.

use bytes::Bytes;
use prost::Message;

use super::{
    ErrorCode, MAX_CHANNEL_LEN, MAX_ERROR_MESSAGE, MAX_PAYMENT_STATE, OpenSession, PaymentTerms,
    Receipt, SessionError, WireDtype,
};
use crate::channel::Usage;
use crate::proto::infer as pb;
use crate::units::BlockRange;

fn protocol(msg: impl Into<String>) -> SessionError {
    SessionError::Protocol(msg.into())
}

/// The encoded envelope holding `body`.
pub fn encode(body: pb::envelope::Body) -> Vec<u8> {
    pb::Envelope { body: Some(body) }.encode_to_vec()
}

/// The body of an encoded envelope.
pub fn decode(bytes: &[u8]) -> Result<pb::envelope::Body, SessionError> {
    pb::Envelope::decode(bytes)
        .map_err(|e| protocol(format!("envelope does not decode: {e}")))?
        .body
        .ok_or_else(|| protocol("envelope has no body"))
}

/// The body of an encoded envelope held in `bytes`: a tensor chunk's data comes out as
/// a slice of `bytes`, not a copy.
pub fn decode_shared(bytes: Bytes) -> Result<pb::envelope::Body, SessionError> {
    pb::Envelope::decode(bytes)
        .map_err(|e| protocol(format!("envelope does not decode: {e}")))?
        .body
        .ok_or_else(|| protocol("envelope has no body"))
}

/// The header fields of a tensor chunk, everything but its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkFields {
    pub request_id: u64,
    pub start_pos: u32,
    pub n_tokens: u32,
    pub dtype: WireDtype,
    pub chunk_index: u32,
    pub chunk_count: u32,
}

/// Field numbers of `Envelope.forward` and `Envelope.result`.
const ENVELOPE_FORWARD: u32 = 3;
const ENVELOPE_RESULT: u32 = 4;
/// Protobuf wire types.
const VARINT: u32 = 0;
const LEN: u32 = 2;

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(field: u32, wire_type: u32, out: &mut Vec<u8>) {
    put_varint(u64::from(field << 3 | wire_type), out);
}

/// Appends to `out` the encoded envelope holding a tensor chunk (`forward` when
/// `forward` is true, else `result`) with header `f` and `data_len` bytes of data, all
/// but the data itself, which the caller appends next. Together they are byte for byte
/// what prost encodes for the same `Envelope` (proto3: fields in order, zeros omitted),
/// so the chunk's values can be written straight into the message.
pub fn put_chunk_prefix(forward: bool, f: &ChunkFields, data_len: usize, out: &mut Vec<u8>) {
    let dtype = u64::from(dtype_to_pb(f.dtype) as u32);
    let varints: [(u32, u64); 6] = [
        (1, f.request_id),
        (2, u64::from(f.start_pos)),
        (3, u64::from(f.n_tokens)),
        (4, dtype),
        (5, u64::from(f.chunk_index)),
        (6, u64::from(f.chunk_count)),
    ];
    // Every field number is below 16, so every key is one byte.
    let mut inner = 0;
    for &(_, v) in &varints {
        if v != 0 {
            inner += 1 + varint_len(v);
        }
    }
    if data_len != 0 {
        inner += 1 + varint_len(data_len as u64) + data_len;
    }
    let field = if forward {
        ENVELOPE_FORWARD
    } else {
        ENVELOPE_RESULT
    };
    put_key(field, LEN, out);
    put_varint(inner as u64, out);
    for (number, v) in varints {
        if v != 0 {
            put_key(number, VARINT, out);
            put_varint(v, out);
        }
    }
    if data_len != 0 {
        put_key(7, LEN, out);
        put_varint(data_len as u64, out);
    }
}

/// The name of a body's kind, for error messages.
pub fn kind(body: &pb::envelope::Body) -> &'static str {
    use pb::envelope::Body;
    match body {
        Body::Open(_) => "OpenSession",
        Body::OpenReply(_) => "OpenReply",
        Body::Forward(_) => "Forward",
        Body::Result(_) => "Result",
        Body::Close(_) => "Close",
        Body::Error(_) => "Error",
        Body::Payment(_) => "Payment",
        Body::Receipt(_) => "Receipt",
    }
}

pub fn dtype_to_pb(d: WireDtype) -> i32 {
    match d {
        WireDtype::F32 => pb::WireDtype::F32 as i32,
        WireDtype::F16 => pb::WireDtype::F16 as i32,
    }
}

pub fn dtype_from_pb(v: i32) -> Result<WireDtype, SessionError> {
    match pb::WireDtype::try_from(v) {
        Ok(pb::WireDtype::F32) => Ok(WireDtype::F32),
        Ok(pb::WireDtype::F16) => Ok(WireDtype::F16),
        Err(_) => Err(protocol(format!("unknown wire dtype {v}"))),
    }
}

pub fn code_to_pb(c: ErrorCode) -> i32 {
    use pb::ErrorCode as P;
    (match c {
        ErrorCode::BadRequest => P::BadRequest,
        ErrorCode::WrongModel => P::WrongModel,
        ErrorCode::WrongBlocks => P::WrongBlocks,
        ErrorCode::KvBudget => P::KvBudget,
        ErrorCode::Busy => P::Busy,
        ErrorCode::Internal => P::Internal,
        ErrorCode::BadShape => P::BadShape,
        ErrorCode::PositionOutOfRange => P::PositionOutOfRange,
        ErrorCode::PaymentRequired => P::PaymentRequired,
        ErrorCode::Unknown => P::Unspecified,
    }) as i32
}

/// A code from the wire; numbers this version does not know read as `Unknown`.
pub fn code_from_pb(v: i32) -> ErrorCode {
    use pb::ErrorCode as P;
    match P::try_from(v) {
        Ok(P::BadRequest) => ErrorCode::BadRequest,
        Ok(P::WrongModel) => ErrorCode::WrongModel,
        Ok(P::WrongBlocks) => ErrorCode::WrongBlocks,
        Ok(P::KvBudget) => ErrorCode::KvBudget,
        Ok(P::Busy) => ErrorCode::Busy,
        Ok(P::Internal) => ErrorCode::Internal,
        Ok(P::BadShape) => ErrorCode::BadShape,
        Ok(P::PositionOutOfRange) => ErrorCode::PositionOutOfRange,
        Ok(P::PaymentRequired) => ErrorCode::PaymentRequired,
        Ok(P::Unspecified) | Err(_) => ErrorCode::Unknown,
    }
}

/// A local error message cut to at most [`MAX_ERROR_MESSAGE`] bytes on a char boundary.
pub fn clip_message(message: &str) -> String {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

/// A peer's error message, refused when longer than [`MAX_ERROR_MESSAGE`] bytes.
pub fn check_message(message: String) -> Result<String, SessionError> {
    if message.len() > MAX_ERROR_MESSAGE {
        return Err(protocol(format!(
            "error message of {} bytes exceeds {MAX_ERROR_MESSAGE}",
            message.len()
        )));
    }
    Ok(message)
}

/// The wire form of an open request; `rekey_every` is the client's proposal.
pub fn open_to_pb(open: &OpenSession, rekey_every: u64) -> pb::OpenSession {
    pb::OpenSession {
        model_id: open.model_id.to_vec(),
        block_start: open.blocks.start(),
        block_end: open.blocks.end(),
        max_positions: open.max_positions,
        dtype: dtype_to_pb(open.dtype),
        client_session_tag: open.tag,
        payment_channel: open.channel.clone(),
        rekey_every,
    }
}

/// Checks and converts an open request from a client; returns it with the client's
/// proposed rekey interval.
pub fn open_from_pb(p: pb::OpenSession) -> Result<(OpenSession, u64), SessionError> {
    let model_id: [u8; 32] = p.model_id.as_slice().try_into().map_err(|_| {
        protocol(format!(
            "OpenSession: model_id is {} bytes, expected 32",
            p.model_id.len()
        ))
    })?;
    let blocks = BlockRange::new(p.block_start, p.block_end)
        .map_err(|e| protocol(format!("OpenSession: {e}")))?;
    let dtype = dtype_from_pb(p.dtype)?;
    if let Some(c) = &p.payment_channel
        && c.len() > MAX_CHANNEL_LEN
    {
        return Err(protocol(format!(
            "OpenSession: payment channel address of {} bytes exceeds {MAX_CHANNEL_LEN}",
            c.len()
        )));
    }
    if p.rekey_every == 0 {
        return Err(protocol("OpenSession: rekey_every is 0"));
    }
    Ok((
        OpenSession {
            model_id,
            blocks,
            max_positions: p.max_positions,
            dtype,
            tag: p.client_session_tag,
            channel: p.payment_channel,
        },
        p.rekey_every,
    ))
}

pub fn terms_to_pb(t: &PaymentTerms) -> pb::PaymentTerms {
    pb::PaymentTerms {
        price_prompt_nanoton: t.price_prompt_nanoton,
        price_completion_nanoton: t.price_completion_nanoton,
        credit_window_nanoton: t.credit_window_nanoton,
    }
}

pub fn terms_from_pb(t: pb::PaymentTerms) -> PaymentTerms {
    PaymentTerms {
        price_prompt_nanoton: t.price_prompt_nanoton,
        price_completion_nanoton: t.price_completion_nanoton,
        credit_window_nanoton: t.credit_window_nanoton,
    }
}

pub fn receipt_to_pb(r: &Receipt) -> pb::Receipt {
    pb::Receipt {
        request_id: r.request_id,
        prompt_tokens: r.usage.prompt_tokens,
        completion_tokens: r.usage.completion_tokens,
        owed_nanoton: r.owed_nanoton,
        paid_nanoton: r.paid_nanoton,
    }
}

/// A worker's receipt. Only the client can judge it: it compares the charge with the
/// forward it sent.
pub fn receipt_from_pb(r: pb::Receipt) -> Receipt {
    Receipt {
        request_id: r.request_id,
        usage: Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
        },
        owed_nanoton: r.owed_nanoton,
        paid_nanoton: r.paid_nanoton,
    }
}

/// Refuses a payment state that is empty or longer than [`MAX_PAYMENT_STATE`] bytes.
pub fn check_payment_state(state_boc: &[u8]) -> Result<(), SessionError> {
    if state_boc.is_empty() || state_boc.len() > MAX_PAYMENT_STATE {
        return Err(protocol(format!(
            "payment state of {} bytes is outside 1..={MAX_PAYMENT_STATE}",
            state_boc.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields() -> impl Strategy<Value = ChunkFields> {
        let small = prop_oneof![
            Just(0u32),
            Just(1),
            Just(127),
            Just(128),
            Just(16383),
            Just(16384),
            any::<u32>()
        ];
        (
            prop_oneof![Just(0u64), Just(1), Just(300), any::<u64>()],
            small.clone(),
            small.clone(),
            any::<bool>(),
            small.clone(),
            small,
        )
            .prop_map(
                |(request_id, start_pos, n_tokens, f16, chunk_index, chunk_count)| ChunkFields {
                    request_id,
                    start_pos,
                    n_tokens,
                    dtype: if f16 { WireDtype::F16 } else { WireDtype::F32 },
                    chunk_index,
                    chunk_count,
                },
            )
    }

    proptest! {
        #[test]
        fn chunk_prefix_plus_data_is_what_prost_encodes(
            f in fields(),
            forward in any::<bool>(),
            data_len in prop_oneof![Just(0usize), Just(1), Just(127), Just(128), Just(65280), 0usize..70000],
        ) {
            let data: Vec<u8> = (0..data_len).map(|i| (i * 7) as u8).collect();
            let mut ours = Vec::new();
            put_chunk_prefix(forward, &f, data_len, &mut ours);
            ours.extend_from_slice(&data);
            let chunk = pb::TensorChunk {
                request_id: f.request_id,
                start_pos: f.start_pos,
                n_tokens: f.n_tokens,
                dtype: dtype_to_pb(f.dtype),
                chunk_index: f.chunk_index,
                chunk_count: f.chunk_count,
                data: Bytes::from(data),
            };
            let body = if forward {
                pb::envelope::Body::Forward(chunk)
            } else {
                pb::envelope::Body::Result(chunk)
            };
            let theirs = encode(body.clone());
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(decode_shared(Bytes::from(ours)).unwrap(), body);
        }
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}

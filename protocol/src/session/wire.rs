//! Conversions between the session's Rust types and the `cocoon.infer.v1` protobuf
//! messages, with the checks applied to whatever a peer sent.

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

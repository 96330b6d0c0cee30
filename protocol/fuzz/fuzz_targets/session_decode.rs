//! Fuzzes every decoder a session applies to outside bytes: the frame decoder under
//! arbitrary splits, the protobuf envelope, the tensor value decoder, the chunk
//! reassembler fed arbitrary chunk sequences, and a worker session's `on_bytes` both
//! before the handshake and after a real one. Nothing may panic; whatever decodes must
//! satisfy the decoder's own promises (frame sizes, reassembled sizes, finite values).
#![no_main]

use cocoon_protocol::proto::infer::Envelope;
use cocoon_protocol::session::{
    CipherSuite, ClientSession, FrameDecoder, MAX_NOISE_MESSAGE, OpenAccepted, OpenSession, SessionError,
    SessionLimits, WireDtype, WorkerSession,
};
use cocoon_protocol::tensor::{ChunkHeader, Reassembler, TensorLimits, decode_values};
use cocoon_protocol::units::BlockRange;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const WORKER_SECRET: [u8; 32] = [4; 32];
const CLIENT_SECRET: [u8; 32] = [2; 32];

fn frames(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    let mut d = FrameDecoder::new();
    for piece in rest.chunks(step) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => assert!(!f.is_empty() && f.len() <= MAX_NOISE_MESSAGE),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn envelope(data: &[u8]) {
    if let Ok(env) = Envelope::decode(data) {
        let again = env.encode_to_vec();
        assert_eq!(Envelope::decode(again.as_slice()).expect("re-decodes"), env);
    }
}

fn values(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let n_tokens = u32::from(data[0]);
    let d_model = u32::from(data[1]);
    let dtype = if data[2] & 1 == 0 {
        WireDtype::F32
    } else {
        WireDtype::F16
    };
    let limits = TensorLimits {
        max_tokens: 64,
        max_bytes: 1 << 16,
    };
    if let Ok(v) = decode_values(&data[3..], n_tokens, d_model, dtype, &limits) {
        assert_eq!(v.len(), (n_tokens * d_model) as usize);
        assert!(v.iter().all(|x| x.is_finite()));
    }
}

fn reassembly(data: &[u8]) {
    // Records of 6 bytes: request id, n_tokens, chunk_count, index, data length, fill.
    let mut r = Reassembler::new(512);
    for rec in data.chunks_exact(6) {
        let header = ChunkHeader {
            request_id: u64::from(rec[0] & 3),
            start_pos: 0,
            n_tokens: u32::from(rec[1] & 7),
            dtype: WireDtype::F32,
            chunk_count: u32::from(rec[2] & 7),
        };
        let chunk = vec![rec[5]; usize::from(rec[4])];
        if let Ok(Some(whole)) = r.push(header, u32::from(rec[3] & 7), &chunk) {
            assert!(!whole.is_empty() && whole.len() <= 512);
        }
    }
}

/// Either suite, chosen by the input's length, so both decoders get fuzzed.
fn suite_of(data: &[u8]) -> CipherSuite {
    CipherSuite::ALL[data.len() % CipherSuite::ALL.len()]
}

fn fresh_worker(data: &[u8]) {
    let mut w = WorkerSession::new(suite_of(data), &WORKER_SECRET, SessionLimits::default());
    let mid = data.len() / 2;
    if w.on_bytes(&data[..mid]).is_err() {
        assert_eq!(w.on_bytes(&data[mid..]).unwrap_err(), SessionError::Dead);
    } else {
        let _ = w.on_bytes(&data[mid..]);
    }
}

/// A real handshake, then the fuzz bytes as the client's next bytes (optionally after a
/// valid forward): they must fail cleanly, never panic.
fn open_worker(data: &[u8]) {
    let worker_public =
        cocoon_protocol::identity::NodeIdentity::from_secrets(&[3; 32], &WORKER_SECRET)
            .noise_public_key();
    let open = OpenSession {
        model_id: [1; 32],
        blocks: BlockRange::new(0, 4).expect("ordered"),
        max_positions: 64,
        dtype: WireDtype::F32,
        tag: 9,
        channel: None,
    };
    let limits = SessionLimits {
        rekey_every: 2,
        ..SessionLimits::default()
    };
    let suite = suite_of(data);
    let Ok((mut client, m1)) =
        ClientSession::start(suite, &CLIENT_SECRET, &worker_public, open, limits)
    else {
        return;
    };
    let mut w = WorkerSession::new(suite, &WORKER_SECRET, SessionLimits::default());
    w.on_bytes(&m1).expect("a real open request");
    let m2 = w
        .accept(OpenAccepted {
            kv_positions: 64,
            d_model: 4,
            payment: None,
        })
        .expect("accept after open");
    client.on_bytes(&m2).expect("a real reply");
    if data.first().is_some_and(|b| b & 1 == 1) {
        let fwd = client
            .forward(1, 0, &[1.0, 2.0, 3.0, 4.0])
            .expect("a valid forward");
        assert_eq!(w.on_bytes(&fwd).expect("valid bytes").len(), 1);
    }
    let _ = w.on_bytes(data);
}

fuzz_target!(|data: &[u8]| {
    frames(data);
    envelope(data);
    values(data);
    reassembly(data);
    // The session paths run X25519, which the sanitizer's comparison tracing slows to
    // tens of milliseconds a scalar multiplication (a whole handshake: most of a second):
    // only on some inputs, so the pure decoders above keep most of the fuzzing time.
    match data.first() {
        Some(0 | 1) => open_worker(data),
        Some(b) if b % 16 == 2 => fresh_worker(data),
        _ => {}
    }
});

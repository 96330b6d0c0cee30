//! Two ends of a session driven in one process: handshakes, forwards under random splits,
//! chunking, dtypes, rekeying, tampering, replays, limits, protocol violations, and what a
//! relay on the stream gets to see.

use super::frame::FrameDecoder;
use super::noise::{self, Transport};
use super::*;
use crate::identity::NodeIdentity;
use crate::proto::infer as pb;
use pb::envelope::Body;

const D: u32 = 64;
const TAG: u64 = 0x1122_3344_5566_7788;

fn client_id() -> NodeIdentity {
    NodeIdentity::from_secrets(&[1; 32], &[2; 32])
}

fn worker_id() -> NodeIdentity {
    NodeIdentity::from_secrets(&[3; 32], &[4; 32])
}

/// splitmix64: a seeded source of split points and test values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.below(2_000_001) as f32 - 1_000_000.0) / 37_000.0)
            .collect()
    }
}

fn open_req(dtype: WireDtype) -> OpenSession {
    OpenSession {
        model_id: [0xab; 32],
        blocks: crate::units::BlockRange::new(4, 12).unwrap(),
        max_positions: 2048,
        dtype,
        tag: TAG,
        channel: Some("EQD4FPq-PRDieyQKkizFTRtSDyucUIqrj0v_zXJmqaDp6_0t".into()),
    }
}

/// Feeds `bytes` to `sink` in pieces cut at random points; returns all events.
fn feed_split<E>(
    rng: &mut Rng,
    bytes: &[u8],
    mut sink: impl FnMut(&[u8]) -> Result<Vec<E>, SessionError>,
) -> Vec<E> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let take = 1 + rng.below(((bytes.len() - at) as u64).min(3000)) as usize;
        events.extend(sink(&bytes[at..at + take]).expect("valid bytes"));
        at += take;
    }
    events
}

/// Frames in a byte string, as (body length) per frame.
fn frame_lengths(bytes: &[u8]) -> Vec<usize> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        out.push(f.len());
    }
    assert_eq!(d.buffered(), 0);
    out
}

/// Everything written on the stream, each way.
#[derive(Default)]
struct Wire {
    to_worker: Vec<u8>,
    to_client: Vec<u8>,
}

/// An accepted session; `wire` holds the handshake bytes.
fn open_pair(
    suite: CipherSuite,
    dtype: WireDtype,
    client_limits: SessionLimits,
    worker_limits: SessionLimits,
    wire: &mut Wire,
) -> (ClientSession, WorkerSession) {
    let (c, w) = (client_id(), worker_id());
    let (mut client, m1) = ClientSession::start(
        suite,
        c.noise_secret(),
        &w.noise_public_key(),
        open_req(dtype),
        client_limits,
    )
    .unwrap();
    assert!(!client.is_open());
    let mut worker = WorkerSession::new(suite, w.noise_secret(), worker_limits);
    let events = worker.on_bytes(&m1).unwrap();
    assert_eq!(
        events,
        vec![WorkerEvent::Open {
            open: open_req(dtype),
            client_static_public: c.noise_public_key(),
        }]
    );
    let m2 = worker
        .accept(OpenAccepted {
            kv_positions: 1024,
            d_model: D,
            payment: None,
        })
        .unwrap();
    assert_eq!(
        client.on_bytes(&m2).unwrap(),
        vec![ClientEvent::Opened(OpenAccepted {
            kv_positions: 1024,
            d_model: D,
            payment: None,
        })]
    );
    assert!(client.is_open() && worker.is_open());
    wire.to_worker.extend_from_slice(&m1);
    wire.to_client.extend_from_slice(&m2);
    (client, worker)
}

fn default_pair(wire: &mut Wire) -> (ClientSession, WorkerSession) {
    pair_in(CipherSuite::ChaChaPoly, wire)
}

fn pair_in(suite: CipherSuite, wire: &mut Wire) -> (ClientSession, WorkerSession) {
    open_pair(
        suite,
        WireDtype::F32,
        SessionLimits::default(),
        SessionLimits::default(),
        wire,
    )
}

/// The worker's stand-in for running its blocks.
fn blocks(hidden: &[f32]) -> Vec<f32> {
    hidden.iter().map(|v| v * 0.5 + 1.0).collect()
}

/// One forward and its result through both ends, bytes cut at random points; returns
/// the result the client got.
fn round_trip(
    rng: &mut Rng,
    client: &mut ClientSession,
    worker: &mut WorkerSession,
    wire: &mut Wire,
    request_id: u64,
    start_pos: u32,
    hidden: &[f32],
) -> Vec<f32> {
    let fwd = client.forward(request_id, start_pos, hidden).unwrap();
    wire.to_worker.extend_from_slice(&fwd);
    let events = feed_split(rng, &fwd, |b| worker.on_bytes(b));
    assert_eq!(
        events,
        vec![WorkerEvent::Forward {
            request_id,
            start_pos,
            hidden: hidden.to_vec()
        }]
    );
    let res = worker
        .result(request_id, start_pos, &blocks(hidden))
        .unwrap();
    wire.to_client.extend_from_slice(&res);
    let mut events = feed_split(rng, &res, |b| client.on_bytes(b));
    assert_eq!(events.len(), 1);
    match events.pop() {
        Some(ClientEvent::Result {
            request_id: id,
            start_pos: pos,
            hidden,
        }) => {
            assert_eq!((id, pos), (request_id, start_pos));
            hidden
        }
        other => panic!("expected a result, got {other:?}"),
    }
}

#[test]
fn many_forwards_under_random_splits() {
    for suite in CipherSuite::ALL {
        let mut rng = Rng(1);
        let mut wire = Wire::default();
        let (mut client, mut worker) = pair_in(suite, &mut wire);
        let mut pos = 0;
        for id in 0..60u64 {
            let n = 1 + rng.below(6) as u32;
            let hidden = rng.values((n * D) as usize);
            let out = round_trip(
                &mut rng,
                &mut client,
                &mut worker,
                &mut wire,
                id,
                pos,
                &hidden,
            );
            assert_eq!(out, blocks(&hidden));
            pos += n;
        }
        assert_eq!(client.stats().sent, 60);
        assert_eq!(worker.stats().received, 60);
        assert_eq!(worker.stats().sent, 60);

        // Both directions close cleanly.
        let bye = client.close().unwrap();
        assert!(!client.is_open());
        assert_eq!(worker.on_bytes(&bye).unwrap(), vec![WorkerEvent::Close]);
        assert!(matches!(
            client.forward(99, 0, &[0.0; D as usize]),
            Err(SessionError::WrongState {
                call: "forward",
                ..
            })
        ));
    }
}

#[test]
fn large_tensors_are_chunked_and_round_trip_exactly() {
    for suite in CipherSuite::ALL {
        let mut rng = Rng(2);
        let mut wire = Wire::default();
        let (c, w) = (client_id(), worker_id());
        let (mut client, m1) = ClientSession::start(
            suite,
            c.noise_secret(),
            &w.noise_public_key(),
            open_req(WireDtype::F32),
            SessionLimits::default(),
        )
        .unwrap();
        let mut worker = WorkerSession::new(suite, w.noise_secret(), SessionLimits::default());
        worker.on_bytes(&m1).unwrap();
        let m2 = worker
            .accept(OpenAccepted {
                kv_positions: 4096,
                d_model: 576,
                payment: None,
            })
            .unwrap();
        client.on_bytes(&m2).unwrap();

        let hidden = rng.values(128 * 576);
        let fwd = client.forward(7, 0, &hidden).unwrap();
        // 294,912 bytes of tensor: 4 full chunks and a tail, each one Noise message.
        let lens = frame_lengths(&fwd);
        assert_eq!(lens.len(), 5);
        assert!(lens.iter().all(|&l| l <= MAX_NOISE_MESSAGE));
        assert!(lens[0] > MAX_CHUNK_DATA);
        let events = feed_split(&mut rng, &fwd, |b| worker.on_bytes(b));
        let [WorkerEvent::Forward { hidden: got, .. }] = &events[..] else {
            panic!("expected one forward, got {} events", events.len());
        };
        assert_eq!(got, &hidden);
        let res = worker.result(7, 0, &blocks(&hidden)).unwrap();
        let events = feed_split(&mut rng, &res, |b| client.on_bytes(b));
        let [ClientEvent::Result { hidden: back, .. }] = &events[..] else {
            panic!("expected one result, got {} events", events.len());
        };
        assert_eq!(back, &blocks(&hidden));
        // Exactly one tensor worth of chunk frames went each way.
        wire.to_worker.extend_from_slice(&fwd);
        assert_eq!(frame_lengths(&res).len(), 5);
    }
}

#[test]
fn f16_sessions_round_trip_within_f16_precision() {
    let mut rng = Rng(3);
    let mut wire = Wire::default();
    let (mut client, mut worker) = open_pair(
        CipherSuite::ChaChaPoly,
        WireDtype::F16,
        SessionLimits::default(),
        SessionLimits::default(),
        &mut wire,
    );
    let hidden = rng.values(8 * D as usize);
    let fwd = client.forward(1, 0, &hidden).unwrap();
    // Half the bytes of f32 (plus envelope and tag).
    assert!(fwd.len() < 8 * D as usize * 2 + 64, "{}", fwd.len());
    let events = worker.on_bytes(&fwd).unwrap();
    let [WorkerEvent::Forward { hidden: got, .. }] = &events[..] else {
        panic!("expected one forward");
    };
    let mut worst = 0f32;
    for (a, b) in hidden.iter().zip(got) {
        // f16 keeps 11 significant bits: relative error at most 2^-11.
        worst = worst.max((a - b).abs() / a.abs().max(6.1e-5));
        assert!((a - b).abs() <= a.abs() * 4.9e-4 + 6e-8, "{a} vs {b}");
    }
    assert!(worst > 0.0, "f16 must round somewhere");
    // Values f16 cannot hold are refused before anything is sent.
    let mut big = hidden.clone();
    big[5] = 1e6;
    let err = client.forward(2, 8, &big).unwrap_err().to_string();
    assert!(err.contains("does not fit in f16"), "{err}");
    assert!(client.is_open());
}

#[test]
fn wrong_worker_key_fails_the_handshake_cleanly() {
    let c = client_id();
    let stranger = NodeIdentity::from_secrets(&[9; 32], &[10; 32]);
    let (_client, m1) = ClientSession::start(
        CipherSuite::ChaChaPoly,
        c.noise_secret(),
        &stranger.noise_public_key(),
        open_req(WireDtype::F32),
        SessionLimits::default(),
    )
    .unwrap();
    let mut worker = WorkerSession::new(
        CipherSuite::ChaChaPoly,
        worker_id().noise_secret(),
        SessionLimits::default(),
    );
    let err = worker.on_bytes(&m1).unwrap_err();
    assert!(matches!(err, SessionError::Noise(NoiseError::Handshake(_))));
    assert!(err.to_string().contains("decrypt failed"), "{err}");
    assert_eq!(worker.on_bytes(&m1), Err(SessionError::Dead));
    assert_eq!(
        worker.accept(OpenAccepted {
            kv_positions: 1,
            d_model: 1,
            payment: None,
        }),
        Err(SessionError::Dead)
    );
}

#[test]
fn a_flipped_ciphertext_byte_kills_the_session_for_good() {
    let mut rng = Rng(4);
    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    let hidden = rng.values(D as usize);
    let mut fwd = client.forward(1, 0, &hidden).unwrap();
    let at = 2 + rng.below(fwd.len() as u64 - 2) as usize;
    fwd[at] ^= 0x01;
    let err = worker.on_bytes(&fwd).unwrap_err();
    assert_eq!(err.to_string(), "decrypt failed: session ended");
    let good = client.forward(2, 1, &hidden).unwrap();
    assert_eq!(worker.on_bytes(&good), Err(SessionError::Dead));
    assert_eq!(worker.on_bytes(&[]), Err(SessionError::Dead));
    assert_eq!(worker.result(1, 0, &hidden), Err(SessionError::Dead));
    assert_eq!(worker.close(), Err(SessionError::Dead));
    assert!(!worker.is_open());

    // The same on the client's side, on a reply.
    let (mut client, mut worker) = default_pair(&mut wire);
    worker
        .on_bytes(&client.forward(1, 0, &hidden).unwrap())
        .unwrap();
    let mut res = worker.result(1, 0, &hidden).unwrap();
    let last = res.len() - 1;
    res[last] ^= 0x80;
    assert_eq!(
        client.on_bytes(&res).unwrap_err().to_string(),
        "decrypt failed: session ended"
    );
    assert_eq!(client.forward(2, 1, &hidden), Err(SessionError::Dead));
    assert!(!client.is_open());
}

#[test]
fn sessions_rekey_on_the_agreed_schedule_and_keep_working() {
    let mut rng = Rng(5);
    let mut wire = Wire::default();
    let small = SessionLimits {
        rekey_every: 3,
        ..SessionLimits::default()
    };
    let (mut client, mut worker) = open_pair(
        CipherSuite::ChaChaPoly,
        WireDtype::F32,
        small,
        SessionLimits::default(),
        &mut wire,
    );
    for id in 0..20u64 {
        let hidden = rng.values(D as usize);
        let out = round_trip(
            &mut rng,
            &mut client,
            &mut worker,
            &mut wire,
            id,
            id as u32,
            &hidden,
        );
        assert_eq!(out, blocks(&hidden));
    }
    // 20 messages each way, a rekey after every third: 6 per direction, on both ends.
    let (c, w) = (client.stats(), worker.stats());
    assert_eq!((c.sent, c.rekeys_sent, c.rekeys_received), (20, 6, 6));
    assert_eq!((w.received, w.rekeys_received, w.rekeys_sent), (20, 6, 6));

    // The worker may lower the client's proposal; both ends then use its value.
    let (mut client, mut worker) = open_pair(
        CipherSuite::ChaChaPoly,
        WireDtype::F32,
        SessionLimits {
            rekey_every: 5,
            ..SessionLimits::default()
        },
        SessionLimits {
            rekey_every: 2,
            ..SessionLimits::default()
        },
        &mut wire,
    );
    for id in 0..7u64 {
        let hidden = rng.values(D as usize);
        round_trip(
            &mut rng,
            &mut client,
            &mut worker,
            &mut wire,
            id,
            id as u32,
            &hidden,
        );
    }
    assert_eq!(client.stats().rekeys_sent, 3);
    assert_eq!(worker.stats().rekeys_received, 3);
}

#[test]
fn replayed_and_reordered_frames_are_rejected() {
    let mut rng = Rng(6);
    let mut wire = Wire::default();
    let hidden = rng.values(D as usize);

    let (mut client, mut worker) = default_pair(&mut wire);
    let f1 = client.forward(1, 0, &hidden).unwrap();
    let f2 = client.forward(2, 1, &hidden).unwrap();
    assert_eq!(
        worker.on_bytes(&f2).unwrap_err().to_string(),
        "decrypt failed: session ended"
    );
    assert_eq!(worker.on_bytes(&f1), Err(SessionError::Dead));

    let (mut client, mut worker) = default_pair(&mut wire);
    let f1 = client.forward(1, 0, &hidden).unwrap();
    assert_eq!(worker.on_bytes(&f1).unwrap().len(), 1);
    assert_eq!(
        worker.on_bytes(&f1).unwrap_err().to_string(),
        "decrypt failed: session ended"
    );

    // A replayed handshake message 1 on a fresh stream opens a new session, but the
    // replayer cannot read message 2 or go on: the old forwards do not decrypt in it.
    let (c, w) = (client_id(), worker_id());
    let (_client, m1) = ClientSession::start(
        CipherSuite::ChaChaPoly,
        c.noise_secret(),
        &w.noise_public_key(),
        open_req(WireDtype::F32),
        SessionLimits::default(),
    )
    .unwrap();
    let mut worker = WorkerSession::new(
        CipherSuite::ChaChaPoly,
        w.noise_secret(),
        SessionLimits::default(),
    );
    worker.on_bytes(&m1).unwrap();
    worker
        .accept(OpenAccepted {
            kv_positions: 10,
            d_model: D,
            payment: None,
        })
        .unwrap();
    assert!(matches!(
        worker.on_bytes(&f1),
        Err(SessionError::Noise(NoiseError::DecryptFailed))
    ));
}

#[test]
fn truncated_frames_wait_for_the_rest() {
    let mut rng = Rng(7);
    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    let hidden = rng.values(3 * D as usize);
    let fwd = client.forward(1, 0, &hidden).unwrap();
    for cut in [1, 2, fwd.len() / 2, fwd.len() - 1] {
        let (mut client, mut worker) = default_pair(&mut wire);
        let fwd = client.forward(1, 0, &hidden).unwrap();
        assert_eq!(worker.on_bytes(&fwd[..cut]).unwrap(), vec![]);
        assert_eq!(worker.on_bytes(&fwd[cut..]).unwrap().len(), 1, "cut {cut}");
    }
    assert_eq!(worker.on_bytes(&fwd).unwrap().len(), 1);
}

#[test]
fn bad_lengths_and_oversize_tensors_are_rejected() {
    let mut rng = Rng(8);
    let mut wire = Wire::default();
    let (_, mut worker) = default_pair(&mut wire);
    assert_eq!(
        worker.on_bytes(&[0, 0]),
        Err(SessionError::Frame(FrameError::Empty {
            max: MAX_NOISE_MESSAGE
        }))
    );
    assert_eq!(worker.on_bytes(&[0, 1, 0]), Err(SessionError::Dead));

    // A worker that takes at most 2 tokens and 400 bytes refuses more, before reassembly.
    let strict = SessionLimits {
        max_tokens_per_forward: 2,
        max_message_bytes: 400,
        ..SessionLimits::default()
    };
    let (mut client, mut worker) = open_pair(
        CipherSuite::ChaChaPoly,
        WireDtype::F32,
        SessionLimits::default(),
        strict.clone(),
        &mut wire,
    );
    let err = worker
        .on_bytes(&client.forward(1, 0, &rng.values(3 * D as usize)).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Tensor(crate::tensor::TensorError::TooManyTokens {
            n_tokens: 3,
            limit: 2
        })
    );
    let (mut client, mut worker) = open_pair(
        CipherSuite::ChaChaPoly,
        WireDtype::F32,
        SessionLimits::default(),
        strict,
        &mut wire,
    );
    let err = worker
        .on_bytes(&client.forward(1, 0, &rng.values(2 * D as usize)).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::Tensor(crate::tensor::TensorError::TooLarge {
            bytes: 512,
            limit: 400
        })
    );
    // The client applies its own limits before sending.
    let (mut client, _) = open_pair(
        CipherSuite::ChaChaPoly,
        WireDtype::F32,
        SessionLimits {
            max_tokens_per_forward: 1,
            ..SessionLimits::default()
        },
        SessionLimits::default(),
        &mut wire,
    );
    assert!(matches!(
        client.forward(1, 0, &rng.values(2 * D as usize)),
        Err(SessionError::Tensor(
            crate::tensor::TensorError::TooManyTokens { .. }
        ))
    ));
}

#[test]
fn wrong_shapes_are_local_errors_naming_expected_and_got() {
    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    let err = client.forward(1, 0, &[0.5; 100]).unwrap_err().to_string();
    assert!(err.contains("expected a multiple of d_model = 64"), "{err}");
    assert!(err.contains("got 100 values"), "{err}");
    assert!(
        client.is_open(),
        "a local error sends nothing and keeps the session"
    );
    assert_eq!(
        client.forward(1, 1020, &[0.5; 5 * D as usize]),
        Err(SessionError::OutOfPositions {
            start_pos: 1020,
            n_tokens: 5,
            kv_positions: 1024
        })
    );
    let fwd = client.forward(1, 0, &[0.5; D as usize]).unwrap();
    worker.on_bytes(&fwd).unwrap();
    let err = worker.result(1, 0, &[0.5; 65]).unwrap_err().to_string();
    assert!(err.contains("got 65 values"), "{err}");
    let res = worker.result(1, 0, &[0.25; D as usize]).unwrap();
    assert!(matches!(
        &client.on_bytes(&res).unwrap()[..],
        [ClientEvent::Result { .. }]
    ));
}

#[test]
fn reject_error_and_close_reach_the_client() {
    let (c, w) = (client_id(), worker_id());
    let (mut client, m1) = ClientSession::start(
        CipherSuite::ChaChaPoly,
        c.noise_secret(),
        &w.noise_public_key(),
        open_req(WireDtype::F32),
        SessionLimits::default(),
    )
    .unwrap();
    assert!(matches!(
        client.forward(1, 0, &[0.0; 4]),
        Err(SessionError::WrongState {
            call: "forward",
            ..
        })
    ));
    let mut worker = WorkerSession::new(
        CipherSuite::ChaChaPoly,
        w.noise_secret(),
        SessionLimits::default(),
    );
    worker.on_bytes(&m1).unwrap();
    let m2 = worker
        .reject(ErrorCode::WrongBlocks, "I hold blocks 0..4")
        .unwrap();
    assert_eq!(
        client.on_bytes(&m2).unwrap(),
        vec![ClientEvent::Rejected {
            code: ErrorCode::WrongBlocks,
            message: "I hold blocks 0..4".into()
        }]
    );
    assert!(!client.is_open());
    assert!(client.forward(1, 0, &[0.0; 4]).is_err());
    // Exactly one reply.
    assert!(matches!(
        worker.accept(OpenAccepted {
            kv_positions: 1,
            d_model: 1,
            payment: None,
        }),
        Err(SessionError::WrongState { call: "accept", .. })
    ));

    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    let long = "é".repeat(2000);
    let e = worker.error(5, ErrorCode::KvBudget, &long).unwrap();
    let events = client.on_bytes(&e).unwrap();
    let [
        ClientEvent::Error {
            request_id: 5,
            code: ErrorCode::KvBudget,
            message,
        },
    ] = &events[..]
    else {
        panic!("expected an error event, got {events:?}");
    };
    assert_eq!(message.len(), MAX_ERROR_MESSAGE);
    assert!(client.is_open());
    let bye = worker.close().unwrap();
    assert_eq!(client.on_bytes(&bye).unwrap(), vec![ClientEvent::Closed]);
    assert!(!client.is_open());
    assert!(matches!(
        worker.result(1, 0, &[0.0; D as usize]),
        Err(SessionError::WrongState { call: "result", .. })
    ));
}

#[test]
fn a_relay_sees_neither_the_open_request_nor_the_hidden_states() {
    for suite in CipherSuite::ALL {
        let mut rng = Rng(9);
        let mut wire = Wire::default();
        let (mut client, mut worker) = pair_in(suite, &mut wire);
        let mut hiddens = Vec::new();
        for id in 0..5u64 {
            let hidden = rng.values(20 * D as usize);
            let out = round_trip(
                &mut rng,
                &mut client,
                &mut worker,
                &mut wire,
                id,
                id as u32 * 20,
                &hidden,
            );
            hiddens.push(hidden);
            hiddens.push(out);
        }
        let open_plain = wire::encode(Body::Open(wire::open_to_pb(
            &open_req(WireDtype::F32),
            4096,
        )));
        let tag_varint = {
            let mut v = Vec::new();
            prost::encoding::encode_varint(TAG, &mut v);
            v
        };
        let secrets: Vec<Vec<u8>> = vec![
            TAG.to_le_bytes().to_vec(),
            TAG.to_be_bytes().to_vec(),
            tag_varint.clone(),
            open_req(WireDtype::F32).model_id.to_vec(),
            b"EQD4FPq-PRDieyQKkizFTRtSDyucUIqrj0v".to_vec(),
            crate::tensor::encode_values(&hiddens[0], WireDtype::F32).unwrap()[128..192].to_vec(),
            crate::tensor::encode_values(&hiddens[9], WireDtype::F32).unwrap()[4000..4064].to_vec(),
        ];
        // The checks can fail: each secret is in the plaintext the session encrypts.
        assert!(contains(&open_plain, &tag_varint));
        assert!(contains(&open_plain, &secrets[3]));
        for stream in [&wire.to_worker, &wire.to_client] {
            assert!(stream.len() > 25_000, "{}", stream.len());
            for s in &secrets {
                assert!(!contains(stream, s), "{} plaintext bytes leaked", s.len());
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A client that speaks the wire directly, to send what `ClientSession` never would.
struct RawClient {
    transport: Transport,
}

impl RawClient {
    fn open(worker: &mut WorkerSession, kv_positions: u32) -> RawClient {
        let mut hs = noise::initiator(
            CipherSuite::ChaChaPoly,
            client_id().noise_secret(),
            &worker_id().noise_public_key(),
        )
        .unwrap();
        let open = wire::encode(Body::Open(wire::open_to_pb(&open_req(WireDtype::F32), 16)));
        let m1 = noise::write_handshake(&mut hs, &open).unwrap();
        worker
            .on_bytes(&noise::frame_handshake(&m1).unwrap())
            .unwrap();
        let m2 = worker
            .accept(OpenAccepted {
                kv_positions,
                d_model: D,
                payment: None,
            })
            .unwrap();
        let payload = noise::read_handshake(&mut hs, &m2[2..]).unwrap();
        let Body::OpenReply(reply) = wire::decode(&payload).unwrap() else {
            panic!("expected a reply");
        };
        assert_eq!(reply.rekey_every, 16);
        RawClient {
            transport: Transport::new(hs, 16).unwrap(),
        }
    }

    fn send(&mut self, body: Body) -> Vec<u8> {
        self.transport.seal_frame(&wire::encode(body)).unwrap()
    }
}

fn worker() -> WorkerSession {
    WorkerSession::new(
        CipherSuite::ChaChaPoly,
        worker_id().noise_secret(),
        SessionLimits::default(),
    )
}

fn chunk(n_tokens: u32, index: u32, count: u32, data: Vec<u8>) -> pb::TensorChunk {
    pb::TensorChunk {
        request_id: 1,
        start_pos: 0,
        n_tokens,
        dtype: wire::dtype_to_pb(WireDtype::F32),
        chunk_index: index,
        chunk_count: count,
        data: data.into(),
    }
}

#[test]
fn protocol_violations_from_a_client_are_fatal_errors() {
    let row = crate::tensor::encode_values(&[0.5; D as usize], WireDtype::F32).unwrap();

    // A second Open.
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let again = raw.send(Body::Open(wire::open_to_pb(&open_req(WireDtype::F32), 16)));
    let err = w.on_bytes(&again).unwrap_err().to_string();
    assert!(err.contains("a client may not send OpenSession"), "{err}");
    assert_eq!(w.on_bytes(&[]), Err(SessionError::Dead));

    // A tensor whose bytes do not match its shape.
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let f = raw.send(Body::Forward(chunk(2, 0, 1, row.clone())));
    let err = w.on_bytes(&f).unwrap_err().to_string();
    assert!(err.contains("expected 2 × 64 F32 = 512 bytes"), "{err}");
    assert!(err.contains("got 256 bytes"), "{err}");

    // A gap in the chunks.
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let mut bytes = raw.send(Body::Forward(chunk(1, 0, 3, row[..100].to_vec())));
    bytes.extend(raw.send(Body::Forward(chunk(1, 2, 3, row[100..].to_vec()))));
    let err = w.on_bytes(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("chunk 2 leaves a gap: chunk 1 was expected"),
        "{err}"
    );

    // A Close in the middle of a chunked tensor.
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let mut bytes = raw.send(Body::Forward(chunk(1, 0, 2, row[..100].to_vec())));
    bytes.extend(raw.send(Body::Close(pb::Close {})));
    let err = w.on_bytes(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("Close arrived in the middle of a chunked Forward"),
        "{err}"
    );

    // A worker-only message, the wrong dtype, positions beyond the grant.
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let r = raw.send(Body::Result(chunk(1, 0, 1, row.clone())));
    assert!(
        w.on_bytes(&r)
            .unwrap_err()
            .to_string()
            .contains("may not send Result")
    );
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let mut c = chunk(1, 0, 1, row[..128].to_vec());
    c.dtype = wire::dtype_to_pb(WireDtype::F16);
    let err = w
        .on_bytes(&raw.send(Body::Forward(c)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("session's dtype is F32"), "{err}");
    let mut w = worker();
    let mut raw = RawClient::open(&mut w, 100);
    let mut c = chunk(1, 0, 1, row.clone());
    c.start_pos = 100;
    assert_eq!(
        w.on_bytes(&raw.send(Body::Forward(c))),
        Err(SessionError::OutOfPositions {
            start_pos: 100,
            n_tokens: 1,
            kv_positions: 100
        })
    );

    // Anything before accept.
    let mut w = worker();
    let mut hs = noise::initiator(
        CipherSuite::ChaChaPoly,
        client_id().noise_secret(),
        &worker_id().noise_public_key(),
    )
    .unwrap();
    let open = wire::encode(Body::Open(wire::open_to_pb(&open_req(WireDtype::F32), 16)));
    let mut bytes =
        noise::frame_handshake(&noise::write_handshake(&mut hs, &open).unwrap()).unwrap();
    bytes.extend_from_slice(&[0, 3, 1, 2, 3]);
    let err = w.on_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("before the session was accepted"), "{err}");

    // An open request that is not an OpenSession, or a malformed one.
    let mut w = worker();
    let mut hs = noise::initiator(
        CipherSuite::ChaChaPoly,
        client_id().noise_secret(),
        &worker_id().noise_public_key(),
    )
    .unwrap();
    let mut bad = wire::open_to_pb(&open_req(WireDtype::F32), 16);
    bad.model_id.truncate(31);
    let m1 = noise::write_handshake(&mut hs, &wire::encode(Body::Open(bad))).unwrap();
    let err = w
        .on_bytes(&noise::frame_handshake(&m1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_id is 31 bytes, expected 32"), "{err}");
}

#[test]
fn a_full_chunk_fits_one_noise_message() {
    let c = chunk(u32::MAX, u32::MAX, u32::MAX, vec![0xff; MAX_CHUNK_DATA]);
    let mut c = c;
    c.request_id = u64::MAX;
    c.start_pos = u32::MAX;
    c.dtype = wire::dtype_to_pb(WireDtype::F16);
    let plain = wire::encode(Body::Result(c));
    assert!(
        plain.len() <= Transport::MAX_PLAINTEXT,
        "{} > {}",
        plain.len(),
        Transport::MAX_PLAINTEXT
    );
}

#[test]
fn paid_session_carries_terms_receipts_and_payments() {
    let (c, w) = (client_id(), worker_id());
    let (mut client, m1) = ClientSession::start(
        CipherSuite::ChaChaPoly,
        c.noise_secret(),
        &w.noise_public_key(),
        open_req(WireDtype::F32),
        SessionLimits::default(),
    )
    .unwrap();
    let mut worker = WorkerSession::new(
        CipherSuite::ChaChaPoly,
        w.noise_secret(),
        SessionLimits::default(),
    );
    worker.on_bytes(&m1).unwrap();
    let terms = PaymentTerms {
        price_prompt_nanoton: 1_000,
        price_completion_nanoton: 2_000,
        credit_window_nanoton: 5_000_000,
    };
    let accepted = OpenAccepted {
        kv_positions: 64,
        d_model: D,
        payment: Some(terms),
    };
    let m2 = worker.accept(accepted.clone()).unwrap();
    assert_eq!(
        client.on_bytes(&m2).unwrap(),
        vec![ClientEvent::Opened(accepted)]
    );

    let mut rng = Rng(5);
    let hidden = rng.values(3 * D as usize);
    let fwd = client.forward(1, 0, &hidden).unwrap();
    assert!(matches!(
        &worker.on_bytes(&fwd).unwrap()[..],
        [WorkerEvent::Forward { request_id: 1, .. }]
    ));
    let receipt = Receipt {
        request_id: 1,
        usage: crate::channel::metering::forward_usage(3),
        owed_nanoton: 3_000,
        paid_nanoton: 0,
    };
    let mut out = worker.receipt(&receipt).unwrap();
    out.extend(worker.result(1, 0, &hidden).unwrap());
    let events = client.on_bytes(&out).unwrap();
    assert_eq!(events[0], ClientEvent::Receipt(receipt));
    assert!(matches!(
        events[1],
        ClientEvent::Result { request_id: 1, .. }
    ));

    let state = vec![0xb5; 300];
    let pay = client.payment(&state).unwrap();
    assert_eq!(
        worker.on_bytes(&pay).unwrap(),
        vec![WorkerEvent::Payment { state_boc: state }]
    );
    // Oversized or empty states are refused locally and nothing is sent.
    assert!(client.payment(&vec![0; MAX_PAYMENT_STATE + 1]).is_err());
    assert!(client.payment(&[]).is_err());
    assert!(client.is_open());
}

/// Seals a whole tensor through `frames`, one frame per call; returns the frames.
fn drain_frames(mut frames: TensorFrames<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut frame = Vec::new();
        if !frames.next_frame_into(&mut frame).unwrap() {
            assert!(frame.is_empty(), "nothing appended after the last frame");
            return out;
        }
        assert_eq!(frame_lengths(&frame).len(), 1, "one frame per call");
        out.push(frame);
    }
}

#[test]
fn tensors_sealed_frame_by_frame_arrive_whole_both_ways() {
    let mut rng = Rng(41);
    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    // 700 tokens × 64 f32 = 179200 bytes: three chunks, the last one short.
    let hidden = rng.values(700 * D as usize);
    let frames = client.forward_frames(5, 3, &hidden).unwrap();
    assert_eq!(frames.frame_count(), 3);
    let frames = drain_frames(frames);
    assert_eq!(frames.len(), 3);
    let mut events = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        events.extend(worker.on_bytes(f).unwrap());
        // The worker has the tensor only once the last frame is in.
        assert_eq!(events.is_empty(), i < 2, "after frame {i}");
    }
    assert_eq!(
        events,
        vec![WorkerEvent::Forward {
            request_id: 5,
            start_pos: 3,
            hidden: hidden.clone()
        }]
    );
    let out = blocks(&hidden);
    let frames = drain_frames(worker.result_frames(5, 3, &out).unwrap());
    // Same frame sizes as the all-at-once call produces.
    let whole = worker.result(6, 3, &out).unwrap();
    assert_eq!(
        frames.iter().map(|f| f.len()).collect::<Vec<_>>(),
        frame_lengths(&whole)
            .iter()
            .map(|l| l + 2)
            .collect::<Vec<_>>()
    );
    let events = client.on_bytes(&frames.concat()).unwrap();
    assert_eq!(
        events,
        vec![ClientEvent::Result {
            request_id: 5,
            start_pos: 3,
            hidden: out.clone()
        }]
    );
    // And the session goes on with the all-at-once form.
    assert_eq!(
        client.on_bytes(&whole).unwrap(),
        vec![ClientEvent::Result {
            request_id: 6,
            start_pos: 3,
            hidden: out
        }]
    );
}

#[test]
fn a_bad_value_anywhere_stops_a_framed_tensor_before_its_first_frame() {
    let mut rng = Rng(42);
    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    let mut hidden = rng.values(700 * D as usize);
    // In the last chunk: a check done chunk by chunk would have sent two frames first.
    hidden[700 * D as usize - 1] = f32::NAN;
    let err = client.forward_frames(1, 0, &hidden).unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Tensor(crate::tensor::TensorError::NonFinite { index, value })
                if index == 700 * D as usize - 1 && value.is_nan()
        ),
        "{err}"
    );
    assert!(err.to_string().contains("is not finite"), "{err}");
    assert!(client.is_open());
    assert_eq!(client.stats().sent, 0);
    // A tensor set up and dropped before its first frame costs nothing either.
    drop(client.forward_frames(1, 0, &hidden[..D as usize]).unwrap());
    assert!(client.is_open());
    let fwd = client.forward(1, 0, &hidden[..D as usize]).unwrap();
    assert_eq!(worker.on_bytes(&fwd).unwrap().len(), 1);
}

#[test]
fn a_framed_tensor_dropped_halfway_ends_the_session() {
    let mut rng = Rng(43);
    let mut wire = Wire::default();
    let (mut client, _worker) = default_pair(&mut wire);
    let hidden = rng.values(700 * D as usize);
    let mut frames = client.forward_frames(1, 0, &hidden).unwrap();
    let mut first = Vec::new();
    assert!(frames.next_frame_into(&mut first).unwrap());
    drop(frames);
    assert!(!client.is_open());
    assert_eq!(client.forward(2, 0, &hidden), Err(SessionError::Dead));
    assert_eq!(client.close(), Err(SessionError::Dead));
}

#[test]
fn forward_into_appends_to_what_the_buffer_holds() {
    let mut rng = Rng(44);
    let mut wire = Wire::default();
    let (mut client, mut worker) = default_pair(&mut wire);
    let a = rng.values(3 * D as usize);
    let b = rng.values(300 * D as usize);
    let mut buf = b"keep".to_vec();
    client.forward_into(1, 0, &a, &mut buf).unwrap();
    client.forward_into(2, 3, &b, &mut buf).unwrap();
    // An error appends nothing.
    assert!(client.forward_into(3, 0, &[0.5; 3], &mut buf).is_err());
    assert_eq!(&buf[..4], b"keep");
    let events = worker.on_bytes(&buf[4..]).unwrap();
    assert_eq!(
        events,
        vec![
            WorkerEvent::Forward {
                request_id: 1,
                start_pos: 0,
                hidden: a
            },
            WorkerEvent::Forward {
                request_id: 2,
                start_pos: 3,
                hidden: b
            },
        ]
    );
}

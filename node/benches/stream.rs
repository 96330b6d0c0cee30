//! Stream benchmark: hidden states echoed over a real libp2p stream on loopback (TCP +
//! libp2p's Noise + Yamux), once inside an end-to-end Noise session
//! (`cocoon_protocol::session`) and once in plaintext with the same encoding, chunking
//! and 2-byte framing. Prints MB/s (bytes of tensor carried each way per second) and the
//! ratio. Run: `cargo bench -p cocoon-node --bench stream`.

use std::time::{Duration, Instant};

use cocoon_protocol::session::{
    ClientEvent, ClientSession, MAX_CHUNK_DATA, OpenAccepted, OpenSession, SessionLimits,
    WireDtype, WorkerEvent, WorkerSession, encode_frame,
};
use cocoon_protocol::tensor::{TensorLimits, decode_values, encode_values, split_chunks};
use cocoon_protocol::units::BlockRange;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, noise, tcp, yamux};

const PROTO: StreamProtocol = StreamProtocol::new("/cocoon/bench-stream/1");
const D_MODEL: usize = 576;
const PLAIN: u8 = 0;
const SEALED: u8 = 1;
/// Sealed, each frame written as soon as it is sealed (`forward_frames`/`result_frames`).
const SEALED_FRAMED: u8 = 2;
const WORKER_SECRET: [u8; 32] = [7; 32];
const CLIENT_SECRET: [u8; 32] = [9; 32];

fn swarm() -> Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn limits() -> TensorLimits {
    TensorLimits {
        max_tokens: 4096,
        max_bytes: 64 << 20,
    }
}

/// Plaintext: a frame with the byte length, then the chunks, each framed.
fn plain_frames(values: &[f32]) -> Vec<u8> {
    let bytes = encode_values(values, WireDtype::F32).expect("finite");
    let mut out = encode_frame(&(bytes.len() as u64).to_le_bytes()).expect("frame");
    for chunk in split_chunks(&bytes, MAX_CHUNK_DATA) {
        out.extend(encode_frame(chunk).expect("frame"));
    }
    out
}

/// Reads one plaintext tensor back; `None` at the end of the stream.
async fn read_plain(stream: &mut libp2p::Stream, buf: &mut Vec<u8>) -> Option<Vec<f32>> {
    async fn frame(stream: &mut libp2p::Stream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        buf.resize(u16::from_be_bytes(len) as usize, 0);
        stream.read_exact(buf).await.ok()?;
        Some(buf.clone())
    }
    let header = frame(stream, buf).await?;
    let total = u64::from_le_bytes(header.try_into().ok()?) as usize;
    let mut bytes = Vec::with_capacity(total);
    while bytes.len() < total {
        bytes.extend(frame(stream, buf).await?);
    }
    let n = (total / 4 / D_MODEL) as u32;
    Some(decode_values(&bytes, n, D_MODEL as u32, WireDtype::F32, &limits()).expect("tensor"))
}

/// The far end: echoes every tensor, in plaintext or through a worker session.
async fn serve(mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((_, mut stream)) = incoming.next().await {
        tokio::spawn(async move {
            let mut mode = [0u8];
            stream.read_exact(&mut mode).await.expect("mode");
            let mut buf = Vec::new();
            if mode[0] == PLAIN {
                while let Some(values) = read_plain(&mut stream, &mut buf).await {
                    stream
                        .write_all(&plain_frames(&values))
                        .await
                        .expect("echo");
                    stream.flush().await.expect("flush");
                }
                return;
            }
            let framed = mode[0] == SEALED_FRAMED;
            let mut session = WorkerSession::new(&WORKER_SECRET, SessionLimits::default());
            let mut read = vec![0u8; 64 * 1024];
            let mut out = Vec::new();
            loop {
                let n = stream.read(&mut read).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                for event in session.on_bytes(&read[..n]).expect("session") {
                    out.clear();
                    match event {
                        WorkerEvent::Open { .. } => {
                            out = session
                                .accept(OpenAccepted {
                                    kv_positions: 1 << 20,
                                    d_model: D_MODEL as u32,
                                    payment: None,
                                })
                                .expect("accept")
                        }
                        WorkerEvent::Forward {
                            request_id,
                            start_pos,
                            hidden,
                        } if framed => {
                            let mut frames = session
                                .result_frames(request_id, start_pos, &hidden)
                                .expect("result");
                            while frames.next_frame_into(&mut out).expect("seal") {
                                stream.write_all(&out).await.expect("write");
                                out.clear();
                            }
                        }
                        WorkerEvent::Forward {
                            request_id,
                            start_pos,
                            hidden,
                        } => session
                            .result_into(request_id, start_pos, &hidden, &mut out)
                            .expect("result"),
                        WorkerEvent::Payment { .. } => panic!("no payments in this bench"),
                        WorkerEvent::Close => return,
                    };
                    stream.write_all(&out).await.expect("write");
                    stream.flush().await.expect("flush");
                }
            }
        });
    }
}

async fn read_events(
    stream: &mut libp2p::Stream,
    session: &mut ClientSession,
    buf: &mut [u8],
) -> Vec<ClientEvent> {
    loop {
        let n = stream.read(buf).await.expect("read");
        assert!(n > 0, "closed");
        let events = session.on_bytes(&buf[..n]).expect("session");
        if !events.is_empty() {
            return events;
        }
    }
}

/// Echoes `rounds` tensors of `rows` rows; returns MB/s of tensor bytes each way.
async fn run(
    control: &mut libp2p_stream::Control,
    peer: libp2p::PeerId,
    mode: u8,
    rows: usize,
    rounds: usize,
) -> f64 {
    let values: Vec<f32> = (0..rows * D_MODEL)
        .map(|i| (i % 251) as f32 / 7.0)
        .collect();
    let mut stream = control.open_stream(peer, PROTO).await.expect("stream");
    stream.write_all(&[mode]).await.expect("mode");
    let mut buf = vec![0u8; 64 * 1024];
    let mut session = None;
    if mode != PLAIN {
        let worker_public =
            curve25519_dalek::MontgomeryPoint::mul_base_clamped(WORKER_SECRET).to_bytes();
        let open = OpenSession {
            model_id: [0; 32],
            blocks: BlockRange::new(0, 1).expect("range"),
            max_positions: 1 << 20,
            dtype: WireDtype::F32,
            tag: 1,
            channel: None,
        };
        let (mut s, hello) = ClientSession::start(
            &CLIENT_SECRET,
            &worker_public,
            open,
            SessionLimits::default(),
        )
        .expect("start");
        stream.write_all(&hello).await.expect("hello");
        stream.flush().await.expect("flush");
        let events = read_events(&mut stream, &mut s, &mut buf).await;
        assert!(matches!(events[0], ClientEvent::Opened(_)));
        session = Some(s);
    }
    let mut out = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        match &mut session {
            None => {
                stream
                    .write_all(&plain_frames(&values))
                    .await
                    .expect("send");
                stream.flush().await.expect("flush");
                let back = read_plain(&mut stream, &mut buf).await.expect("echo");
                assert_eq!(back.len(), values.len());
            }
            Some(s) => {
                let pos = (round * rows) as u32;
                out.clear();
                if mode == SEALED_FRAMED {
                    let mut frames = s
                        .forward_frames(round as u64, pos, &values)
                        .expect("forward");
                    while frames.next_frame_into(&mut out).expect("seal") {
                        stream.write_all(&out).await.expect("send");
                        out.clear();
                    }
                } else {
                    s.forward_into(round as u64, pos, &values, &mut out)
                        .expect("forward");
                    stream.write_all(&out).await.expect("send");
                }
                stream.flush().await.expect("flush");
                let events = read_events(&mut stream, s, &mut buf).await;
                assert!(
                    matches!(&events[0], ClientEvent::Result { hidden, .. } if hidden.len() == values.len())
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (rounds * rows * D_MODEL * 4) as f64 / secs / 1e6
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut a = swarm();
    let mut b = swarm();
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    let peer = *b.local_peer_id();
    let incoming = b.behaviour().new_control().accept(PROTO).expect("accept");
    let mut control = a.behaviour().new_control();
    a.dial(addr).expect("dial");
    tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    while !matches!(
        a.select_next_some().await,
        SwarmEvent::ConnectionEstablished { .. }
    ) {}
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });
    tokio::spawn(serve(incoming));
    println!("stream benchmark: hidden states echoed over libp2p (TCP + Noise + Yamux, loopback)");
    println!(
        "{:<22} {:>12} {:>14} {:>8} {:>16} {:>8}",
        "tensor", "plain MB/s", "e2e Noise MB/s", "ratio", "e2e framed MB/s", "ratio"
    );
    for rows in [1usize, 128] {
        let rounds = match (quick, rows) {
            (true, _) => 20,
            (false, 1) => 4000,
            (false, _) => 200,
        };
        // Warm every path, then alternate and keep the best of three.
        let (mut plain, mut sealed, mut framed) = (0f64, 0f64, 0f64);
        for _ in 0..3 {
            plain = plain.max(run(&mut control, peer, PLAIN, rows, rounds).await);
            sealed = sealed.max(run(&mut control, peer, SEALED, rows, rounds).await);
            framed = framed.max(run(&mut control, peer, SEALED_FRAMED, rows, rounds).await);
        }
        println!(
            "{:<22} {:>12.1} {:>14.1} {:>8.2} {:>16.1} {:>8.2}",
            format!("{rows} × {D_MODEL} f32"),
            plain,
            sealed,
            sealed / plain,
            framed,
            framed / plain
        );
    }
}

//! Stream benchmark: hidden states echoed over a real libp2p stream on loopback (TCP +
//! libp2p's Noise + Yamux), once inside an end-to-end Noise session
//! (`cocoon_protocol::session`) and once in plaintext through the same non-crypto steps:
//! the same chunking and 2-byte framing, each frame written as soon as it is made (as
//! the node's drivers write), the same `FrameDecoder`, `Reassembler` and value checks,
//! buffers reused alike at both ends. Run:
//! `cargo bench -p cocoon-node --bench stream` (`STREAM_BENCH_SETS=n` sets the number of
//! measured sets, default 11). Sessions run in each cipher suite: ChaChaPoly, which every
//! node accepts, and AES-GCM, which nodes with AES hardware offer and use together.
//!
//! The machine may be shared, so a single best-of figure would mostly measure the other
//! processes. Each set runs the three modes (plain, then a session in each suite) back to
//! back over the same bytes, the first one rotating from set to set; the table gives the
//! median over sets of each set's ratio (e2e Noise ÷ plain) with its range, for wall-clock throughput and for CPU time:
//! the process's own user + system seconds per MB (`getrusage`), both ends being in this
//! one process. Load from elsewhere slows the wall clock far more than CPU seconds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cocoon_protocol::session::frame::encode_frame_into;
use cocoon_protocol::session::{
    CipherSuite, ClientEvent, ClientSession, FrameDecoder, MAX_CHUNK_DATA, OpenAccepted,
    OpenSession, SessionLimits, WireDtype, WorkerEvent, WorkerSession,
};
use cocoon_protocol::tensor::{
    ChunkHeader, Reassembler, TensorLimits, check_values, decode_values, encoded_len, write_values,
};
use cocoon_protocol::units::BlockRange;
use common::median;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, noise, tcp, yamux};

const PROTO: StreamProtocol = StreamProtocol::new("/cocoon/bench-stream/1");
const D_MODEL: usize = 576;
const WORKER_SECRET: [u8; 32] = [7; 32];
const CLIENT_SECRET: [u8; 32] = [9; 32];
/// Bytes of one read from the stream, as the node's drivers read.
const READ_BUF: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plaintext, the same steps but the crypto.
    Plain,
    /// A session in this suite, each frame written as soon as it is sealed
    /// (`forward_frames` / `result_frames`, as the node's drivers do).
    Noise(CipherSuite),
}

const MODES: [Mode; 3] = [
    Mode::Plain,
    Mode::Noise(CipherSuite::ChaChaPoly),
    Mode::Noise(CipherSuite::AesGcm),
];

impl Mode {
    /// The byte that tells the far end the mode.
    fn byte(self) -> u8 {
        MODES.iter().position(|&m| m == self).expect("listed") as u8
    }
}

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

/// Writes one tensor in plaintext: a frame with the byte length, then the values in
/// chunks of at most `MAX_CHUNK_DATA` bytes, each framed in `out` (a reused buffer) and
/// written as soon as it is made, after the same check a session makes.
async fn write_plain(stream: &mut libp2p::Stream, values: &[f32], out: &mut Vec<u8>) {
    check_values(values, WireDtype::F32).expect("finite");
    let total = encoded_len(values.len(), WireDtype::F32);
    out.clear();
    encode_frame_into(&(total as u64).to_le_bytes(), out).expect("frame");
    for chunk in values.chunks(MAX_CHUNK_DATA / 4) {
        let len = encoded_len(chunk.len(), WireDtype::F32);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        let at = out.len();
        out.resize(at + len, 0);
        write_values(chunk, WireDtype::F32, &mut out[at..]);
        stream.write_all(out).await.expect("write");
        out.clear();
    }
    stream.flush().await.expect("flush");
}

/// The plaintext reader: a session's receiving steps without the crypto. Frames come out
/// of a `FrameDecoder`, chunks go through a `Reassembler`, the whole tensor through
/// `decode_values` (which checks every value).
struct PlainReader {
    frames: FrameDecoder,
    reassembler: Reassembler,
    /// Bytes of the tensor in progress and chunks received of it.
    tensor: Option<(usize, u32)>,
}

impl PlainReader {
    fn new() -> Self {
        PlainReader {
            frames: FrameDecoder::new(),
            reassembler: Reassembler::new(64 << 20),
            tensor: None,
        }
    }

    /// Bytes read from the stream in; whole tensors out.
    fn on_bytes(&mut self, bytes: &[u8]) -> Vec<Vec<f32>> {
        self.frames.push(bytes);
        let mut done = Vec::new();
        while let Some(frame) = self.frames.next_frame_slice().expect("frame") {
            let Some((total, index)) = self.tensor else {
                let total = u64::from_le_bytes(frame.try_into().expect("length")) as usize;
                self.tensor = Some((total, 0));
                continue;
            };
            let rows = total / 4 / D_MODEL;
            let header = ChunkHeader {
                request_id: 0,
                start_pos: 0,
                n_tokens: rows as u32,
                dtype: WireDtype::F32,
                chunk_count: total.div_ceil(MAX_CHUNK_DATA) as u32,
            };
            self.tensor = Some((total, index + 1));
            if let Some(bytes) = self.reassembler.push(header, index, frame).expect("chunk") {
                let values = decode_values(
                    bytes,
                    rows as u32,
                    D_MODEL as u32,
                    WireDtype::F32,
                    &limits(),
                )
                .expect("tensor");
                done.push(values);
                self.tensor = None;
            }
        }
        done
    }
}

/// The far end: echoes every tensor, in plaintext or through a worker session.
async fn serve(mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((_, mut stream)) = incoming.next().await {
        tokio::spawn(async move {
            let mut mode = [0u8];
            stream.read_exact(&mut mode).await.expect("mode");
            let mut read = vec![0u8; READ_BUF];
            let mut out = Vec::new();
            let Mode::Noise(suite) = MODES[mode[0] as usize] else {
                let mut reader = PlainReader::new();
                loop {
                    let n = stream.read(&mut read).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    for values in reader.on_bytes(&read[..n]) {
                        write_plain(&mut stream, &values, &mut out).await;
                    }
                }
            };
            let mut session = WorkerSession::new(suite, &WORKER_SECRET, SessionLimits::default());
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
                                .expect("accept");
                            stream.write_all(&out).await.expect("write");
                        }
                        WorkerEvent::Forward {
                            request_id,
                            start_pos,
                            hidden,
                        } => {
                            let mut frames = session
                                .result_frames(request_id, start_pos, &hidden)
                                .expect("result");
                            while frames.next_frame_into(&mut out).expect("seal") {
                                stream.write_all(&out).await.expect("write");
                                out.clear();
                            }
                        }
                        WorkerEvent::Payment { .. } => panic!("no payments in this bench"),
                        WorkerEvent::Close => return,
                    };
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

async fn read_plain(
    stream: &mut libp2p::Stream,
    reader: &mut PlainReader,
    buf: &mut [u8],
) -> Vec<Vec<f32>> {
    loop {
        let n = stream.read(buf).await.expect("read");
        assert!(n > 0, "closed");
        let tensors = reader.on_bytes(&buf[..n]);
        if !tensors.is_empty() {
            return tensors;
        }
    }
}

/// Process CPU time so far (user + system, every thread), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0, "getrusage");
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// One run's figures: tensor bytes carried each way, wall and process CPU seconds.
#[derive(Clone, Copy, Debug)]
struct Run {
    mb: f64,
    wall: f64,
    cpu: f64,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.mb / self.wall
    }

    fn cpu_per_mb(&self) -> f64 {
        self.cpu / self.mb
    }
}

/// Echoes `rounds` tensors of `rows` rows on a fresh stream.
async fn run(
    control: &mut libp2p_stream::Control,
    peer: libp2p::PeerId,
    mode: Mode,
    rows: usize,
    rounds: usize,
) -> Run {
    let values: Vec<f32> = (0..rows * D_MODEL)
        .map(|i| (i % 251) as f32 / 7.0)
        .collect();
    let mut stream = control.open_stream(peer, PROTO).await.expect("stream");
    stream.write_all(&[mode.byte()]).await.expect("mode");
    let mut buf = vec![0u8; READ_BUF];
    let mut session = None;
    if let Mode::Noise(suite) = mode {
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
            suite,
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
    let mut reader = PlainReader::new();
    let mut out = Vec::new();
    let cpu = cpu_seconds();
    let started = Instant::now();
    for round in 0..rounds {
        match &mut session {
            None => {
                write_plain(&mut stream, &values, &mut out).await;
                let back = read_plain(&mut stream, &mut reader, &mut buf).await;
                assert_eq!(back[0].len(), values.len());
            }
            Some(s) => {
                let pos = (round * rows) as u32;
                let mut frames = s
                    .forward_frames(round as u64, pos, &values)
                    .expect("forward");
                out.clear();
                while frames.next_frame_into(&mut out).expect("seal") {
                    stream.write_all(&out).await.expect("send");
                    out.clear();
                }
                drop(frames);
                stream.flush().await.expect("flush");
                let events = read_events(&mut stream, s, &mut buf).await;
                assert!(
                    matches!(&events[0], ClientEvent::Result { hidden, .. } if hidden.len() == values.len())
                );
            }
        }
    }
    let run = Run {
        mb: (rounds * rows * D_MODEL * 4) as f64 / 1e6,
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    };
    stream.close().await.expect("close");
    run
}

/// "median (min–max)" of `v`.
fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2} ({:.2}–{:.2})", median(v.to_vec()), min, max)
}

/// CPU seconds per GB of tensor that an e2e cipher alone costs a round trip: each byte
/// sealed and opened once each way by a bare snow transport of Noise suite `params`
/// (over ring, as the sessions and libp2p's own Noise are) in pieces of one chunk, with
/// nothing else around; the median of several measurements. In a session of that suite no
/// e2e Noise path can add less than this to plain's CPU time, so plain ÷ (plain + this)
/// bounds the CPU ratio.
fn cipher_floor(params: &str, rows: usize) -> f64 {
    let builder = || snow::Builder::new(params.parse().expect("noise params"));
    let worker = builder().generate_keypair().expect("keys");
    let mut i = builder()
        .local_private_key(&CLIENT_SECRET)
        .and_then(|b| b.remote_public_key(&worker.public))
        .and_then(|b| b.build_initiator())
        .expect("initiator");
    let mut r = builder()
        .local_private_key(&worker.private)
        .and_then(|b| b.build_responder())
        .expect("responder");
    let (mut wire, mut opened) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let n = i.write_message(&[], &mut wire).expect("m1");
    r.read_message(&wire[..n], &mut opened).expect("m1 reads");
    let n = r.write_message(&[], &mut wire).expect("m2");
    i.read_message(&wire[..n], &mut opened).expect("m2 reads");
    let mut tx = i.into_transport_mode().expect("transport");
    let mut rx = r.into_transport_mode().expect("transport");
    let payload = vec![0x5au8; rows * D_MODEL * 4];
    let rounds = (64 << 20) / payload.len();
    let mut floors: Vec<f64> = (0..7)
        .map(|_| {
            let cpu = cpu_seconds();
            for _ in 0..rounds {
                for piece in payload.chunks(MAX_CHUNK_DATA) {
                    let n = tx.write_message(piece, &mut wire).expect("seals");
                    rx.read_message(&wire[..n], &mut opened).expect("opens");
                }
            }
            // Both ways: twice the seal and open of every byte.
            2.0 * (cpu_seconds() - cpu) / (rounds * payload.len()) as f64 * 1e9
        })
        .collect();
    floors.sort_by(f64::total_cmp);
    floors[floors.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sets: usize = std::env::var("STREAM_BENCH_SETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 11 });
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
        "{sets} sets per tensor, each a plain run and an e2e Noise run in each suite back to \
         back (rotating which goes first); load average at start: {}",
        load_average()
    );
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>20} | {:>8} {:>8} {:>20}",
        "tensor, suite", "MB", "plain", "noise", "ratio", "plain", "noise", "CPU ratio"
    );
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>20} | {:>8} {:>8} {:>20}",
        "", "a run", "MB/s", "MB/s", "median (min–max)", "CPU s/GB", "CPU s/GB", "median (min–max)"
    );
    let mut plain_cpus = Vec::new();
    for rows in [1usize, 128] {
        // Enough bytes that a run lasts well over a scheduler's time slice.
        let rounds = match (quick, rows) {
            (true, _) => 20,
            (false, 1) => 4000,
            (false, _) => 400,
        };
        for mode in MODES {
            run(&mut control, peer, mode, rows, rounds / 4).await;
        }
        // One run per mode per set, in MODES order.
        let mut sets_runs: Vec<Vec<Run>> = Vec::new();
        for set in 0..sets {
            let mut runs: Vec<Option<Run>> = vec![None; MODES.len()];
            for k in 0..MODES.len() {
                let m = (set + k) % MODES.len();
                runs[m] = Some(run(&mut control, peer, MODES[m], rows, rounds).await);
            }
            sets_runs.push(
                runs.into_iter()
                    .map(|r| r.expect("every mode ran"))
                    .collect(),
            );
        }
        let of =
            |f: &dyn Fn(&[Run]) -> f64| -> Vec<f64> { sets_runs.iter().map(|r| f(r)).collect() };
        let plain_cpu = median(of(&|r| r[0].cpu_per_mb() * 1e3));
        for (m, mode) in MODES.iter().enumerate().skip(1) {
            let Mode::Noise(suite) = mode else {
                unreachable!("modes after the first are sessions")
            };
            println!(
                "{:<26} {:>6.1} {:>8.1} {:>8.1} {:>20} | {:>8.2} {:>8.2} {:>20}",
                format!("{rows} × {D_MODEL} f32, {suite}"),
                sets_runs[0][0].mb,
                median(of(&|r| r[0].mb_per_s())),
                median(of(&|r| r[m].mb_per_s())),
                spread(&of(&|r| r[m].mb_per_s() / r[0].mb_per_s())),
                plain_cpu,
                median(of(&|r| r[m].cpu_per_mb() * 1e3)),
                spread(&of(&|r| r[0].cpu_per_mb() / r[m].cpu_per_mb())),
            );
        }
        plain_cpus.push((rows, plain_cpu));
    }
    println!(
        "the e2e cipher alone (seal + open each way, bare snow transport, in memory), and the \
         best CPU ratio it leaves, plain ÷ (plain + cipher):"
    );
    for (rows, plain_cpu) in plain_cpus {
        let floor = |suite: CipherSuite| {
            let f = cipher_floor(suite.noise_params(), rows);
            format!(
                "{suite}: {f:.2} CPU s/GB, bound {:.2}",
                plain_cpu / (plain_cpu + f)
            )
        };
        println!(
            "{:<14} {}; {}",
            format!("{rows} × {D_MODEL} f32"),
            floor(CipherSuite::ChaChaPoly),
            floor(CipherSuite::AesGcm)
        );
    }
    println!("load average at end: {}", load_average());
}

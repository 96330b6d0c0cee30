//! A loopback inference mesh for the integration tests: a bootstrap/relay, workers
//! holding spans of the default model, and a client with the OpenAI API; the reference
//! greedy tokens; a generation run whole or streamed (to kill a node mid-generation);
//! reading a generation's summary.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, LOOPBACK, TestNode, wait_for};

pub fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("../fixtures/reference_tokens.json")).expect("fixture")
}

pub fn model_path() -> std::path::PathBuf {
    let p = cocoon_shaders::model::default_model_path();
    assert!(
        p.exists(),
        "the default model is missing at {}: run scripts/setup",
        p.display()
    );
    p
}

pub struct Mesh {
    /// Holds the nodes' data dirs until the mesh is dropped.
    pub dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
    pub boot: TestNode,
    pub workers: Vec<TestNode>,
    pub client: TestNode,
}

/// A bootstrap/relay, one worker per `(name, args)` and a client; returns once the
/// client has a complete route and its API is up.
pub fn start_mesh(workers: &[(&str, Vec<&str>)], client_args: &[&str]) -> Mesh {
    start_mesh_with(workers, client_args, MeshOptions::default())
}

/// How [`start_mesh_with`] departs from [`start_mesh`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MeshOptions {
    /// Start each worker once the one before it has loaded its blocks, so that no
    /// worker measures the throughput it announces while another warms up on the same
    /// cores (on a real network they are separate machines).
    pub one_worker_at_a_time: bool,
    /// Listen on TCP only. A node killed with SIGKILL resets its TCP connections at
    /// once, while its QUIC peers notice only at QUIC's idle timeout (10 s), so which
    /// transport a connection happened to use would decide how long a failover takes.
    pub tcp_only: bool,
    /// The model every node loads, when not the default one.
    pub model: Option<&'static str>,
}

pub fn start_mesh_with(
    workers: &[(&str, Vec<&str>)],
    client_args: &[&str],
    options: MeshOptions,
) -> Mesh {
    let listen: Vec<&str> = if options.tcp_only {
        let mut v = LOOPBACK.to_vec();
        let quic = v
            .iter()
            .position(|a| a.contains("/quic"))
            .expect("LOOPBACK listens on QUIC");
        v.drain(quic - 1..=quic);
        v
    } else {
        LOOPBACK.to_vec()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let mut boot_args = listen.clone();
    boot_args.extend(["--role", "relay", "--relay-server", "on"]);
    let boot = TestNode::start("boot", &root, None, &boot_args);
    let boot_addr = boot.addr("/tcp/");
    let default_model = model_path();
    let model = match options.model {
        Some(m) => m,
        None => default_model.to_str().expect("utf-8 path"),
    };
    let common_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = listen.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--bootstrap",
                &boot_addr,
                "--model",
                model,
                "--announce-interval",
                "3",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let workers: Vec<TestNode> = workers
        .iter()
        .map(|(name, extra)| {
            let args = common_args(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = TestNode::start(name, &root, None, &args);
            if options.one_worker_at_a_time {
                wait_for(
                    Duration::from_secs(120),
                    "the worker's blocks loaded",
                    || node.log().contains("blocks loaded").then_some(()),
                );
            }
            node
        })
        .collect();
    let mut client_extra = vec!["--role", "client"];
    client_extra.extend(client_args);
    let args = common_args(&client_extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = TestNode::start("client", &root, None, &args);
    let started = Instant::now();
    wait_until_ready(&client, &workers);
    println!("mesh ready in {:.1} s", started.elapsed().as_secs_f64());
    Mesh {
        dir,
        root,
        boot,
        workers,
        client,
    }
}

/// Waits until the client has a complete route, serves its API, and has seen every
/// worker's blocks (loaded and announced), so plans see the whole mesh.
pub fn wait_until_ready(client: &TestNode, workers: &[TestNode]) {
    wait_for(
        Duration::from_secs(180),
        "a complete route and the API",
        || {
            let out = client.cli(&["routes", "--json"]);
            let routes: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let api = client.data_dir.join("api.addr");
            (routes["error"].is_null() && api.exists()).then_some(())
        },
    );
    wait_for(Duration::from_secs(180), "every worker's blocks", || {
        let peers = client.peers();
        let announced = |w: &TestNode| {
            peers.iter().any(|p| {
                p["peer_id"] == w.peer_id.as_str()
                    && p["blocks"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty() && b != "0..0")
            })
        };
        workers.iter().all(announced).then_some(())
    });
}

impl Mesh {
    /// `cocoon generate --json` on the client; the summary object.
    pub fn generate(&self, prompt: &str, max_tokens: usize) -> serde_json::Value {
        let out = self.client.cli(&[
            "generate",
            "--prompt",
            prompt,
            "--max-tokens",
            &max_tokens.to_string(),
            "--temperature",
            "0",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "generate failed: {}\nclient log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.client.log()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().expect("output");
        serde_json::from_str(last).expect("summary JSON")
    }

    pub fn api(&self) -> String {
        let addr = std::fs::read_to_string(self.client.data_dir.join("api.addr")).expect("api");
        format!("http://{}/v1", addr.trim())
    }
}

pub fn token_ids(summary: &serde_json::Value) -> Vec<u64> {
    summary["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect()
}

pub fn expected(prompt: &serde_json::Value) -> Vec<u64> {
    prompt["generated_token_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect()
}

pub fn route_peers(summary: &serde_json::Value) -> Vec<String> {
    summary["route"]
        .as_array()
        .expect("route")
        .iter()
        .map(|h| h["peer"].as_str().expect("peer").to_owned())
        .collect()
}

pub fn span(s: &str) -> Vec<&str> {
    vec!["--blocks", s]
}

/// `cocoon generate --temperature 0 --json` running on a client, its text streaming out.
pub struct Generating {
    pub child: Child,
    stdout: ChildStdout,
    out: Vec<u8>,
}

/// What a finished [`Generating`] left.
pub struct Generated {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Generated {
    /// The summary object, the last line of stdout.
    pub fn summary(&self) -> serde_json::Value {
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("no summary JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

/// Starts greedy `cocoon generate --json` on `client` and returns once `pieces` reads of
/// text have streamed out, so that a kill that follows lands mid-generation. The CLI
/// writes and flushes each token's text on its own, so a read is one token or, when the
/// reader falls behind, a few.
pub fn generate_until_text(
    client: &TestNode,
    prompt: &str,
    max_tokens: usize,
    pieces: usize,
) -> Generating {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&client.data_dir)
        .args(["generate", "--prompt", prompt, "--max-tokens"])
        .arg(max_tokens.to_string())
        .args(["--temperature", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn generate");
    let stdout = child.stdout.take().expect("stdout");
    let mut g = Generating {
        child,
        stdout,
        out: Vec::new(),
    };
    let mut buf = [0u8; 4096];
    for _ in 0..pieces {
        match g.stdout.read(&mut buf) {
            Ok(n) if n > 0 => g.out.extend_from_slice(&buf[..n]),
            ended => {
                let mut err = String::new();
                let _ = g
                    .child
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut err));
                panic!("generate ended before {pieces} pieces of text ({ended:?}): {err}");
            }
        }
    }
    g
}

impl Generating {
    /// Reads the rest of the output and waits for the process to exit.
    pub fn finish(mut self) -> Generated {
        self.stdout
            .read_to_end(&mut self.out)
            .expect("rest of the output");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut stderr).expect("stderr");
        }
        let status = self.child.wait().expect("generate exits");
        Generated {
            status,
            stdout: String::from_utf8_lossy(&self.out).into_owned(),
            stderr,
        }
    }
}

//! Pipeline benchmark: greedy decode of the default model through 1, 2 and 3 workers on
//! loopback (each a `cocoon devnet` of real processes: libp2p, end-to-end Noise, wgpu on
//! whatever adapter is present), against a single node (`cocoon run`) in the same run.
//! Prints tokens/s, the ratio to the single node, the time to first token and the
//! latency each hop adds per token.
//!
//! Run: `cargo bench -p cocoon-node --bench pipeline` (needs the default model; ~2 min).
//! Under `cargo test` (no `--bench` argument) it runs once with 8 tokens, as a smoke test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cocoon");
const PROMPT: &str = "Once upon a time";

/// (tokens, runs): the full benchmark under `cargo bench`, a smoke run under `cargo test`.
fn plan() -> (&'static str, usize) {
    if std::env::args().any(|a| a == "--bench") {
        ("64", 2)
    } else {
        ("8", 1)
    }
}

struct Figures {
    decode_tps: f64,
    ttft_ms: f64,
}

fn best(runs: impl Iterator<Item = Figures>) -> Figures {
    runs.reduce(|a, b| Figures {
        decode_tps: a.decode_tps.max(b.decode_tps),
        ttft_ms: a.ttft_ms.min(b.ttft_ms),
    })
    .expect("at least one run")
}

fn json_tail(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.lines().last().expect("output")).expect("JSON summary")
}

fn single_node(tokens: &str) -> Figures {
    let out = Command::new(BIN)
        .args([
            "run",
            "--prompt",
            PROMPT,
            "--max-tokens",
            tokens,
            "--temperature",
            "0",
        ])
        .arg("--json")
        .stderr(Stdio::null())
        .output()
        .expect("cocoon run");
    assert!(out.status.success(), "cocoon run failed");
    let v = json_tail(&out.stdout);
    let prefill = v["prefill_tokens_per_second"].as_f64().unwrap_or(0.0);
    Figures {
        decode_tps: v["decode_tokens_per_second"].as_f64().expect("decode tps"),
        // Time to first token of a single node = the prefill of the prompt (4 tokens).
        ttft_ms: if prefill > 0.0 {
            4.0 / prefill * 1000.0
        } else {
            0.0
        },
    }
}

struct Devnet {
    child: Child,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn devnet(dir: &Path, workers: u32) -> Devnet {
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["devnet", "--workers", &workers.to_string(), "--spares", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cocoon devnet");
    let mut d = Devnet { child };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !dir.join("devnet.json").exists() {
        if let Ok(Some(s)) = d.child.try_wait() {
            panic!("devnet exited: {s}");
        }
        assert!(Instant::now() < deadline, "devnet did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    d
}

fn through_mesh(workers: u32, tokens: &str, runs: usize) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let _net = devnet(dir.path(), workers);
    let client = dir.path().join("client");
    best((0..runs).map(|_| {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&client)
            .args([
                "generate",
                "--prompt",
                PROMPT,
                "--max-tokens",
                tokens,
                "--temperature",
                "0",
            ])
            .arg("--json")
            .stderr(Stdio::null())
            .output()
            .expect("cocoon generate");
        assert!(out.status.success(), "generate failed");
        let v = json_tail(&out.stdout);
        assert_eq!(v["route"].as_array().map(Vec::len), Some(workers as usize));
        Figures {
            decode_tps: v["decode_tokens_per_second"].as_f64().expect("decode tps"),
            ttft_ms: v["time_to_first_token_ms"].as_f64().expect("ttft"),
        }
    }))
}

fn main() {
    if !cocoon_shaders::model::default_model_path().exists() {
        eprintln!("the default model is missing: run scripts/setup");
        std::process::exit(1);
    }
    let (tokens, runs) = plan();
    let single = best((0..runs).map(|_| single_node(tokens)));
    println!(
        "pipeline benchmark: greedy decode of {tokens} tokens after {PROMPT:?}, best of {runs}"
    );
    println!(
        "{:<14} {:>10} {:>12} {:>14} {:>18}",
        "setup", "decode t/s", "vs single", "first token", "added per hop/tok"
    );
    println!(
        "{:<14} {:>10.2} {:>12} {:>11.0} ms {:>18}",
        "single node", single.decode_tps, "1.00", single.ttft_ms, "-"
    );
    for workers in 1..=3u32 {
        let f = through_mesh(workers, tokens, runs);
        let per_hop_ms = (1000.0 / f.decode_tps - 1000.0 / single.decode_tps) / workers as f64;
        println!(
            "{:<14} {:>10.2} {:>12.2} {:>11.0} ms {:>15.2} ms",
            format!("{workers} hop(s)"),
            f.decode_tps,
            f.decode_tps / single.decode_tps,
            f.ttft_ms,
            per_hop_ms
        );
    }
}

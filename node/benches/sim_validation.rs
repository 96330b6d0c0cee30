//! The simulator against the real thing (issue 7, point 5): a devnet-shaped mesh on
//! loopback (bootstrap/relay, three workers × 10 blocks of the default model, a spare
//! holding the middle span again, a client) serves greedy generations, then one during
//! which the worker on the middle hop is killed (`kill -9`) once a few tokens have
//! streamed out. `cocoon-sim` then runs `simulations/scenarios/devnet-validation.toml`
//! with what the real mesh measured — each worker's announced throughput, the client
//! head's cost per token, the same request lengths, the same kill — and the two must
//! agree: the same route (spans in order, the spare unused until the failure), the same
//! failover (the failed hop, its replacements, one failover, every token served), and
//! time to first token and time per token within [`TOLERANCE`].
//!
//! The simulator is a dev-dependency of this crate (it depends on `cocoon-protocol`
//! only, so nothing points back up); this is the one place both are in reach.
//!
//! Run: `cargo bench -p cocoon-node --bench sim_validation` (needs the default model;
//! ~15 s). It prints real against simulated figures and panics on a disagreement. It is
//! a validation run, not yet a CI test: in 1 of 3 runs the real client chose the other
//! 10..20 worker than the simulator did, and latency came out 34–62 % off, because the
//! workers' announced throughputs (the simulator's inputs) are measured while the other
//! workers warm up on the same cores. Under `cargo test` (no `--bench`) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

use cocoon_shaders::engine::HeadBackend;
use cocoon_sim::metrics::{HopRecord, RouteRecord};
use cocoon_sim::scenario::{FaultKind, Scenario, ScriptedFault, ScriptedRequest};
use cocoon_sim::sim::Sim;
use common::BIN;
use common::infer_mesh::{Mesh, expected, model_path, reference, span, start_mesh, token_ids};

/// Largest relative difference allowed between simulated and real medians of time to
/// first token and of time per token. Chosen from what was measured, not from a goal:
/// the simulator's inputs are the workers' announced throughputs, which each worker
/// measures in 5 decodes while the other workers warm up beside it on the same 2 cores,
/// and four identical workers announced 17 to 53 tokens/s; with inputs that far apart
/// the medians came out 34-46 % off (TTFT low, time per token high). ±50 % is what
/// these inputs support; see `simulations/README.md` ("Validation").
const TOLERANCE: f64 = 0.5;
/// Tokens streamed out before the middle worker is killed.
const KILL_AFTER_TOKENS: u64 = 4;
const MAX_TOKENS: usize = 32;
/// Greedy generations before the one with the kill.
const CLEAN_RUNS: usize = 3;
/// Simulated seconds between requests (the real ones run one after another).
const SPACING_S: f64 = 10.0;

/// What one real generation showed.
struct RealRun {
    prompt_tokens: u64,
    tokens: u64,
    route: Vec<HopRecord>,
    failovers: Vec<(HopRecord, Vec<HopRecord>)>,
    ttft_ms: f64,
    per_token_ms: f64,
}

/// Index of `peer` among the mesh's workers (the simulator's worker order).
fn worker_index(mesh: &Mesh, peer: &str) -> u32 {
    mesh.workers
        .iter()
        .position(|w| w.peer_id == peer)
        .unwrap_or_else(|| panic!("{peer} is not one of the mesh's workers")) as u32
}

/// `"<peer> (<blocks>)"`, as `replaced_by` lists hops.
fn parse_replacement(mesh: &Mesh, s: &str) -> HopRecord {
    let (peer, blocks) = s
        .split_once(" (")
        .unwrap_or_else(|| panic!("a replacement reads `peer (blocks)`: {s}"));
    HopRecord {
        worker: worker_index(mesh, peer),
        blocks: blocks.trim_end_matches(')').to_owned(),
    }
}

fn real_run(mesh: &Mesh, summary: &serde_json::Value) -> RealRun {
    let route = summary["route"]
        .as_array()
        .expect("route")
        .iter()
        .map(|h| HopRecord {
            worker: worker_index(mesh, h["peer"].as_str().expect("peer")),
            blocks: h["blocks"].as_str().expect("blocks").to_owned(),
        })
        .collect();
    let failovers = summary["failovers"]
        .as_array()
        .expect("failovers")
        .iter()
        .map(|f| {
            let failed = HopRecord {
                worker: worker_index(mesh, f["peer"].as_str().expect("peer")),
                blocks: f["blocks"].as_str().expect("blocks").to_owned(),
            };
            let by = f["replaced_by"]
                .as_array()
                .expect("replaced_by")
                .iter()
                .map(|r| parse_replacement(mesh, r.as_str().expect("hop")))
                .collect();
            (failed, by)
        })
        .collect();
    let decode_tps = summary["decode_tokens_per_second"]
        .as_f64()
        .expect("decode speed");
    RealRun {
        prompt_tokens: summary["prompt_token_ids"]
            .as_array()
            .expect("prompt ids")
            .len() as u64,
        tokens: token_ids(summary).len() as u64,
        route,
        failovers,
        ttft_ms: summary["time_to_first_token_ms"].as_f64().expect("ttft"),
        per_token_ms: 1000.0 / decode_tps,
    }
}

/// The client's own cost per token, measured like a worker measures its blocks: the
/// default model's head (embedding of one token, final norm, LM head, logits read
/// back, argmax) on this machine's wgpu device, a few warm-up steps, then timed.
fn measure_head_ms() -> f64 {
    let file = cocoon_shaders::model::gguf::GgufFile::open(model_path()).expect("model");
    let ctx = cocoon_shaders::gpu::GpuContext::new().expect("a wgpu device");
    let mut head = cocoon_shaders::engine::GpuHead::new(ctx, &file).expect("head");
    let d = head.config().d_model;
    let vocab = head.config().vocab_size;
    let (mut row, mut logits) = (vec![0f32; d], vec![0f32; vocab]);
    let mut token = 1u32;
    let mut step = |head: &mut cocoon_shaders::engine::GpuHead| {
        head.embed(&[token], &mut row).expect("embed");
        head.logits(&row, &mut logits).expect("logits");
        token = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32);
    };
    for _ in 0..3 {
        step(&mut head);
    }
    const TIMED: u32 = 10;
    let started = Instant::now();
    for _ in 0..TIMED {
        step(&mut head);
    }
    started.elapsed().as_secs_f64() * 1000.0 / f64::from(TIMED)
}

/// `generate` with the middle worker killed once `KILL_AFTER_TOKENS` pieces of text
/// have streamed out (each token's text is written and flushed on its own).
fn generate_with_kill(mesh: &mut Mesh, prompt: &str, middle: u32) -> serde_json::Value {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&mesh.client.data_dir)
        .args(["generate", "--prompt", prompt, "--max-tokens"])
        .arg(MAX_TOKENS.to_string())
        .args(["--temperature", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn generate");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut pieces = 0;
    while pieces < KILL_AFTER_TOKENS {
        let n = stdout.read(&mut buf).expect("read the stream");
        assert!(n > 0, "generate ended before {KILL_AFTER_TOKENS} tokens");
        out.extend_from_slice(&buf[..n]);
        pieces += 1;
    }
    mesh.workers[middle as usize]
        .child
        .kill()
        .expect("kill -9 the middle worker");
    stdout.read_to_end(&mut out).expect("rest of the stream");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = child.wait().expect("generate exits");
    assert!(
        status.success(),
        "generate failed: {stderr}\n{}",
        mesh.client.log()
    );
    let text = String::from_utf8_lossy(&out);
    serde_json::from_str(text.lines().last().expect("summary")).expect("summary JSON")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn hops(route: &[HopRecord]) -> String {
    route
        .iter()
        .map(|h| format!("w{}[{}]", h.worker, h.blocks))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "sim_validation: a validation run; `cargo bench -p cocoon-node --bench sim_validation`"
        );
        return;
    }
    the_simulator_agrees_with_a_real_devnet_on_routes_failover_and_latency();
}

fn the_simulator_agrees_with_a_real_devnet_on_routes_failover_and_latency() {
    let started = Instant::now();
    let head_ms = measure_head_ms();
    let mut mesh = start_mesh(
        &[
            ("w1", span("0..10")),
            ("w2", span("10..20")),
            ("w3", span("20..30")),
            ("spare", span("10..20")),
        ],
        &[],
    );
    // What the workers announced, as the client sees it.
    let models = mesh.client.json(&["models"]);
    let announced = models[0]["workers"].as_array().expect("workers").clone();
    let tps: Vec<f64> = mesh
        .workers
        .iter()
        .map(|w| {
            announced
                .iter()
                .find(|a| a["peer_id"] == w.peer_id.as_str())
                .and_then(|a| a["throughput_tps"].as_f64())
                .unwrap_or_else(|| panic!("{} announced no throughput: {models}", w.name))
        })
        .collect();

    // The real runs: greedy generations, then one with the kill.
    let prompts = reference()["prompts"].as_array().expect("prompts").clone();
    let mut real = Vec::new();
    for i in 0..CLEAN_RUNS {
        let p = &prompts[i % prompts.len()];
        let summary = mesh.generate(p["prompt"].as_str().expect("prompt"), MAX_TOKENS);
        let want = expected(p);
        assert_eq!(token_ids(&summary), want[..want.len().min(MAX_TOKENS)]);
        real.push(real_run(&mesh, &summary));
    }
    let middle = real[0].route[1].worker;
    let p = &prompts[CLEAN_RUNS % prompts.len()];
    let summary = generate_with_kill(&mut mesh, p["prompt"].as_str().expect("prompt"), middle);
    let want = expected(p);
    assert_eq!(
        token_ids(&summary),
        want[..want.len().min(MAX_TOKENS)],
        "every token served, the same ones, across the failover"
    );
    real.push(real_run(&mesh, &summary));
    let real_s = started.elapsed().as_secs_f64();

    // The simulator, fed what the real mesh measured.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulations/scenarios/devnet-validation.toml"
    );
    let mut sc = Scenario::load(std::path::Path::new(path)).expect("validation scenario");
    for (tier, t) in sc.workers.tiers.iter_mut().zip(&tps) {
        tier.block_tokens_per_s = t * f64::from(sc.workers.span_blocks);
    }
    sc.client.head_ms_per_token = head_ms;
    sc.requests = real
        .iter()
        .enumerate()
        .map(|(i, r)| ScriptedRequest {
            at_s: 1.0 + i as f64 * SPACING_S,
            client: 0,
            prompt_tokens: r.prompt_tokens,
            output_tokens: r.tokens,
        })
        .collect();
    sc.faults = vec![ScriptedFault {
        worker: middle,
        kind: FaultKind::Crash,
        at_s: None,
        request: Some(CLEAN_RUNS as u32),
        after_tokens: Some(KILL_AFTER_TOKENS),
    }];
    sc.check().expect("the filled-in scenario is valid");
    let mut sim = Sim::new(sc.clone(), sc.seed).expect("simulator");
    sim.run(|_| {}).expect("simulated run");
    let simulated: Vec<RouteRecord> = sim.rec.routes.clone();
    assert_eq!(
        simulated.len(),
        real.len(),
        "one simulated request per real one"
    );

    // The figures, side by side.
    println!(
        "announced tokens/s (10 blocks): {:?}; client head {head_ms:.1} ms/token",
        tps.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>()
    );
    println!(
        "| request | route (real) | route (sim) | failovers real / sim | TTFT ms real / sim | ms/token real / sim |"
    );
    for (i, (r, s)) in real.iter().zip(&simulated).enumerate() {
        println!(
            "| {i} | {} | {} | {} / {} | {:.0} / {:.0} | {:.1} / {:.1} |",
            hops(&r.route),
            hops(&s.final_route),
            r.failovers.len(),
            s.failovers.len(),
            r.ttft_ms,
            s.ttft_ms,
            r.per_token_ms,
            s.per_token_ms
        );
    }
    for (r, s) in real.iter().zip(&simulated) {
        for (f, g) in r.failovers.iter().zip(&s.failovers) {
            println!(
                "failover: real w{}[{}] → {}; sim w{}[{}] → {} (after {} tokens)",
                f.0.worker,
                f.0.blocks,
                hops(&f.1),
                g.worker,
                g.blocks,
                hops(&g.replaced_by),
                g.at_token
            );
        }
    }

    // (a) The same routes; the spare (the 10..20 worker not chosen) unused before the
    // failure, in both.
    let spare = [1u32, 3]
        .into_iter()
        .find(|&w| w != middle)
        .expect("two 10..20 workers");
    for (i, (r, s)) in real.iter().zip(&simulated).enumerate().take(CLEAN_RUNS) {
        assert_eq!(
            s.planned, r.route,
            "request {i}: the simulator plans the real route"
        );
        assert_eq!(s.final_route, r.route, "request {i}: and keeps it");
        assert!(
            r.failovers.is_empty() && s.failovers.is_empty(),
            "request {i}: no failover"
        );
        assert!(
            r.route.iter().all(|h| h.worker != spare),
            "request {i}: the spare is unused"
        );
    }
    let spans: Vec<&str> = real[0].route.iter().map(|h| h.blocks.as_str()).collect();
    assert_eq!(spans, ["0..10", "10..20", "20..30"]);
    // (b) The same failover: the killed worker's hop, re-planned onto the spare (the
    // hops after it re-opened), once, every token served.
    let (r, s) = (&real[CLEAN_RUNS], &simulated[CLEAN_RUNS]);
    assert_eq!(r.failovers.len(), 1, "one real failover");
    assert_eq!(s.failovers.len(), 1, "one simulated failover");
    let (failed, by) = &r.failovers[0];
    assert_eq!(failed.worker, middle);
    assert_eq!(failed.blocks, "10..20");
    assert_eq!(
        (s.failovers[0].worker, &s.failovers[0].blocks),
        (failed.worker, &failed.blocks)
    );
    assert_eq!(&s.failovers[0].replaced_by, by, "the same replacement hops");
    assert_eq!(by[0].worker, spare, "the spare takes over the middle span");
    assert_eq!(s.final_route, r.route, "the same route after the failover");
    assert_eq!(
        s.served_tokens, r.tokens,
        "the simulator serves every token too"
    );
    // (c) Latency: medians over the generations without a fault.
    let clean = |f: &dyn Fn(usize) -> f64| median((0..CLEAN_RUNS).map(f).collect());
    let ttft = (
        clean(&|i| real[i].ttft_ms),
        clean(&|i| simulated[i].ttft_ms),
    );
    let per = (
        clean(&|i| real[i].per_token_ms),
        clean(&|i| simulated[i].per_token_ms),
    );
    println!(
        "medians: TTFT real {:.0} ms, sim {:.0} ms ({:+.0} %); per token real {:.1} ms, sim {:.1} ms ({:+.0} %); faulted request total real {:.0} ms (from TTFT + tokens), sim {:.0} ms",
        ttft.0,
        ttft.1,
        (ttft.1 / ttft.0 - 1.0) * 100.0,
        per.0,
        per.1,
        (per.1 / per.0 - 1.0) * 100.0,
        r.ttft_ms + r.per_token_ms * (r.tokens - 1) as f64,
        s.total_ms
    );
    for (what, (real_v, sim_v)) in [("time to first token", ttft), ("time per token", per)] {
        let rel = (sim_v - real_v).abs() / real_v;
        assert!(
            rel <= TOLERANCE,
            "{what}: simulated {sim_v:.1} ms vs real {real_v:.1} ms, off by {:.0} % (> {:.0} %)",
            rel * 100.0,
            TOLERANCE * 100.0
        );
    }
    println!(
        "validation took {:.1} s (real mesh and runs {real_s:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

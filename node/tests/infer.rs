//! Sharded inference over real libp2p sockets on 127.0.0.1, with the default model on
//! lavapipe: a chain of three workers gives exactly the reference greedy tokens; killing
//! the middle worker mid-generation fails over to a spare with the same tokens; lying and
//! faulty workers are rejected, penalised and routed around; nothing on the wire between
//! client and worker carries plaintext.
//!
//! Each test starts its own mesh; a lock runs them one at a time (each mesh already keeps
//! both cores busy).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cocoon_protocol::session::aes_hardware;
use common::infer_mesh::{
    Mesh, expected, generate_until_text, model_path, reference, route_peers, span, start_mesh,
    token_ids, wait_until_ready,
};
use common::{BIN, LOOPBACK, TestNode, wait_for};

static ONE_MESH_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn three_workers_give_the_single_node_reference_tokens() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // w2 accepts only ChaChaPoly sessions, so one chain runs both suites where this CPU
    // has AES hardware (the others then use AES-GCM), and ChaChaPoly throughout if not.
    let mut chacha_only = span("10..20");
    chacha_only.extend(["--session-cipher", "chachapoly"]);
    let mesh = start_mesh(
        &[
            ("w1", span("0..10")),
            ("w2", chacha_only),
            ("w3", span("20..30")),
        ],
        &[],
    );
    let fast = if aes_hardware() {
        "aesgcm"
    } else {
        "chachapoly"
    };
    for p in reference()["prompts"].as_array().expect("prompts") {
        let summary = mesh.generate(p["prompt"].as_str().expect("prompt"), 32);
        assert_eq!(
            summary["prompt_token_ids"], p["prompt_token_ids"],
            "prompt tokens of {}",
            p["name"]
        );
        assert_eq!(token_ids(&summary), expected(p), "tokens of {}", p["name"]);
        let route = route_peers(&summary);
        let ids: Vec<&str> = mesh.workers.iter().map(|w| w.peer_id.as_str()).collect();
        assert_eq!(route, ids, "the route runs w1 → w2 → w3");
        let ciphers: Vec<&str> = summary["route"]
            .as_array()
            .expect("route")
            .iter()
            .map(|h| h["cipher"].as_str().expect("each hop names its cipher"))
            .collect();
        assert_eq!(
            ciphers,
            [fast, "chachapoly", fast],
            "each hop's session suite"
        );
        assert!(
            summary["failovers"]
                .as_array()
                .expect("failovers")
                .is_empty()
        );
        println!(
            "{}: {:.1} tok/s through 3 workers, first token after {:.0} ms",
            p["name"],
            summary["tokens_per_second"].as_f64().unwrap_or(0.0),
            summary["time_to_first_token_ms"].as_f64().unwrap_or(0.0)
        );
    }
    // `cocoon chat`: one turn from stdin, the reply streamed, an empty line ends it.
    let mut chat = Command::new(BIN)
        .arg("--data-dir")
        .arg(&mesh.client.data_dir)
        .args(["chat", "--max-tokens", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat");
    {
        use std::io::Write;
        let mut stdin = chat.stdin.take().expect("stdin");
        stdin.write_all(b"Name a planet.\n\n").expect("write");
    }
    let out = chat.wait_with_output().expect("chat exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = stdout.trim_start_matches("> ").lines().next().unwrap_or("");
    assert!(!reply.trim().is_empty(), "chat printed a reply: {stdout:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("through 3 worker(s)"),
        "chat reports the route"
    );
    // The mesh CLI shows the coverage and the chain.
    let routes = mesh.client.json(&["routes"]);
    assert_eq!(routes["coverage"].as_array().expect("coverage").len(), 30);
    assert_eq!(
        routes["routes"][0]["hops"].as_array().expect("hops").len(),
        3
    );
    let _ = &mesh.boot;
    let _ = &mesh.root;
}

#[test]
fn killing_the_middle_worker_fails_over_to_the_spare_with_the_same_tokens() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut mesh = start_mesh(
        &[
            ("w1", span("0..10")),
            ("w2", span("10..20")),
            ("w3", span("20..30")),
            ("spare", span("10..20")),
        ],
        &[],
    );
    let p = &reference()["prompts"][0];
    let prompt = p["prompt"].as_str().expect("prompt");
    // Learn which of the two 10..20 workers the route uses.
    let first = mesh.generate(prompt, 2);
    let middle_id = route_peers(&first)[1].clone();
    let middle = mesh
        .workers
        .iter_mut()
        .find(|w| w.peer_id == middle_id)
        .expect("the middle hop is one of ours");

    // Mid-generation: once the first text has streamed out, kill -9 the middle worker.
    let generating = generate_until_text(&mesh.client, prompt, 32, 1);
    middle.child.kill().expect("kill -9 the middle worker");
    let killed_at = Instant::now();
    let done = generating.finish();
    let stderr = &done.stderr;
    assert!(
        done.status.success(),
        "generate failed: {stderr}\n{}",
        mesh.client.log()
    );
    let summary = done.summary();
    assert_eq!(token_ids(&summary), expected(p), "tokens after failover");
    let failovers = summary["failovers"].as_array().expect("failovers");
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    assert_eq!(failovers[0]["peer"], middle_id.as_str());
    assert!(stderr.contains("failover"), "the CLI reports it: {stderr}");
    let spare = mesh
        .workers
        .iter()
        .find(|w| w.name == "spare")
        .expect("spare");
    let other_middle = if spare.peer_id == middle_id {
        mesh.workers.iter().find(|w| w.name == "w2").expect("w2")
    } else {
        spare
    };
    assert_eq!(route_peers(&summary)[1], other_middle.peer_id);
    println!(
        "failover done; generation finished {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
}

#[test]
fn lying_and_faulty_workers_are_rejected_penalised_and_routed_around() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Each liar announces an absurd throughput so the planner tries it first.
    let fast = ["--throughput", "100000"];
    let liar = |blocks: &'static str, extra: &[&'static str]| {
        let mut v = span(blocks);
        v.extend(fast);
        v.extend(extra);
        v
    };
    let mesh = start_mesh(
        &[
            ("w1", span("0..10")),
            ("w2", span("10..20")),
            ("w3", span("20..30")),
            // Announces 0..10 but serves 20..30: its open is refused.
            (
                "lies-about-blocks",
                liar("20..30", &["--dev-announce-blocks", "0..10"]),
            ),
            (
                "wrong-shape",
                liar("10..20", &["--dev-misbehave", "wrong-shape"]),
            ),
            ("tamper", liar("20..30", &["--dev-misbehave", "tamper"])),
            ("stall", liar("10..20", &["--dev-misbehave", "stall"])),
        ],
        &["--forward-timeout-secs", "8"],
    );
    // The planner charges a hop its lowest recent ping, sampled every 10 s; a liar first
    // pinged while it compiled its kernels can look slower than an honest worker until
    // its next ping (CI saw `lies-about-blocks` skipped so). The test is about what
    // happens when liars are tried, so it starts once the two cheapest routes are all
    // liars: every liar is then cheaper than the honest worker for its blocks.
    let liars: Vec<&str> = mesh.workers[3..]
        .iter()
        .map(|w| w.peer_id.as_str())
        .collect();
    wait_for(
        Duration::from_secs(120),
        "the liars to be the cheapest routes",
        || {
            let out = mesh.client.cli(&["routes", "-k", "2", "--json"]);
            let info: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let routes = info["routes"].as_array()?;
            let all_liars = routes.iter().all(|r| {
                r["hops"].as_array().is_some_and(|hops| {
                    hops.iter()
                        .all(|h| liars.iter().any(|l| h["peer_id"] == *l))
                })
            });
            (routes.len() == 2 && all_liars).then_some(())
        },
    );
    let p = &reference()["prompts"][1];
    let summary = mesh.generate(p["prompt"].as_str().expect("prompt"), 32);
    assert_eq!(token_ids(&summary), expected(p), "tokens despite the liars");
    let honest: Vec<&str> = mesh.workers[..3]
        .iter()
        .map(|w| w.peer_id.as_str())
        .collect();
    assert_eq!(
        route_peers(&summary),
        honest,
        "the final route is the honest one"
    );
    let failovers = summary["failovers"].as_array().expect("failovers");
    let reason_of = |name: &str| -> String {
        let id = &mesh
            .workers
            .iter()
            .find(|w| w.name == name)
            .expect(name)
            .peer_id;
        failovers
            .iter()
            .find(|f| f["peer"] == id.as_str())
            .map(|f| f["reason"].as_str().unwrap_or("").to_owned())
            .unwrap_or_else(|| panic!("{name} was never tried or never failed: {failovers:?}"))
    };
    assert!(reason_of("lies-about-blocks").contains("WrongBlocks"));
    assert!(reason_of("wrong-shape").contains("floats"));
    assert!(reason_of("tamper").contains("decrypt"));
    assert!(reason_of("stall").contains("no answer within"));
    // Penalised: the client's peer table records the failures.
    for name in ["lies-about-blocks", "wrong-shape", "tamper", "stall"] {
        let w = mesh.workers.iter().find(|w| w.name == name).expect(name);
        let peer = mesh.client.peer(&w.peer_id).expect("known peer");
        assert!(
            peer["failures"].as_u64().unwrap_or(0) >= 1,
            "{name} penalised: {peer}"
        );
    }
}

/// Every `len`-byte window of `needle` that occurs in `haystack`.
fn windows_found(haystack: &[u8], needle: &[u8], len: usize) -> usize {
    needle
        .windows(len)
        .step_by(4)
        .filter(|w| haystack.windows(len).any(|h| h == *w))
        .count()
}

#[test]
fn a_relay_sees_no_plaintext() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let tap = dir.path().join("tap.bin");
    let tap_s = tap.to_str().expect("utf-8");
    // One worker holds the whole model and is reachable only through the relay; it
    // records every byte of its inference streams as they cross the wire.
    let mesh = start_mesh_with_relay_worker(tap_s);
    let p = &reference()["prompts"][0];
    let prompt = p["prompt"].as_str().expect("prompt");
    let summary = mesh.generate(prompt, 8);
    assert_eq!(token_ids(&summary), expected(p)[..8].to_vec());
    let wire = std::fs::read(&tap).expect("tap");
    assert!(
        wire.len() > 4 * 576 * 4,
        "the tap caught the session ({} bytes)",
        wire.len()
    );

    // The plaintext the client sent: the prompt, its token ids, and the embedding rows
    // (the hidden states entering block 0), as f32 little-endian.
    let file = cocoon_shaders::model::gguf::GgufFile::open(model_path()).expect("model");
    let mut head = cocoon_shaders::engine::CpuHead::new(&file).expect("head");
    let ids: Vec<u32> = p["prompt_token_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    let mut hidden = vec![0f32; ids.len() * 576];
    cocoon_shaders::engine::HeadBackend::embed(&mut head, &ids, &mut hidden).expect("embed");
    let hidden_bytes: Vec<u8> = hidden.iter().flat_map(|f| f.to_le_bytes()).collect();
    let id_bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    // The search works: it finds the windows in a plaintext copy.
    assert!(windows_found(&hidden_bytes, &hidden_bytes, 64) > 0);
    assert!(
        !wire.windows(prompt.len()).any(|w| w == prompt.as_bytes()),
        "prompt text on the wire"
    );
    assert!(
        !wire
            .windows(id_bytes.len())
            .any(|w| w == id_bytes.as_slice()),
        "prompt token ids on the wire"
    );
    assert_eq!(
        windows_found(&wire, &hidden_bytes, 64),
        0,
        "a 64-byte window of the hidden states on the wire"
    );
    let worker = &mesh.workers[0];
    let link = mesh.client.peer(&worker.peer_id).expect("worker known");
    assert_eq!(
        link["connection"], "relayed",
        "the session crossed the relay: {link}"
    );
    println!("{} bytes captured on a relayed link", wire.len());
}

fn start_mesh_with_relay_worker(tap: &str) -> Mesh {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let mut boot_args = LOOPBACK.to_vec();
    boot_args.extend(["--role", "relay", "--relay-server", "on"]);
    let boot = TestNode::start("boot", &root, None, &boot_args);
    let boot_addr = boot.addr("/tcp/");
    let model = model_path();
    let model = model.to_str().expect("utf-8 path");
    // Neither the worker nor the client accepts direct connections, so hole punching
    // has nothing to connect to and every byte between them crosses the relay.
    let relay_only = [
        "--listen",
        "none",
        "--mdns",
        "false",
        "--autonat-delay",
        "3600",
    ];
    let mut w_args = relay_only.to_vec();
    w_args.extend([
        "--bootstrap",
        &boot_addr,
        "--relay",
        &boot_addr,
        "--model",
        model,
        "--blocks",
        "0..30",
        "--announce-interval",
        "3",
        "--dev-tap",
        tap,
    ]);
    let worker = TestNode::start("worker", &root, None, &w_args);
    let mut c_args = relay_only.to_vec();
    c_args.extend([
        "--bootstrap",
        &boot_addr,
        "--model",
        model,
        "--role",
        "client",
        "--announce-interval",
        "3",
    ]);
    let client = TestNode::start("client", &root, None, &c_args);
    let workers = vec![worker];
    wait_until_ready(&client, &workers);
    Mesh {
        dir,
        root,
        boot,
        workers,
        client,
    }
}

/// The official `openai` Python package against the client's API: chat and text
/// completions, streamed and whole, the model list, and an error in OpenAI's shape.
#[test]
fn the_openai_python_client_talks_to_the_api() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mesh = start_mesh(&[("w1", span("0..15")), ("w2", span("15..30"))], &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(mesh.api())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai client script failed:\n{stdout}\n{stderr}\nclient log:\n{}",
        mesh.client.log()
    );
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("result")).expect("result JSON");
    let reference = reference();
    let once = &reference["prompts"][0];
    // Greedy text completion: the reference continuation's first 8 tokens' text.
    assert_eq!(result["completion_tokens"], 8);
    assert_eq!(
        result["stream_text"], result["whole_text"],
        "streamed = whole"
    );
    assert_eq!(
        result["chat_stream"], result["chat_whole"],
        "chat streamed = whole"
    );
    assert!(!result["chat_whole"].as_str().unwrap_or("").is_empty());
    assert_eq!(result["error_status"], 404);
    assert_eq!(result["error_code"], "model_not_found");
    assert!(once["prompt"].is_string());
    let lines = BufReader::new(stdout.as_bytes()).lines().count();
    assert!(lines >= 1);
}

/// `--local-blocks`: the client runs blocks 0 and 29 itself and routes 1..29 through
/// workers that hold 0..15 and 15..30 (each serving part of its span): same tokens.
#[test]
fn a_client_with_local_blocks_gives_the_same_tokens() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mesh = start_mesh(
        &[("w1", span("0..15")), ("w2", span("15..30"))],
        &["--local-blocks"],
    );
    let p = &reference()["prompts"][0];
    let summary = mesh.generate(p["prompt"].as_str().expect("prompt"), 16);
    assert_eq!(token_ids(&summary), expected(p)[..16].to_vec());
    let blocks: Vec<&str> = summary["route"]
        .as_array()
        .expect("route")
        .iter()
        .map(|h| h["blocks"].as_str().expect("blocks"))
        .collect();
    assert_eq!(
        blocks,
        ["1..15", "15..29"],
        "workers run only the middle blocks"
    );
}

/// Gemma 3 270M (another architecture, tokenizer and chat template than the default
/// model) split over 3 workers answers `/v1/chat/completions` with the single node's
/// tokens (`cocoon run --chat` on the same file), and `/v1/completions` likewise.
#[test]
fn a_gemma3_mesh_gives_the_single_node_tokens() {
    let _one = ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let path = cocoon_shaders::model::gemma3_270m_path();
    assert!(
        path.exists(),
        "{} missing: run scripts/setup",
        path.display()
    );
    let model: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
    let single = |chat: bool, prompt: &str| -> Vec<u64> {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--model", model, "--prompt", prompt])
            .args(["--max-tokens", "12", "--temperature", "0", "--json"]);
        if chat {
            cmd.arg("--chat");
        }
        let out = cmd.output().expect("cocoon run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last: serde_json::Value =
            serde_json::from_str(stdout.lines().last().expect("json")).expect("json");
        token_ids(&last)
    };
    let chat_prompt = "What is the capital of France?";
    let text_prompt = "The capital of France is";
    let want_chat = single(true, chat_prompt);
    let want_text = single(false, text_prompt);
    let mesh = common::infer_mesh::start_mesh_with(
        &[
            ("g1", span("0..6")),
            ("g2", span("6..12")),
            ("g3", span("12..18")),
        ],
        &[],
        common::infer_mesh::MeshOptions {
            model: Some(model),
            ..Default::default()
        },
    );
    let api = mesh.api();
    let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
        ureq::post(format!("{api}{path}"))
            .send_json(&body)
            .expect("the API answers")
            .body_mut()
            .read_json()
            .expect("JSON")
    };
    let chat = post(
        "/chat/completions",
        serde_json::json!({
            "model": "default",
            "messages": [{"role": "user", "content": chat_prompt}],
            "temperature": 0,
            "max_tokens": 12,
        }),
    );
    assert_eq!(token_ids(&chat["cocoon"]), want_chat, "chat tokens: {chat}");
    let route = chat["cocoon"]["route"].as_array().expect("route");
    assert_eq!(route.len(), 3, "three hops");
    let text = post(
        "/completions",
        serde_json::json!({
            "model": "default",
            "prompt": text_prompt,
            "temperature": 0,
            "max_tokens": 12,
        }),
    );
    assert_eq!(
        token_ids(&text["cocoon"]),
        want_text,
        "completion tokens: {text}"
    );
    assert!(
        text["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("France")),
        "{text}"
    );
}

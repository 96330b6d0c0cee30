//! Real-socket tests of the mesh on loopback: discovery through a bootstrap node,
//! announcement propagation, forged announcements through the real swarm, the control
//! API's cookie, file modes, and the CLI's answer when no node runs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{LOOPBACK, MODEL_ID, TestNode, sees_all_announced, wait_for};

fn worker_args<'a>(bootstrap: &'a str, blocks: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = LOOPBACK.to_vec();
    a.extend_from_slice(&[
        "--bootstrap",
        bootstrap,
        "--model-id",
        MODEL_ID,
        "--blocks",
        blocks,
        "--announce-interval",
        "30",
    ]);
    a.extend_from_slice(extra);
    a
}

fn relay_args() -> Vec<&'static str> {
    let mut a = LOOPBACK.to_vec();
    a.extend_from_slice(&["--role", "relay"]);
    a
}

#[test]
fn five_nodes_on_loopback_learn_each_other_and_their_announcements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let boot = TestNode::start("boot", dir.path(), None, &relay_args());
    let b = boot.addr("/tcp/");
    let started = Instant::now();
    let workers: Vec<TestNode> = ["0..8", "8..15", "15..23", "23..30"]
        .iter()
        .enumerate()
        .map(|(i, blocks)| {
            TestNode::start(
                &format!("w{i}"),
                dir.path(),
                None,
                &worker_args(&b, blocks, &[]),
            )
        })
        .collect();
    let mut all: Vec<&TestNode> = vec![&boot];
    all.extend(workers.iter());
    let ids: Vec<&str> = all.iter().map(|n| n.peer_id.as_str()).collect();
    wait_for(
        Duration::from_secs(30),
        "all 5 nodes to see the 4 others' announcements",
        || {
            all.iter()
                .all(|n| {
                    let others: Vec<&str> =
                        ids.iter().copied().filter(|i| *i != n.peer_id).collect();
                    sees_all_announced(n, &others)
                })
                .then_some(())
        },
    );
    println!(
        "5 nodes saw each other's announcements {:.2} s after the workers started",
        started.elapsed().as_secs_f64()
    );

    // Every row has at least a peer_id; roles and blocks come from the announcements.
    let peers = workers[0].peers();
    assert_eq!(peers.len(), 4, "{peers:?}");
    let boot_row = peers
        .iter()
        .find(|p| p["peer_id"] == boot.peer_id)
        .expect("bootstrap listed");
    assert_eq!(boot_row["role"], "relay");
    let w3 = peers
        .iter()
        .find(|p| p["peer_id"] == workers[3].peer_id)
        .expect("w3 listed");
    assert_eq!(w3["blocks"], "23..30");
    assert_eq!(w3["model_id"], MODEL_ID);

    // The model is covered end to end by the four workers.
    let models = workers[1].json(&["models"]);
    let m = &models[0];
    assert_eq!(m["model_id"], MODEL_ID);
    assert_eq!(m["covered_blocks"], 30);
    assert_eq!(m["complete"], true);
    assert_eq!(m["workers"].as_array().map(Vec::len), Some(4));

    // `peer ID` shows the last announcement; `ping` gets answers.
    let detail = workers[0].json(&["peer", &workers[2].peer_id]);
    assert_eq!(detail["announcement"]["blocks"]["start"], 15);
    let ping = workers[0].json(&["ping", &workers[1].peer_id, "-c", "2"]);
    let rtts = ping["rtts_ms"].as_array().expect("rtts");
    assert_eq!(rtts.len(), 2);
    assert!(
        rtts.iter()
            .all(|r| r.as_f64().is_some_and(|ms| ms > 0.0 && ms < 1000.0)),
        "{ping}"
    );

    // Human tables name the peers too.
    let table = String::from_utf8_lossy(&workers[0].cli(&["peers"]).stdout).into_owned();
    assert!(table.starts_with("PEER"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");
}

#[test]
fn forged_announcements_are_rejected_by_rule_and_lower_the_senders_score() {
    let dir = tempfile::tempdir().expect("tempdir");
    let honest = TestNode::start("honest", dir.path(), None, &relay_args());
    let b = honest.addr("/tcp/");
    let forger = TestNode::start(
        "forger",
        dir.path(),
        None,
        &worker_args(&b, "0..10", &["--dev-forge"]),
    );
    wait_for(
        Duration::from_secs(20),
        "the honest node to accept the forger's real announcement",
        || sees_all_announced(&honest, &[&forger.peer_id]).then_some(()),
    );
    let initial = honest.peer(&forger.peer_id).expect("listed");
    let mut last_score = initial["score"].as_f64().expect("score");
    for (done, (kind, rule)) in [
        ("bad-signature", "signature"),
        ("expired", "expiry"),
        ("blocks-beyond-model", "block_range"),
        ("replayed-seqno", "seqno"),
    ]
    .into_iter()
    .enumerate()
    {
        let rejections = done as u64;
        let client_out = forge(&forger, kind);
        assert!(client_out.is_ok(), "forge {kind}: {client_out:?}");
        let row = wait_for(
            Duration::from_secs(15),
            &format!("a {rule} rejection"),
            || {
                let row = honest.peer(&forger.peer_id)?;
                (row["rejections"].as_u64() == Some(rejections + 1)).then_some(row)
            },
        );
        assert_eq!(row["last_rejection"], rule, "{row}");
        let score = row["score"].as_f64().expect("score");
        assert!(
            score < last_score,
            "score fell after {kind}: {last_score} -> {score}"
        );
        last_score = score;
        let gossip = row["gossip_score"].as_f64().unwrap_or(0.0);
        assert!(
            gossip < 0.0,
            "gossipsub's score of the sender fell too: {row}"
        );
        // Let gossipsub's invalid-message penalty decay, so the next forgery is heard.
        std::thread::sleep(Duration::from_millis(2500));
    }
    let log = honest.log();
    assert!(log.contains("rejected: signature does not verify"), "{log}");
    assert!(
        log.contains("rule=\"seqno\"") || log.contains("rule=seqno"),
        "{log}"
    );
}

/// Calls the forger's `POST /v1/dev/forge?kind=K` with its cookie.
fn forge(node: &TestNode, kind: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let addr =
        std::fs::read_to_string(node.data_dir.join("control.addr")).map_err(|e| e.to_string())?;
    let cookie =
        std::fs::read_to_string(node.data_dir.join("control.cookie")).map_err(|e| e.to_string())?;
    let mut s = std::net::TcpStream::connect(addr.trim()).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /v1/dev/forge?kind={kind} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        cookie.trim()
    )
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    if reply.starts_with("HTTP/1.1 200") {
        Ok(reply)
    } else {
        Err(reply)
    }
}

fn raw_get(addr: &str, path: &str, auth: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect control API");
    let auth = auth
        .map(|c| format!("Authorization: Bearer {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply
}

#[test]
fn control_api_needs_the_cookie_and_secrets_are_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::start("n", dir.path(), None, LOOPBACK);
    let addr = std::fs::read_to_string(node.data_dir.join("control.addr")).expect("control.addr");
    let addr = addr.trim();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "control API only on loopback: {addr}"
    );
    let cookie = std::fs::read_to_string(node.data_dir.join("control.cookie")).expect("cookie");
    for path in ["/v1/status", "/v1/peers", "/metrics"] {
        let reply = raw_get(addr, path, None);
        assert!(
            reply.starts_with("HTTP/1.1 401"),
            "{path} without cookie: {reply}"
        );
        let reply = raw_get(addr, path, Some("0000"));
        assert!(
            reply.starts_with("HTTP/1.1 401"),
            "{path} with a wrong cookie: {reply}"
        );
        let reply = raw_get(addr, path, Some(cookie.trim()));
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "{path} with the cookie: {reply}"
        );
    }
    let metrics = raw_get(addr, "/metrics", Some(cookie.trim()));
    assert!(metrics.contains("cocoon_peers_connected"), "{metrics}");
    assert!(
        metrics.contains("libp2p_"),
        "libp2p metrics exported: {metrics}"
    );
    for f in ["control.cookie", "node.key", "noise.key"] {
        let mode = std::fs::metadata(node.data_dir.join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f} has mode {:o}", mode & 0o777);
    }
    // The forge endpoint is off unless asked for.
    let reply = forge(&node, "expired").expect_err("forge disabled");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

#[test]
fn cli_says_plainly_when_no_node_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    for cmd in [&["peers"][..], &["status"], &["id"], &["peers", "--json"]] {
        let out = std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .args(cmd)
            .output()
            .expect("run cli");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no cocoon node is running"), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }
}

#[test]
fn devnet_comes_up_writes_devnet_json_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "devnet",
            "--model",
            "none",
            "--workers",
            "3",
            "--spares",
            "0",
            "--timeout",
            "50",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn devnet");
    let json_path = dir.path().join("devnet.json");
    let started = Instant::now();
    let devnet: serde_json::Value = wait_for(Duration::from_secs(55), "devnet.json", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("devnet exited early: {status}");
        }
        serde_json::from_slice(&std::fs::read(&json_path).ok()?).ok()
    });
    println!(
        "devnet of 4 nodes up in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let nodes = devnet["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    assert_eq!(nodes[0]["role"], "relay");
    assert_eq!(nodes[3]["blocks"], "20..30");
    // A node's data dir works with the CLI and lists the three others.
    let data_dir = nodes[1]["data_dir"].as_str().expect("data_dir");
    let out = std::process::Command::new(common::BIN)
        .args(["--data-dir", data_dir, "peers", "--json"])
        .output()
        .expect("cli");
    let peers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("peers JSON");
    assert_eq!(peers.len(), 3, "{peers:?}");
    // The devnet runs a local TON chain and funded every node's wallet on it.
    let ton = devnet["ton"].as_str().expect("devnet.json names the chain");
    assert!(ton.starts_with("http://127.0.0.1:"), "{ton}");
    let out = std::process::Command::new(common::BIN)
        .args(["--data-dir", data_dir, "wallet", "--json"])
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wallet: serde_json::Value = serde_json::from_slice(&out.stdout).expect("wallet JSON");
    assert_eq!(wallet["balance_nanoton"], "100000000000", "{wallet}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_for(Duration::from_secs(15), "devnet to stop", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "devnet exit status {status}");
    // Its nodes are gone: their control APIs no longer answer.
    let out = std::process::Command::new(common::BIN)
        .args(["--data-dir", data_dir, "status"])
        .output()
        .expect("cli");
    assert!(!out.status.success());
}

#[test]
fn a_worker_with_blocks_auto_takes_the_uncovered_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let boot = TestNode::start("boot", dir.path(), None, &relay_args());
    let b = boot.addr("/tcp/");
    let w1 = TestNode::start("w1", dir.path(), None, &worker_args(&b, "0..10", &[]));
    let w2 = TestNode::start("w2", dir.path(), None, &worker_args(&b, "20..30", &[]));
    // It listens to announcements for a few seconds, then picks where the mesh is weakest.
    let auto = TestNode::start("auto", dir.path(), None, &worker_args(&b, "auto", &[]));
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let blocks = loop {
        let s = auto.json(&["status"]);
        let blocks = s["blocks"].as_str().unwrap_or("").to_owned();
        if !blocks.is_empty() && blocks != "0..0" {
            break blocks;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the auto worker did not place itself:\n{}",
            auto.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(blocks, "10..20", "w1 holds 0..10 and w2 20..30");
    // And the others learn it.
    wait_for(Duration::from_secs(30), "w1 to see the placed span", || {
        let p = w1.peer(&auto.peer_id)?;
        (p["blocks"] == "10..20").then_some(())
    });
    let _ = w2;
}

//! Helpers shared by the integration tests: start `cocoon node` processes (optionally
//! inside a network namespace), call the CLI against them, wait for conditions.
#![allow(dead_code)]

pub mod chain;
pub mod infer_mesh;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cocoon");

/// A running `cocoon node`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct TestNode {
    pub name: String,
    pub data_dir: PathBuf,
    pub netns: Option<String>,
    pub child: Child,
    pub peer_id: String,
}

fn base_command(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    }
}

impl TestNode {
    /// Starts a node with `args` after `node`, waits for its control API, learns its id.
    pub fn start(name: &str, root: &Path, netns: Option<&str>, args: &[&str]) -> TestNode {
        let data_dir = root.join(name);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let log = std::fs::File::create(data_dir.join("node.log")).expect("log file");
        let child = base_command(netns)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("node")
            .args(args)
            .env("RUST_LOG", "info,cocoon=debug,libp2p_dcutr=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn cocoon node");
        let mut node = TestNode {
            name: name.to_owned(),
            data_dir,
            netns: netns.map(str::to_owned),
            child,
            peer_id: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("node {name} exited early ({status}):\n{}", node.log());
            }
            let out = node.cli(&["id"]);
            if out.status.success() {
                node.peer_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {name} did not start:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    /// Runs `cocoon --data-dir <its dir> ARGS` (in its namespace).
    pub fn cli(&self, args: &[&str]) -> Output {
        base_command(self.netns.as_deref())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("run cocoon cli")
    }

    /// `ARGS --json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "cocoon {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    pub fn peers(&self) -> Vec<serde_json::Value> {
        self.json(&["peers"])
            .as_array()
            .cloned()
            .expect("peers is an array")
    }

    pub fn peer(&self, id: &str) -> Option<serde_json::Value> {
        self.peers().into_iter().find(|p| p["peer_id"] == id)
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.data_dir.join("node.log")).unwrap_or_default();
        let mut start = text.len().saturating_sub(6000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Its first listen address matching `needle`, with `/p2p/<id>`.
    pub fn addr(&self, needle: &str) -> String {
        let s = self.json(&["status"]);
        let a = s["listen_addrs"]
            .as_array()
            .expect("listen_addrs")
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains(needle) && !a.contains("p2p-circuit"))
            .unwrap_or_else(|| panic!("{} has no {needle} address: {s}", self.name))
            .to_owned();
        format!("{a}/p2p/{}", self.peer_id)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child process id; touches no memory.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `node` lists every id in `others` with an announcement.
pub fn sees_all_announced(node: &TestNode, others: &[&str]) -> bool {
    let peers = node.peers();
    others.iter().all(|id| {
        peers
            .iter()
            .any(|p| p["peer_id"] == *id && !p["role"].is_null())
    })
}

/// Loopback-only flags: no mDNS (it would see other engineers' nodes on the host).
pub const LOOPBACK: &[&str] = &[
    "--listen",
    "/ip4/127.0.0.1/tcp/0",
    "--listen",
    "/ip4/127.0.0.1/udp/0/quic-v1",
    "--mdns",
    "false",
    "--autonat-delay",
    "3600",
];

pub const MODEL_ID: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// Runs `sh -c script`, returning whether it succeeded (output kept for messages).
pub fn sh(script: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Network namespaces created by a test, deleted (with everything in them) on drop.
pub struct Namespaces {
    pub names: Vec<String>,
}

impl Namespaces {
    /// Creates namespaces named `<prefix>-<name>`-style (caller passes full names), with
    /// loopback up. Returns `Err(why)` when namespaces cannot be made here.
    pub fn create(names: &[String]) -> Result<Namespaces, String> {
        let mut ns = Namespaces { names: Vec::new() };
        for n in names {
            let _ = sh(&format!("ip netns del {n} 2>/dev/null"));
            sh(&format!("ip netns add {n}"))?;
            ns.names.push(n.clone());
            sh(&format!("ip -n {n} link set lo up"))?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            // Kill whatever still runs inside, then delete (veth pairs go with it).
            let _ = sh(&format!("ip netns pids {n} | xargs -r kill -9 2>/dev/null"));
            let _ = sh(&format!("ip netns del {n}"));
        }
    }
}

/// A short unique suffix for namespace names (tests may run concurrently).
pub fn unique() -> String {
    format!("{:x}", std::process::id() % 0xffff)
}

/// The median of `v` (the mean of the middle two when their number is even).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

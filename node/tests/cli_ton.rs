//! `cocoon ton-local` and `cocoon wallet` end to end: the local chain on a real loopback
//! socket, a devnet wallet's balance read back through the toncenter API, and a fresh
//! wallet's key created 0600.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn ton_local_serves_funded_wallets_and_cocoon_wallet_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain_dir = dir.path().join("chain");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["--data-dir", chain_dir.to_str().expect("utf-8")])
        .args([
            "ton-local",
            "--listen",
            &listen,
            "--wallets",
            "2",
            "--balance-ton",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ton-local starts");
    let stdout = child.stdout.take().expect("stdout");
    let _guard = Killed(child);
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    let mut api = None;
    while api.is_none() && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.trim().strip_prefix("API") {
                    api = Some(url.trim().to_string());
                }
            }
            _ => break,
        }
    }
    let api = api.expect("ton-local printed its API URL");
    assert_eq!(api, format!("http://{listen}/api/v2"));

    // A node whose wallet key is devnet wallet 0's sees its 50 TON (less deploy fees).
    let funded = dir.path().join("funded");
    std::fs::create_dir_all(&funded).expect("dir");
    let key = chain_dir.join("ton-local/wallets/wallet-0.key");
    assert_eq!(
        std::fs::metadata(&key)
            .expect("devnet key")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    std::fs::copy(&key, funded.join("ton-wallet.key")).expect("copy key");
    let wallet = |data_dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(["--data-dir", data_dir.to_str().expect("utf-8")])
            .args(["wallet", "--ton-url", &api, "--json"])
            .output()
            .expect("cocoon wallet runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let report = wallet(&funded);
    let balance: u128 = report["balance_nanoton"]
        .as_str()
        .expect("balance")
        .parse()
        .expect("number");
    assert!(
        (49_000_000_000..=50_000_000_000).contains(&balance),
        "devnet wallet holds {balance} nanoton"
    );

    // A fresh node: a new key, mode 0600, an empty wallet.
    let fresh = dir.path().join("fresh");
    let report = wallet(&fresh);
    assert_eq!(report["balance_nanoton"], "0");
    let mode = std::fs::metadata(fresh.join("ton-wallet.key"))
        .expect("key created")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_ne!(
        report["address"],
        wallet(&funded)["address"],
        "different keys, different wallets"
    );
}

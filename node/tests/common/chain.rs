//! A real `cocoon ton-local` for the integration tests, and reading wallets and channels
//! through the CLI.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{BIN, TestNode, wait_for};

/// Nanotons in one toncoin.
pub const TON: u128 = 1_000_000_000;

/// A child process killed when dropped.
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cocoon ton-local` on a free port; returns it and its API URL.
pub fn start_chain(dir: &Path) -> (Killed, String) {
    let url_file = dir.join("api.url");
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["ton-local", "--listen", "127.0.0.1:0", "--wallets", "0"])
        .arg("--url-file")
        .arg(&url_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ton-local starts");
    let chain = Killed(child);
    let url = wait_for(Duration::from_secs(60), "ton-local's URL", || {
        std::fs::read_to_string(&url_file)
            .ok()
            .map(|s| s.trim().to_owned())
    });
    (chain, url)
}

pub fn post(url: &str, body: Value) -> Value {
    ureq::post(url)
        .send_json(&body)
        .expect("ton-local answers")
        .body_mut()
        .read_json::<Value>()
        .expect("JSON")
}

pub fn wallet(node: &TestNode, url: &str) -> (String, u128) {
    let w = node.json(&["wallet", "--ton-url", url]);
    let balance = w["balance_nanoton"]
        .as_str()
        .expect("balance")
        .parse()
        .expect("number");
    (
        w["raw_address"].as_str().expect("address").to_owned(),
        balance,
    )
}

pub fn channels(node: &TestNode) -> Vec<Value> {
    node.json(&["channels"])
        .as_array()
        .cloned()
        .expect("an array")
}

pub fn row(node: &TestNode, id: &str) -> Value {
    channels(node)
        .into_iter()
        .find(|r| r["channel_id"] == id)
        .unwrap_or_else(|| panic!("{} does not list channel {id}", node.name))
}

/// Sends `amount` nanoton to `address` from ton-local's faucet.
pub fn fund(url: &str, address: &str, amount: u128) {
    let funded = post(
        &format!("{url}/admin/fund"),
        json!({"address": address, "amount": amount.to_string()}),
    );
    assert_eq!(funded["ok"], true, "{funded}");
}

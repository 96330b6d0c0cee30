//! Paying per token over a real mesh and a real `cocoon ton-local`: three workers that
//! charge serve the default model to a client with a chain. The client opens a channel
//! to each on demand, pays after every result, and the tokens are still exactly the
//! reference's. Both sides then list the same earnings per worker, priced from the
//! tokens each counted. One worker closes its channel uncooperatively with the client's
//! newest per-token state: the contract accepts it, and after the quarantine the payout
//! it sends the worker is what that state says (less the message's forwarding fee).
//! Between the two, the client is killed with SIGKILL mid-generation and restarted, and
//! then a worker is: both sides' records still agree, nothing committed is lost and
//! nothing is paid twice. A client without a chain is refused by charging workers.

mod common;

use std::time::Duration;

use common::chain::{TON, channels, fund, post, start_chain, wallet};
use common::infer_mesh::{
    expected, generate_until_text, model_path, reference, span, start_mesh, token_ids,
    wait_until_ready,
};
use common::{LOOPBACK, TestNode, wait_for};
use serde_json::{Value, json};

/// Prices high enough that a payout stands well above fees: 0.01 and 0.02 TON.
const PRICE_PROMPT: u128 = 10_000_000;
const PRICE_COMPLETION: u128 = 20_000_000;

fn num(v: &Value) -> u128 {
    v.as_u64()
        .map(u128::from)
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The one channel row of `node` with `peer`.
fn channel_with(node: &TestNode, peer: &str) -> Value {
    let rows: Vec<Value> = channels(node)
        .into_iter()
        .filter(|r| r["peer"] == peer)
        .collect();
    assert_eq!(rows.len(), 1, "{} with {peer}: {rows:?}", node.name);
    rows[0].clone()
}

#[test]
fn a_completion_is_paid_per_token_and_the_contract_settles_the_states() {
    let chain_dir = tempfile::tempdir().expect("tempdir");
    let (_chain, url) = start_chain(chain_dir.path());
    let prompt_price = PRICE_PROMPT.to_string();
    let completion_price = PRICE_COMPLETION.to_string();
    let paid = |blocks: &'static str| {
        let mut v = span(blocks);
        v.extend([
            "--ton-url",
            url.as_str(),
            "--price-prompt",
            prompt_price.as_str(),
            "--price-completion",
            completion_price.as_str(),
        ]);
        v
    };
    let mut mesh = start_mesh(
        &[
            ("w1", paid("0..10")),
            ("w2", paid("10..20")),
            ("w3", paid("20..30")),
        ],
        &["--ton-url", url.as_str()],
    );
    let (client_wallet, _) = wallet(&mesh.client, &url);
    fund(&url, &client_wallet, 10 * TON);

    let reference = reference();
    let case = &reference["prompts"][0];
    let max_tokens = 8;
    let prompt = case["prompt"].as_str().expect("prompt");
    let summary = mesh.generate(prompt, max_tokens);
    let want = expected(case);
    assert_eq!(token_ids(&summary), want[..max_tokens], "{summary}");
    let prompt_tokens = summary["prompt_token_ids"]
        .as_array()
        .expect("prompt ids")
        .len() as u64;

    // Both sides of every channel agree, once the last payment has reached the worker.
    for w in &mesh.workers {
        let theirs = wait_for(
            Duration::from_secs(30),
            "the worker to hold the client's last payment",
            || {
                let c = channel_with(&mesh.client, &w.peer_id);
                let p = channel_with(w, &mesh.client.peer_id);
                (p["seqno"] == c["seqno"]).then_some((c, p))
            },
        );
        let (c, p) = theirs;
        assert_eq!(c["role"], "payer", "{c}");
        assert_eq!(p["role"], "payee", "{p}");
        assert_eq!(c["address"], p["address"]);
        let sent = num(&c["sent_nanoton"]);
        assert_eq!(sent, num(&p["received_nanoton"]), "{c}\n{p}");
        assert_eq!(c["prompt_tokens"], p["prompt_tokens"], "{c}\n{p}");
        assert_eq!(c["completion_tokens"], p["completion_tokens"], "{c}\n{p}");
        // The prompt in one forward; every later token in one forward each.
        assert_eq!(c["prompt_tokens"], prompt_tokens, "{c}");
        let completion = c["completion_tokens"].as_u64().expect("count");
        assert!(
            (max_tokens as u64 - 1..=max_tokens as u64).contains(&completion),
            "{c}"
        );
        let price =
            u128::from(prompt_tokens) * PRICE_PROMPT + u128::from(completion) * PRICE_COMPLETION;
        assert_eq!(sent, price, "{c}");
        // One signed state per forward.
        assert_eq!(c["seqno"], 1 + completion, "{c}");
    }

    // kill -9 of the client mid-generation, then a restart on the same data dir: the
    // records resume, the newest state reaches each worker, nothing is paid twice.
    let client_args = |boot: &str| -> Vec<String> {
        let model = model_path();
        let mut v: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--bootstrap",
                boot,
                "--model",
                model.to_str().expect("utf-8"),
                "--announce-interval",
                "3",
                "--role",
                "client",
                "--ton-url",
                url.as_str(),
            ]
            .map(str::to_owned),
        );
        v
    };
    let boot = mesh.boot.addr("/tcp/");
    let mut generate = generate_until_text(&mesh.client, prompt, 24, 1);
    mesh.client.child.kill().expect("kill -9 the client");
    let _ = generate.child.wait();
    let _ = mesh.client.child.wait();
    // The dead client's API address must not pass for the new one's.
    std::fs::remove_file(mesh.client.data_dir.join("api.addr")).expect("api.addr");
    let args = client_args(&boot);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mesh.client = TestNode::start("client", &mesh.root, None, &args);
    wait_until_ready(&mesh.client, &mesh.workers);
    let again = mesh.generate(prompt, 2);
    assert_eq!(token_ids(&again).len(), 2, "{again}");
    for w in &mesh.workers {
        let (c, p) = wait_for(
            Duration::from_secs(30),
            "the worker to hold the restarted client's last payment",
            || {
                let c = channel_with(&mesh.client, &w.peer_id);
                let p = channel_with(w, &mesh.client.peer_id);
                (p["seqno"] == c["seqno"]).then_some((c, p))
            },
        );
        assert_eq!(c["address"], p["address"], "still one channel per worker");
        let sent = num(&c["sent_nanoton"]);
        assert_eq!(sent, num(&p["received_nanoton"]), "{c}\n{p}");
        let tokens = |r: &Value, k: &str| u128::from(r[k].as_u64().expect("count"));
        // The client paid exactly what it counted...
        assert_eq!(
            sent,
            tokens(&c, "prompt_tokens") * PRICE_PROMPT
                + tokens(&c, "completion_tokens") * PRICE_COMPLETION,
            "{c}"
        );
        // ...and the worker served at most the one forward in flight at the kill beyond it.
        let unpaid = (tokens(&p, "prompt_tokens") - tokens(&c, "prompt_tokens")) * PRICE_PROMPT
            + (tokens(&p, "completion_tokens") - tokens(&c, "completion_tokens"))
                * PRICE_COMPLETION;
        assert!(unpaid <= 64 * PRICE_PROMPT, "{c}\n{p}");
    }

    // kill -9 of a worker mid-generation (no spare holds its span, so the generation
    // fails), then a restart on the same data dir: the worker resumes its records, takes
    // the client's next state on top of the newest it committed, and the two sides
    // agree again. It never counts the client as owing for tokens it did not serve.
    let w2_args = {
        let model = model_path();
        let mut v: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--bootstrap",
                boot.as_str(),
                "--model",
                model.to_str().expect("utf-8"),
                "--announce-interval",
                "3",
            ]
            .map(str::to_owned),
        );
        v.extend(paid("10..20").into_iter().map(str::to_owned));
        v
    };
    let w2_id = mesh.workers[1].peer_id.clone();
    let before_kill = channel_with(&mesh.client, &w2_id);
    let mut generate = generate_until_text(&mesh.client, prompt, 24, 1);
    mesh.workers[1].child.kill().expect("kill -9 the worker");
    let _ = mesh.workers[1].child.wait();
    // The client gives up on the lost span (nothing else serves it) or times out.
    wait_for(
        Duration::from_secs(90),
        "the broken generation to end",
        || generate.child.try_wait().ok().flatten(),
    );
    let args: Vec<&str> = w2_args.iter().map(String::as_str).collect();
    mesh.workers[1] = TestNode::start("w2", &mesh.root, None, &args);
    assert_eq!(
        mesh.workers[1].peer_id, w2_id,
        "same identity after the restart"
    );
    // Straight after the restart: what it committed before the kill is all there, and it
    // holds no state the client did not send.
    let resumed = channel_with(&mesh.workers[1], &mesh.client.peer_id);
    let sent_now = channel_with(&mesh.client, &w2_id);
    assert_eq!(resumed["address"], before_kill["address"], "{resumed}");
    assert!(
        num(&resumed["received_nanoton"]) >= num(&before_kill["sent_nanoton"]),
        "a committed payment was lost: {resumed}\n{before_kill}"
    );
    assert!(
        num(&resumed["received_nanoton"]) <= num(&sent_now["sent_nanoton"]),
        "{resumed}\n{sent_now}"
    );
    wait_until_ready(&mesh.client, &mesh.workers);
    let after = mesh.generate(prompt, 2);
    assert_eq!(token_ids(&after), want[..2], "{after}");
    let (c, p) = wait_for(
        Duration::from_secs(30),
        "the restarted worker to hold the client's last payment",
        || {
            let c = channel_with(&mesh.client, &w2_id);
            let p = channel_with(&mesh.workers[1], &mesh.client.peer_id);
            (p["seqno"] == c["seqno"]).then_some((c, p))
        },
    );
    assert_eq!(
        c["address"], p["address"],
        "still one channel with the worker"
    );
    assert_eq!(
        num(&c["sent_nanoton"]),
        num(&p["received_nanoton"]),
        "{c}\n{p}"
    );
    assert!(
        num(&c["sent_nanoton"]) > num(&before_kill["sent_nanoton"]),
        "the generations after the kill were paid: {c}"
    );

    // The worker of blocks 0..10 closes uncooperatively with the client's newest state.
    let w1 = &mesh.workers[0];
    let row = channel_with(w1, &mesh.client.peer_id);
    let earned = num(&row["received_nanoton"]);
    let id = row["channel_id"].as_str().expect("id").to_owned();
    let address = row["address"].as_str().expect("address").to_owned();
    let (w1_wallet, _) = wallet(w1, &url);
    fund(&url, &w1_wallet, TON);
    let forced = w1.json(&["channel", "close", &id, "--force"]);
    assert_eq!(forced["kind"], "uncooperative", "{forced}");
    assert_eq!(channel_with(w1, &mesh.client.peer_id)["state"], "closing");
    let moved = post(
        &format!("{url}/admin/advanceTime"),
        json!({"seconds": 3600 + 1800 + 1}),
    );
    assert_eq!(moved["ok"], true, "{moved}");
    wait_for(
        Duration::from_secs(60),
        "a watcher to finish the forced close",
        || (channel_with(w1, &mesh.client.peer_id)["state"] == "closed").then_some(()),
    );
    // A client without a chain cannot use workers that charge: a clear refusal.
    let mut free_args: Vec<String> = client_args(&boot);
    free_args.truncate(free_args.len() - 2);
    let free_args: Vec<&str> = free_args.iter().map(String::as_str).collect();
    let free_rider = TestNode::start("free-rider", &mesh.root, None, &free_args);
    wait_until_ready(&free_rider, &mesh.workers[1..]);
    let out = free_rider.cli(&["generate", "--prompt", prompt, "--max-tokens", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a free rider was served");
    assert!(err.contains("PaymentRequired"), "{err}");

    // The payout the channel sent the worker's wallet.
    let txs = ureq::get(&format!(
        "{url}/getTransactions?address={w1_wallet}&limit=20"
    ))
    .call()
    .expect("getTransactions")
    .body_mut()
    .read_json::<Value>()
    .expect("JSON");
    let payout = txs["result"]
        .as_array()
        .expect("transactions")
        .iter()
        .find(|t| t["in_msg"]["source"] == address.as_str())
        .unwrap_or_else(|| panic!("no payout from {address}: {txs}"));
    let value = num(&payout["in_msg"]["value"]);
    // Mode 2 pays the forwarding fee out of the value: at most a few milli-TON.
    assert!(
        value <= earned && value + 10_000_000 > earned,
        "paid {value}, earned {earned}: {payout}"
    );
}

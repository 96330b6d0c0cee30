//! Payment channels between two real nodes on a real `cocoon ton-local`: a client opens
//! a channel to a worker from its announcement, both list it, it closes cooperatively
//! (the worker co-signs over `/cocoon/channel/1`); then a second channel is closed
//! uncooperatively by the worker, and after the quarantine the nodes' watchers finish it.
//! The deposits come back to the client's wallet each time.

mod common;

use std::time::Duration;

use common::chain::{TON, channels, post, row, start_chain, wallet};
use common::{LOOPBACK, MODEL_ID, TestNode, sees_all_announced, wait_for};
use serde_json::json;

fn fails_with(node: &TestNode, args: &[&str], needle: &str) {
    let out = node.cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn channels_open_list_and_close_cooperatively_and_by_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_chain, url) = start_chain(&dir.path().join("chain"));
    let mut args: Vec<&str> = LOOPBACK.to_vec();
    args.extend(["--ton-url", url.as_str(), "--announce-interval", "1"]);
    let mut client_args = args.clone();
    client_args.extend(["--role", "client"]);
    let client = TestNode::start("client", dir.path(), None, &client_args);
    let boot = client.addr("/tcp/");
    let mut worker_args = args.clone();
    worker_args.extend([
        "--role",
        "worker",
        "--model-id",
        MODEL_ID,
        "--bootstrap",
        boot.as_str(),
    ]);
    let worker = TestNode::start("worker", dir.path(), None, &worker_args);

    // Fund the client's wallet through the faucet; the worker's stays empty.
    let (client_wallet, zero) = wallet(&client, &url);
    assert_eq!(zero, 0);
    // `cocoon wallet` without --ton-url asks the chain the node runs with.
    assert_eq!(client.json(&["wallet"])["raw_address"], client_wallet);
    let funded = post(
        &format!("{url}/admin/fund"),
        json!({"address": client_wallet, "amount": (10 * TON).to_string()}),
    );
    assert_eq!(funded["ok"], true, "{funded}");
    wait_for(
        Duration::from_secs(30),
        "the nodes to see each other",
        || {
            (sees_all_announced(&client, &[&worker.peer_id])
                && sees_all_announced(&worker, &[&client.peer_id]))
            .then_some(())
        },
    );
    // Each announces its wallet.
    let (worker_wallet, _) = wallet(&worker, &url);
    let ann = client.json(&["peer", &worker.peer_id]);
    assert_eq!(ann["announcement"]["ton_wallet"], worker_wallet, "{ann}");

    // Refusals are plain errors.
    fails_with(
        &client,
        &["channel", "open", &worker.peer_id, "--deposit", "50"],
        "opening needs",
    );
    fails_with(
        &client,
        &["channel", "open", &client.peer_id, "--deposit", "1"],
        "no announcement",
    );
    fails_with(
        &client,
        &["channel", "open", &worker.peer_id, "--deposit", "1.x"],
        "not an amount",
    );
    fails_with(&client, &["channel", "close", "abcd"], "no channel abcd");
    assert!(channels(&client).is_empty());

    // Open: the client pays, the worker is paid; both list the same channel.
    let opened = client.json(&["channel", "open", &worker.peer_id, "--deposit", "2"]);
    let id = opened["channel_id"].as_str().expect("id").to_owned();
    assert_eq!(opened["state"], "open", "{opened}");
    let (c, w) = (row(&client, &id), row(&worker, &id));
    for (r, role, peer) in [
        (&c, "payer", &worker.peer_id),
        (&w, "payee", &client.peer_id),
    ] {
        assert_eq!(r["role"], role, "{r}");
        assert_eq!(r["peer"], peer.as_str(), "{r}");
        assert_eq!(r["state"], "open", "{r}");
        assert_eq!(r["deposit_nanoton"], json!(2 * TON), "{r}");
        assert_eq!(r["sent_nanoton"], 0, "{r}");
        assert_eq!(r["received_nanoton"], 0, "{r}");
        assert_eq!(r["seqno"], 0, "{r}");
        assert_eq!(r["balances_nanoton"], json!([2 * TON, 0]), "{r}");
    }
    assert_eq!(c["address"], w["address"]);
    let (_, after_open) = wallet(&client, &url);
    assert!(
        after_open < 8 * TON,
        "the deposit left the wallet: {after_open}"
    );
    // Both nodes keep it in their redb channel store.
    assert!(worker.data_dir.join("channels.redb").exists());
    assert!(client.data_dir.join("channels.redb").exists());

    // Cooperative close from the client: the worker co-signs, the deposit comes back.
    let closed = client.json(&["channel", "close", &id]);
    assert_eq!(closed["kind"], "cooperative", "{closed}");
    assert_eq!(row(&client, &id)["state"], "closed");
    assert_eq!(row(&worker, &id)["state"], "closed");
    // Closed is closed: a second close is refused before anything is sent.
    fails_with(&worker, &["channel", "close", &id], "not open");
    // Closed is closed: a second close is refused before anything is sent.
    fails_with(&worker, &["channel", "close", &id], "not open");
    let (_, after_close) = wallet(&client, &url);
    assert!(
        after_close > after_open + 19 * TON / 10,
        "deposit returned: {after_open} -> {after_close}"
    );

    // A second channel, closed uncooperatively by the worker.
    let second = client.json(&["channel", "open", &worker.peer_id, "--deposit", "1.5"]);
    let id2 = second["channel_id"].as_str().expect("id").to_owned();
    // The worker pays the gas from its own wallet.
    let (worker_wallet, _) = wallet(&worker, &url);
    post(
        &format!("{url}/admin/fund"),
        json!({"address": worker_wallet, "amount": TON.to_string()}),
    );
    let forced = worker.json(&["channel", "close", &id2, "--force"]);
    assert_eq!(forced["kind"], "uncooperative", "{forced}");
    assert_eq!(row(&client, &id2)["state"], "closing");
    assert_eq!(row(&worker, &id2)["state"], "closing");
    let (_, during) = wallet(&client, &url);
    // After the quarantine and the conditional-close window, a watcher finishes it.
    let moved = post(
        &format!("{url}/admin/advanceTime"),
        json!({"seconds": 3600 + 1800 + 1}),
    );
    assert_eq!(moved["ok"], true, "{moved}");
    wait_for(
        Duration::from_secs(30),
        "a watcher to finish the forced close",
        || (row(&client, &id2)["state"] == "closed").then_some(()),
    );
    assert_eq!(row(&worker, &id2)["state"], "closed");
    let (_, finished) = wallet(&client, &url);
    assert!(
        finished > during + 14 * TON / 10,
        "deposit returned after the forced close: {during} -> {finished}"
    );
    let log = format!("{}{}", client.log(), worker.log());
    assert!(log.contains("finished an uncooperative close"), "{log}");
}

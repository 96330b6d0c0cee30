//! `cocoon ton-local` over real sockets on 127.0.0.1, driven by the toncenter client:
//! devnet wallets created (key files 0600), funded and deployed; toncenter's JSON shapes
//! and errors; transfers, a refused replay, transactions; the clock moved by the admin
//! endpoint; the whole chain surviving a restart from its redb file. Then the payment
//! channel end to end over HTTP: opened through wallets, checked by the worker
//! (`verify_channel_on_chain`, each refusal), paid off chain, closed uncooperatively by
//! the client with a stale state, challenged by the worker's watcher from its
//! `ChannelStore`, and finished with the cheater fined.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocoon_protocol::channel::*;
use cocoon_ton::address::raw;
use cocoon_ton::channel_ops::{channel_message, deploy_and_top_up, top_up};
use cocoon_ton::client::{
    ChannelCheckError, ClientConfig, ClientError, ExpectedChannel, TonClient,
    verify_channel_on_chain,
};
use cocoon_ton::local_chain::{LocalChain, load_channel_code, load_ton_config, load_wallet_code};
use cocoon_ton::onchain::{chain_now, open_channel, send_from_wallet};
use cocoon_ton::server::{DevnetWallet, RunningServer, ServerConfig, ServerError, serve};
use cocoon_ton::store::{ChannelRecord, ChannelStore, Role};
use cocoon_ton::wallet::{Transfer, WalletV4, read_key_file};
use cocoon_ton::watcher::{WatchOutcome, Watcher};
use serde_json::Value;
use tycho_types::models::StdAddr;

const TON: u128 = 1_000_000_000;
const START: u32 = 1_760_000_000;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cocoon-ton-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn config(dir: &Path, names: &[&str]) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db_path: dir.join("chain.redb"),
        start_time: Some(START),
        wallets: names
            .iter()
            .map(|n| DevnetWallet {
                name: n.to_string(),
                key_file: dir.join(format!("{n}.key")),
                balance: 100 * TON,
            })
            .collect(),
    }
}

fn wallet_from(dir: &Path, name: &str) -> WalletV4 {
    let key = read_key_file(&dir.join(format!("{name}.key"))).expect("key file");
    WalletV4::new(load_wallet_code().expect("wallet code"), key)
}

fn client(s: &RunningServer) -> TonClient {
    TonClient::new(ClientConfig::new(s.url())).expect("client")
}

async fn raw_call(url: &str, body: Option<&str>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let req = match body {
        Some(b) => http
            .post(url)
            .header("content-type", "application/json")
            .body(b.to_string()),
        None => http.get(url),
    };
    let resp = req.send().await.expect("http");
    let status = resp.status().as_u16();
    let v: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    (status, v)
}

#[tokio::test]
async fn server_speaks_toncenter_and_keeps_state_across_restart() {
    let dir = tmpdir("basic");
    let server = serve(config(&dir, &["alice", "bob"])).await.expect("serve");
    assert!(server.addr.ip().is_loopback());
    let c = client(&server);
    let (alice, bob) = (wallet_from(&dir, "alice"), wallet_from(&dir, "bob"));
    let (a, b) = (alice.address().expect("a"), bob.address().expect("b"));
    assert_eq!(server.wallets[0], ("alice".to_string(), a.clone()));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("alice.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key files are 0600");
    }

    let (seqno, now) = c.get_masterchain_info().await.expect("mc info");
    assert!(seqno >= 2);
    assert_eq!(now, Some(START));
    let info = c.get_address_information(&a).await.expect("info");
    assert_eq!(info.state, "active");
    assert_eq!(
        hex::encode(info.code.expect("code").repr_hash().0),
        cocoon_ton::local_chain::WALLET_V4R2_CODE_HASH
    );
    assert!(
        info.balance < 100 * TON && info.balance > 99 * TON,
        "{}",
        info.balance
    );
    assert_eq!(
        c.get_address_balance(&a).await.expect("balance"),
        info.balance
    );
    assert_eq!(c.wallet_seqno(&a).await.expect("seqno"), 1);
    let pk = c
        .run_get_method(&a, "get_public_key", &[])
        .await
        .expect("pk");
    assert_eq!(pk.exit_code, 0);
    assert_eq!(pk.stack[0].as_bytes32(), Some(alice.public_key()));
    // A get method of an account that does not exist: toncenter's -13.
    let nobody = StdAddr::new(0, tycho_types::cell::HashBytes([5; 32]));
    assert_eq!(
        c.run_get_method(&nobody, "seqno", &[])
            .await
            .expect("runs")
            .exit_code,
        -13
    );
    assert_eq!(c.wallet_seqno(&nobody).await.expect("seqno"), 0);

    // Alice sends Bob 1 TON.
    let bob_before = c.get_address_balance(&b).await.expect("bob");
    let boc = alice
        .external_boc(1, START + 60, &[Transfer::new(b.clone(), TON, true)], false)
        .expect("boc");
    let hash = c.send_boc_return_hash(&boc).await.expect("sent");
    assert_eq!(
        hash,
        tycho_types::boc::Boc::decode(&boc)
            .expect("boc")
            .repr_hash()
            .0
    );
    let txs = c.get_transactions(&b, 5).await.expect("txs");
    assert_eq!(txs[0].in_source, raw(&a));
    assert_eq!(txs[0].in_value, TON);
    assert_eq!(
        c.get_address_balance(&b).await.expect("bob"),
        bob_before + TON - txs[0].fee
    );
    let a_txs = c.get_transactions(&a, 10).await.expect("txs");
    assert_eq!(a_txs[0].out, vec![(raw(&b), TON)]);
    assert!(
        a_txs.len() >= 3 && a_txs.windows(2).all(|w| w[0].lt > w[1].lt),
        "newest first"
    );
    // Replayed: not accepted (toncenter's 500 with the liteserver's message).
    match c.send_boc(&boc).await {
        Err(ClientError::Api {
            code: 500, error, ..
        }) => assert!(error.contains("not accepted")),
        other => panic!("replay must be refused, got {other:?}"),
    }
    assert_eq!(c.wallet_seqno(&a).await.expect("seqno"), 2);

    // Malformed requests: toncenter's error shape, never a crash.
    let url = server.url();
    for (path, body, want) in [
        ("sendBoc", Some("not json"), 400),
        ("sendBoc", Some(r#"{"boc":"!!!"}"#), 400),
        ("sendBoc", Some(r#"{"boc":"te6ccgEBAQEAAgAAAA=="}"#), 400),
        ("sendBoc", Some(r#"{"boc":"AAAA"}"#), 400),
        (
            "runGetMethod",
            Some(r#"{"address":"0:12","method":"seqno"}"#),
            400,
        ),
        (
            "runGetMethod",
            Some(r#"{"address":"0:00","method":"seqno","stack":[["cont",{}]]}"#),
            400,
        ),
        ("getAddressInformation?address=nope", None, 400),
        ("getTransactions?address=0:zz&limit=x", None, 400),
        ("getTransactions", None, 400),
        ("noSuchMethod", None, 404),
        ("admin/advanceTime", Some(r#"{"seconds":-5}"#), 400),
    ] {
        let (status, v) = raw_call(&format!("{url}/{path}"), body).await;
        assert_eq!(status, want, "{path} {body:?}: {v}");
        assert_eq!(v["ok"], Value::Bool(false), "{path}");
        assert_eq!(v["code"], Value::from(want), "{path}");
        assert!(v["error"].is_string(), "{path}");
    }

    // The local clock moves only by the admin endpoint.
    assert_eq!(c.advance_time(100).await.expect("advance"), START + 100);
    assert_eq!(c.fund(&nobody, 5 * TON).await.expect("fund"), 5 * TON);
    let a_balance = c.get_address_balance(&a).await.expect("a");
    server.shutdown().await;

    // Restart from the same file: clock, balances, seqnos and history are kept.
    let server = serve(config(&dir, &["alice", "bob"]))
        .await
        .expect("restart");
    let c = client(&server);
    assert_eq!(
        c.get_masterchain_info().await.expect("mc").1,
        Some(START + 100)
    );
    assert_eq!(c.get_address_balance(&a).await.expect("a"), a_balance);
    assert_eq!(c.get_address_balance(&nobody).await.expect("n"), 5 * TON);
    assert_eq!(c.wallet_seqno(&a).await.expect("seqno"), 2);
    assert_eq!(
        c.get_transactions(&a, 10).await.expect("txs").len(),
        a_txs.len()
    );
    // Still refuses the replay after the restart.
    assert!(c.send_boc(&boc).await.is_err());
    server.shutdown().await;

    // Only loopback.
    let mut bad = config(&dir, &[]);
    bad.listen = "0.0.0.0:0".parse().expect("addr");
    assert!(matches!(serve(bad).await, Err(ServerError::NotLoopback(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

const PRICE: Price = Price {
    per_prompt_token: NanoTon(1_000),
    per_completion_token: NanoTon(3_000),
};

/// Prices high enough that the worker's payout exceeds the payout message's forward fee
/// (a payout below it is not delivered: the contract's send fails silently and side A,
/// paid last with mode 128, takes it).
const CLOSE_PRICE: Price = Price {
    per_prompt_token: NanoTon(1_000_000),
    per_completion_token: NanoTon(3_000_000),
};

fn serve_and_pay(c: &mut Payer, w: &mut Payee, n: u32) {
    for _ in 0..n {
        let u = Usage {
            prompt_tokens: 7,
            completion_tokens: 13,
        };
        w.authorize(u).expect("within credit");
        c.record_served(u).expect("within budget");
        w.accept_payment(c.pay_owed().expect("sign"))
            .expect("accept");
    }
}

#[tokio::test]
async fn watcher_challenges_a_stale_close_over_http_and_the_cheater_is_fined() {
    let dir = tmpdir("watch");
    let server = serve(config(&dir, &["client", "worker"]))
        .await
        .expect("serve");
    let c = client(&server);
    let (wc, ww) = (wallet_from(&dir, "client"), wallet_from(&dir, "worker"));
    let (addr_c, addr_w) = (wc.address().expect("c"), ww.address().expect("w"));
    let (dep_a, dep_b, fine) = (3 * TON, TON / 2, TON / 10);
    let closing = ClosingConfig {
        quarantine_duration: 3600,
        misbehavior_fine: NanoTon(fine),
        conditional_close_duration: 1800,
    };
    let std = |a: &StdAddr| StdAddress {
        workchain: a.workchain,
        account: a.address.0,
    };
    let id = ChannelId(0xc0c0_1234);
    let storage = ChannelStorage::initial(
        wc.public_key(),
        ww.public_key(),
        id,
        closing,
        PaymentConfig {
            excess_fee: NanoTon(TON / 100),
            dest_a: std(&addr_c),
            dest_b: std(&addr_w),
        },
    );
    let gas = TON / 10;
    let (channel, t) = deploy_and_top_up(
        load_channel_code().expect("code"),
        &storage,
        Side::A,
        NanoTon(dep_a),
        gas,
    )
    .expect("deploy");
    let now = chain_now(&c).await.expect("now");
    send_from_wallet(&c, &wc, &[t], now)
        .await
        .expect("deploy + top up");
    let expected = ExpectedChannel {
        channel_id: id,
        key_a: wc.public_key(),
        key_b: ww.public_key(),
        payer: Side::A,
        deposit: NanoTon(dep_a),
        payee_dest: std(&addr_w),
    };
    // Not inited yet: the worker refuses to serve.
    assert!(matches!(
        verify_channel_on_chain(&c, &channel, &expected).await,
        Err(ChannelCheckError::NotOpen(0))
    ));
    let t = top_up(&channel, Side::B, NanoTon(dep_b), gas).expect("top up");
    send_from_wallet(&c, &ww, &[t], now)
        .await
        .expect("top up B");
    let init = ChannelMessage::Init(
        OneSigned::sign(
            Side::A,
            wc.signing_key(),
            InitBody {
                channel_id: id,
                balance_a: NanoTon(dep_a),
                balance_b: NanoTon(dep_b),
            },
        )
        .expect("sign"),
    );
    let t = channel_message(&channel, &init, gas).expect("init");
    send_from_wallet(&c, &wc, &[t], now).await.expect("init");

    // The worker's checks before serving.
    let on_chain = verify_channel_on_chain(&c, &channel, &expected)
        .await
        .expect("valid");
    assert_eq!(
        (on_chain.balance_a, on_chain.balance_b),
        (NanoTon(dep_a), NanoTon(dep_b))
    );
    let mut e = expected.clone();
    e.key_a = [1; 32];
    assert!(matches!(
        verify_channel_on_chain(&c, &channel, &e).await,
        Err(ChannelCheckError::WrongKeys)
    ));
    let mut e = expected.clone();
    e.deposit = NanoTon(dep_a + 1);
    assert!(matches!(
        verify_channel_on_chain(&c, &channel, &e).await,
        Err(ChannelCheckError::DepositTooLow { found, claimed }) if found == dep_a && claimed == dep_a + 1
    ));
    // Payouts routed elsewhere (e.g. back to the client): refused.
    let mut e = expected.clone();
    e.payee_dest = std(&addr_c);
    assert!(matches!(
        verify_channel_on_chain(&c, &channel, &e).await,
        Err(ChannelCheckError::WrongPayoutAddress { .. })
    ));
    let mut e = expected.clone();
    e.channel_id = ChannelId(1);
    assert!(matches!(
        verify_channel_on_chain(&c, &channel, &e).await,
        Err(ChannelCheckError::WrongChannelId { .. })
    ));
    assert!(matches!(
        verify_channel_on_chain(&c, &addr_c, &expected).await,
        Err(ChannelCheckError::WrongCode { .. })
    ));
    let nowhere = StdAddr::new(0, tycho_types::cell::HashBytes([9; 32]));
    assert!(matches!(
        verify_channel_on_chain(&c, &nowhere, &expected).await,
        Err(ChannelCheckError::NotDeployed(_))
    ));

    // Off chain: 10 payments; the client keeps its state #3.
    let params = ChannelParams {
        channel_id: id,
        key_a: wc.signing_key().verifying_key(),
        key_b: ww.signing_key().verifying_key(),
        deposit_a: NanoTon(dep_a),
        deposit_b: NanoTon(dep_b),
        closing,
    };
    let mut payer = Payer::new(
        params.clone(),
        Side::A,
        wc.signing_key().clone(),
        PRICE,
        NanoTon(TON),
        SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
    )
    .expect("payer");
    let mut payee = Payee::new(
        params.clone(),
        Side::B,
        ww.signing_key().clone(),
        PRICE,
        NanoTon(100_000),
        None,
    )
    .expect("payee");
    let worker_state = payee.own_state().expect("worker state");
    serve_and_pay(&mut payer, &mut payee, 3);
    let stale =
        state::sign_state(id, wc.signing_key(), payer.latest().clone(), None).expect("sign");
    serve_and_pay(&mut payer, &mut payee, 7);
    let best = payee.best_state().expect("best").clone();
    assert_eq!(best.state.body.seqno, SeqNo(10));
    let store = Arc::new(ChannelStore::open(&dir.join("worker-channels.redb")).expect("store"));
    store
        .commit(&ChannelRecord::new(Role::Payee, Side::B, &best, payee.served()).expect("record"))
        .expect("commit");

    let watcher = Watcher::new(
        c.clone(),
        ww.clone(),
        ww.signing_key().clone(),
        store.clone(),
    );
    assert_eq!(
        watcher.check(&channel).await.expect("check"),
        WatchOutcome::Open
    );

    // The client cheats: uncooperative close with its stale state #3.
    let start = messages::StartCloseBody {
        channel_id: id,
        sch_a: stale,
        sch_b: worker_state,
    };
    let msg = ChannelMessage::StartUncooperativeClose(
        OneSigned::sign(Side::A, wc.signing_key(), start).expect("sign"),
    );
    let t = channel_message(&channel, &msg, gas).expect("start");
    send_from_wallet(&c, &wc, &[t], now)
        .await
        .expect("start close");
    let q = c
        .channel_data(&channel)
        .await
        .expect("data")
        .expect("deployed")
        .quarantine
        .expect("q");
    assert_eq!(
        (q.state_a.seqno, q.committed_by_a, q.challenged),
        (SeqNo(3), true, Some(false))
    );

    // Half an hour later the worker's watcher loop (polling every 20 ms) sees it and
    // challenges with #10.
    c.advance_time(1800).await.expect("advance");
    let looping = Arc::new(Watcher::new(
        c.clone(),
        ww.clone(),
        ww.signing_key().clone(),
        store.clone(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = {
        let looping = looping.clone();
        let ch = channel.clone();
        tokio::spawn(async move {
            looping
                .run(
                    move || vec![ch.clone()],
                    std::time::Duration::from_millis(20),
                    stopped,
                )
                .await
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let q = c
            .channel_data(&channel)
            .await
            .expect("data")
            .expect("deployed")
            .quarantine;
        if q.is_some_and(|q| q.challenged == Some(true)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher loop did not challenge"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).expect("stop");
    task.await.expect("watcher loop ends");
    let q = c
        .channel_data(&channel)
        .await
        .expect("data")
        .expect("deployed")
        .quarantine
        .expect("q");
    // The contract fines the cheater by adding the fine to its `sent`.
    assert_eq!(
        (q.state_a.seqno, q.state_a.sent),
        (SeqNo(10), NanoTon(best.state.body.sent.0 + fine))
    );
    assert_eq!(q.challenged, Some(true));
    // Nothing more to do until both windows have passed.
    let quarantine_end = q.quarantine_starts + closing.quarantine_duration;
    assert!(matches!(
        watcher.check(&channel).await.expect("check"),
        WatchOutcome::Waiting { until } if until == quarantine_end + closing.conditional_close_duration + 1
    ));

    // After the windows, the watcher finishes; the worker is paid what it was owed plus
    // the cheater's fine (less the payout's forward fee).
    c.advance_time(3600 + 1800).await.expect("advance");
    let w_before = c.get_address_balance(&addr_w).await.expect("w");
    assert_eq!(
        watcher.check(&channel).await.expect("check"),
        WatchOutcome::Finished
    );
    let lump = LocalChain::new(load_ton_config(START).expect("config"), START).lump_price();
    let payout = c
        .get_transactions(&addr_w, 5)
        .await
        .expect("txs")
        .into_iter()
        .find(|t| t.in_source == raw(&channel))
        .expect("payout to the worker");
    assert_eq!(
        payout.in_value,
        dep_b + best.state.body.sent.0 + fine - lump
    );
    assert!(c.get_address_balance(&addr_w).await.expect("w") > w_before);
    assert_eq!(c.get_address_balance(&channel).await.expect("ch"), 0);
    assert_eq!(
        watcher.check(&channel).await.expect("check"),
        WatchOutcome::Closed
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn channel_opens_in_one_transfer_and_closes_cooperatively_over_http() {
    let dir = tmpdir("open");
    let server = serve(config(&dir, &["client", "worker"]))
        .await
        .expect("serve");
    let c = client(&server);
    let (wc, ww) = (wallet_from(&dir, "client"), wallet_from(&dir, "worker"));
    let (addr_c, addr_w) = (wc.address().expect("c"), ww.address().expect("w"));
    let closing = ClosingConfig {
        quarantine_duration: 3600,
        misbehavior_fine: NanoTon(0),
        conditional_close_duration: 1800,
    };
    let std = |a: &StdAddr| StdAddress {
        workchain: a.workchain,
        account: a.address.0,
    };
    let id = ChannelId(77);
    let storage = ChannelStorage::initial(
        wc.public_key(),
        ww.public_key(),
        id,
        closing,
        PaymentConfig {
            excess_fee: NanoTon(TON / 100),
            dest_a: std(&addr_c),
            dest_b: std(&addr_w),
        },
    );
    let code = load_channel_code().expect("code");
    let deposit = NanoTon(2 * TON);
    // Only side A's wallet may open it.
    assert!(matches!(
        open_channel(
            &c,
            &ww,
            ww.signing_key(),
            code.clone(),
            &storage,
            deposit,
            TON / 10
        )
        .await,
        Err(cocoon_ton::onchain::OnChainError::NotSideA)
    ));
    let channel = open_channel(&c, &wc, wc.signing_key(), code, &storage, deposit, TON / 10)
        .await
        .expect("open");
    let expected = ExpectedChannel {
        channel_id: id,
        key_a: wc.public_key(),
        key_b: ww.public_key(),
        payer: Side::A,
        deposit,
        payee_dest: std(&addr_w),
    };
    let data = verify_channel_on_chain(&c, &channel, &expected)
        .await
        .expect("open and funded");
    assert_eq!((data.balance_a, data.balance_b), (deposit, NanoTon(0)));

    // Pay 5 batches off chain, then close cooperatively through the client's wallet.
    let params = ChannelParams {
        channel_id: id,
        key_a: wc.signing_key().verifying_key(),
        key_b: ww.signing_key().verifying_key(),
        deposit_a: deposit,
        deposit_b: NanoTon(0),
        closing,
    };
    let mut payer = Payer::new(
        params.clone(),
        Side::A,
        wc.signing_key().clone(),
        CLOSE_PRICE,
        NanoTon(TON),
        SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
    )
    .expect("payer");
    let mut payee = Payee::new(
        params,
        Side::B,
        ww.signing_key().clone(),
        CLOSE_PRICE,
        NanoTon(TON / 10),
        None,
    )
    .expect("payee");
    serve_and_pay(&mut payer, &mut payee, 5);
    let paid = payee.paid();
    let body = payee.close_body().expect("close body");
    let sig_b = payee.sign_close(&body).expect("worker signs");
    let sig_a = keys::sign_hash(wc.signing_key(), &body.signing_hash().expect("hash"));
    let close = ChannelMessage::CooperativeClose(TwoSigned { sig_a, sig_b, body });
    cocoon_ton::onchain::send_channel_message(&c, &wc, &channel, &close, TON / 10)
        .await
        .expect("close");
    let lump = LocalChain::new(load_ton_config(START).expect("config"), START).lump_price();
    let payout = c
        .get_transactions(&addr_w, 5)
        .await
        .expect("txs")
        .into_iter()
        .find(|t| t.in_source == raw(&channel))
        .expect("payout to the worker");
    assert_eq!(
        payout.in_value,
        paid.0 - lump,
        "worker gets what was paid, less the forward fee"
    );
    assert_eq!(c.get_address_balance(&channel).await.expect("ch"), 0);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

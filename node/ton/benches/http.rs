//! `cocoon ton-local` over HTTP on 127.0.0.1, driven by the toncenter client, one
//! request at a time: wallet transfers per second through `sendBoc` (each executed in
//! the TVM and committed to redb with fsync before the answer), and get methods per
//! second through `runGetMethod`. Wall-clock rates (server and client share the
//! machine).
//!
//! `scripts/ton/fetch-contracts && cargo bench -p cocoon-ton --bench http`

use std::time::Instant;

use cocoon_ton::client::{ClientConfig, TonClient};
use cocoon_ton::local_chain::load_wallet_code;
use cocoon_ton::server::{DevnetWallet, ServerConfig, serve};
use cocoon_ton::wallet::{Transfer, WalletV4, read_key_file};

const TON: u128 = 1_000_000_000;
const START: u32 = 1_760_000_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::env::temp_dir().join(format!("cocoon-ton-http-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let server = serve(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db_path: dir.join("chain.redb"),
        start_time: Some(START),
        wallets: vec![
            DevnetWallet {
                name: "a".into(),
                key_file: dir.join("a.key"),
                balance: 1_000_000 * TON,
            },
            DevnetWallet {
                name: "b".into(),
                key_file: dir.join("b.key"),
                balance: TON,
            },
        ],
    })
    .await
    .expect("serve (run scripts/ton/fetch-contracts first)");
    let c = TonClient::new(ClientConfig::new(server.url())).expect("client");
    let a = WalletV4::new(
        load_wallet_code().expect("wallet code"),
        read_key_file(&dir.join("a.key")).expect("key"),
    );
    let b = server.wallets[1].1.clone();

    let n = 2000u32;
    let bocs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            a.external_boc(
                1 + i,
                u32::MAX,
                &[Transfer::new(b.clone(), TON / 1000, true)],
                false,
            )
            .expect("boc")
        })
        .collect();
    let start = Instant::now();
    for boc in &bocs {
        c.send_boc(boc).await.expect("accepted");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sendBoc wallet transfer (TVM: wallet + receiver, redb fsync)  {:>8.0}/s  ({n} in {secs:.2} s)",
        f64::from(n) / secs
    );

    let addr = a.address().expect("addr");
    let start = Instant::now();
    for _ in 0..n {
        c.wallet_seqno(&addr).await.expect("seqno");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "runGetMethod seqno                                            {:>8.0}/s  ({n} in {secs:.2} s)",
        f64::from(n) / secs
    );
    assert_eq!(c.wallet_seqno(&addr).await.expect("seqno"), n + 1);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! The standard wallet v4r2 (its real code, fetched at setup) in the embedded TVM:
//! deploy by its first external message, a transfer moving exact value, a replayed
//! transfer refused before acceptance (nothing charged), a wrong subwallet id and an
//! expired message refused, the `seqno` and `get_public_key` get methods, and a
//! payment channel deployed, topped up and inited through wallets.

use cocoon_protocol::channel::*;
use cocoon_ton::channel_ops::{channel_message, deploy_and_top_up, top_up};
use cocoon_ton::local_chain::{
    InternalMessage, LocalChain, load_channel_code, load_ton_config, load_wallet_code,
};
use cocoon_ton::stack::StackEntry;
use cocoon_ton::wallet::{Transfer, WalletV4};
use ed25519_dalek::SigningKey;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::models::StdAddr;

const TON: u128 = 1_000_000_000;
const START: u32 = 1_750_000_000;

fn chain() -> LocalChain {
    LocalChain::new(
        load_ton_config(START).expect("TON config (run scripts/ton/fetch-contracts)"),
        START,
    )
}

fn wallet(seed: u8) -> WalletV4 {
    WalletV4::new(
        load_wallet_code().expect("wallet code (run scripts/ton/fetch-contracts)"),
        SigningKey::from_bytes(&[seed; 32]),
    )
}

fn faucet(chain: &mut LocalChain, to: &StdAddr, value: u128) {
    chain
        .send_internal(InternalMessage {
            src: StdAddr::new(-1, HashBytes([0xfa; 32])),
            dst: to.clone(),
            value,
            bounce: false,
            body: Cell::default(),
            init: None,
        })
        .expect("faucet");
}

fn getter_u128(chain: &LocalChain, addr: &StdAddr, method: &str) -> u128 {
    let out = chain
        .run_getter(addr, method, Vec::new())
        .expect("getter runs")
        .expect("account has code");
    assert_eq!(out.exit_code, 0, "{method} exit code");
    let top = out.stack.last().expect("a result");
    StackEntry::from_vm(top.as_ref())
        .expect("entry")
        .as_u128()
        .expect("a number")
}

/// Writes the transcript of every message sent, for `scripts/ton/replay.js` (TON's own
/// emulator), when `COCOON_TON_TRANSCRIPTS` names a directory.
fn dump_transcript(chain: &LocalChain, name: &str) {
    let Some(dir) = std::env::var_os("COCOON_TON_TRANSCRIPTS") else {
        return;
    };
    let a = |x: &StdAddr| format!("{}:{}", x.workchain, hex::encode(x.address.0));
    let entries: Vec<serde_json::Value> = chain
        .transcript()
        .iter()
        .map(|e| {
            serde_json::json!({
                "known_divergence": null,
                "now": e.now,
                "external": e.external,
                "src": e.src.as_ref().map(a),
                "dst": a(&e.dst),
                "value": e.value.to_string(),
                "bounce": e.bounce,
                "body": hex::encode(&e.body),
                "init": e.init.as_ref().map(hex::encode),
                "included": e.outcome.included,
                "exit_code": e.outcome.exit_code,
                "gas_used": e.outcome.gas_used,
                "balances": e.balances.iter().map(|(k, v)| (a(k), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect();
    std::fs::create_dir_all(&dir).expect("transcript dir");
    let path = std::path::Path::new(&dir).join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&entries).expect("json"))
        .expect("write transcript");
}

fn deploy(chain: &mut LocalChain, w: &WalletV4, funds: u128) -> StdAddr {
    let addr = w.address().expect("address");
    faucet(chain, &addr, funds);
    let msg = w
        .external_message(0, START + 60, &[], true)
        .expect("deploy msg");
    let out = chain.send_external_message(msg).expect("runs");
    assert!(
        out[0].included && out[0].success,
        "deploy accepted: {:?}",
        out[0]
    );
    addr
}

#[test]
fn wallet_deploys_transfers_and_refuses_replays() {
    let mut chain = chain();
    let w = wallet(1);
    let addr = w.address().expect("address");
    // Address = hash of the state init (code + data): differs with the subwallet id.
    assert_eq!(
        addr,
        LocalChain::address_of(&w.state_init().expect("init")).expect("addr")
    );
    assert_ne!(
        addr,
        w.clone().with_subwallet_id(7).address().expect("addr")
    );

    deploy(&mut chain, &w, 5 * TON);
    assert_eq!(getter_u128(&chain, &addr, "seqno"), 1);
    let pk = chain
        .run_getter(&addr, "get_public_key", Vec::new())
        .expect("runs")
        .expect("code");
    let pk = StackEntry::from_vm(pk.stack[0].as_ref()).expect("entry");
    assert_eq!(pk.as_bytes32(), Some(w.public_key()));

    // A transfer of exactly 1 TON to a fresh address (non-bounceable).
    let dst = StdAddr::new(0, HashBytes([0x77; 32]));
    let before = chain.balance(&addr).expect("balance");
    let t = Transfer::new(dst.clone(), TON, false);
    let msg = w
        .external_message(1, START + 60, std::slice::from_ref(&t), false)
        .expect("msg");
    let out = chain.send_external_message(msg.clone()).expect("runs");
    assert!(out[0].success, "transfer: {:?}", out[0]);
    assert_eq!(out[0].out.len(), 1);
    assert_eq!(
        chain.balance(&dst).expect("balance"),
        TON - out[1].total_fees
    );
    let after = chain.balance(&addr).expect("balance");
    // Mode 3: the wallet pays the value plus forward and its own fees.
    assert_eq!(
        before - after,
        TON + out[0].out[0].fwd_fee + out[0].total_fees
    );
    assert_eq!(getter_u128(&chain, &addr, "seqno"), 2);

    // The same message again: seqno 1 is used, refused before accept (nothing charged).
    let out = chain.send_external_message(msg).expect("runs");
    assert!(!out[0].included, "replay must not be included");
    assert_eq!(out[0].exit_code, Some(33));
    assert_eq!(chain.balance(&addr).expect("balance"), after);

    // Wrong subwallet id (34), expired (36), bad signature (35: signed by another key
    // for this wallet's address).
    let other_sub = w.clone().with_subwallet_id(1);
    let body = other_sub
        .transfer_body(2, START + 60, std::slice::from_ref(&t))
        .expect("body");
    let out = chain.send_external(&addr, body).expect("runs");
    assert_eq!((out[0].included, out[0].exit_code), (false, Some(34)));
    let body = w
        .transfer_body(2, START - 1, std::slice::from_ref(&t))
        .expect("body");
    let out = chain.send_external(&addr, body).expect("runs");
    assert_eq!((out[0].included, out[0].exit_code), (false, Some(36)));
    let body = wallet(2).transfer_body(2, START + 60, &[t]).expect("body");
    let out = chain.send_external(&addr, body).expect("runs");
    assert_eq!((out[0].included, out[0].exit_code), (false, Some(35)));
    assert_eq!(chain.balance(&addr).expect("balance"), after);
    assert_eq!(getter_u128(&chain, &addr, "seqno"), 2);
    dump_transcript(&chain, "wallet");
}

#[test]
fn channel_is_deployed_funded_and_inited_through_wallets() {
    let mut chain = chain();
    let (wa, wb) = (wallet(3), wallet(4));
    let (addr_a, addr_b) = (
        deploy(&mut chain, &wa, 10 * TON),
        deploy(&mut chain, &wb, 10 * TON),
    );
    let closing = ClosingConfig {
        quarantine_duration: 3600,
        misbehavior_fine: NanoTon(TON / 10),
        conditional_close_duration: 1800,
    };
    let std = |a: &StdAddr| StdAddress {
        workchain: a.workchain,
        account: a.address.0,
    };
    let storage = ChannelStorage::initial(
        wa.public_key(),
        wb.public_key(),
        ChannelId(0xfeed),
        closing,
        PaymentConfig {
            excess_fee: NanoTon(TON / 100),
            dest_a: std(&addr_a),
            dest_b: std(&addr_b),
        },
    );
    let code = load_channel_code().expect("channel code");
    let gas = TON / 10;
    let (channel, t) =
        deploy_and_top_up(code, &storage, Side::A, NanoTon(3 * TON), gas).expect("deploy");
    let out = chain
        .send_external_message(
            wa.external_message(1, START + 60, &[t], false)
                .expect("msg"),
        )
        .expect("runs");
    assert!(out.iter().all(|o| o.success), "{out:?}");
    let t = top_up(&channel, Side::B, NanoTon(TON / 2), gas).expect("top up");
    let out = chain
        .send_external_message(
            wb.external_message(1, START + 60, &[t], false)
                .expect("msg"),
        )
        .expect("runs");
    assert!(out.iter().all(|o| o.success), "{out:?}");
    let init = ChannelMessage::Init(
        OneSigned::sign(
            Side::A,
            wa.signing_key(),
            InitBody {
                channel_id: ChannelId(0xfeed),
                balance_a: NanoTon(3 * TON),
                balance_b: NanoTon(TON / 2),
            },
        )
        .expect("sign"),
    );
    let t = channel_message(&channel, &init, gas).expect("init");
    let out = chain
        .send_external_message(
            wa.external_message(2, START + 60, &[t], false)
                .expect("msg"),
        )
        .expect("runs");
    assert!(out.iter().all(|o| o.success), "{out:?}");
    let st = ChannelStorage::from_cell(&chain.data(&channel).expect("data").expect("active"))
        .expect("storage");
    assert!(st.inited);
    assert_eq!(
        (st.balance_a, st.balance_b),
        (NanoTon(3 * TON), NanoTon(TON / 2))
    );
    // get_channel_data agrees: state 1 (open), balances, keys.
    let out = chain
        .run_getter(&channel, "get_channel_data", Vec::new())
        .expect("runs")
        .expect("code");
    let stack: Vec<StackEntry> = out
        .stack
        .iter()
        .map(|v| StackEntry::from_vm(v.as_ref()).expect("entry"))
        .collect();
    let data = cocoon_ton::client::decode_channel_data(&stack).expect("decodes");
    assert_eq!(data.state, 1);
    assert_eq!(
        (data.balance_a, data.balance_b),
        (NanoTon(3 * TON), NanoTon(TON / 2))
    );
    assert_eq!((data.key_a, data.key_b), (wa.public_key(), wb.public_key()));
    assert_eq!(data.channel_id, ChannelId(0xfeed));
    assert_eq!(data.closing, closing);
    assert_eq!(data.quarantine, None);
    assert_eq!((data.dest_a, data.dest_b), (std(&addr_a), std(&addr_b)));
    dump_transcript(&chain, "channel-through-wallets");
}

//! Emulated transactions per second in the local chain, on the real channel code:
//! internal top-ups (no signature check) as the baseline, and external cooperative
//! commits (two ed25519 checks each), pre-signed so only execution is timed. Rates are
//! per second of this thread's CPU time (per core).
//!
//! `scripts/ton/fetch-contracts && cargo bench -p cocoon-ton --bench transactions`

use std::time::Instant;

use cocoon_protocol::channel::*;
use cocoon_ton::local_chain::{InternalMessage, LocalChain, load_channel_code, load_ton_config};
use ed25519_dalek::SigningKey;
use tycho_types::cell::HashBytes;
use tycho_types::dict::Dict;
use tycho_types::models::{StateInit, StdAddr};

const TON: u128 = 1_000_000_000;

/// Nanoseconds this thread has run on a CPU (Linux), for rates per core on a busy machine.
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<u64>().ok()? as f64 / 1e9)
}

/// Seconds of this thread's CPU time since `cpu0` (wall time since `start` if unknown).
fn cpu_since(cpu0: Option<f64>, start: Instant) -> f64 {
    match (cpu0, thread_cpu_s()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => start.elapsed().as_secs_f64(),
    }
}

fn main() {
    let now = 1_750_000_000;
    let config = load_ton_config(now).expect("run scripts/ton/fetch-contracts");
    let code = load_channel_code().expect("run scripts/ton/fetch-contracts");
    let ka = SigningKey::from_bytes(&[7; 32]);
    let kb = SigningKey::from_bytes(&[9; 32]);
    let id = ChannelId(77);
    let storage = ChannelStorage::initial(
        ka.verifying_key().to_bytes(),
        kb.verifying_key().to_bytes(),
        id,
        ClosingConfig {
            quarantine_duration: 60,
            misbehavior_fine: NanoTon(0),
            conditional_close_duration: 60,
        },
        PaymentConfig {
            excess_fee: NanoTon(0),
            dest_a: StdAddress {
                workchain: 0,
                account: [1; 32],
            },
            dest_b: StdAddress {
                workchain: 0,
                account: [2; 32],
            },
        },
    );
    let init = StateInit {
        split_depth: None,
        special: None,
        code: Some(code),
        data: Some(storage.to_cell().expect("data")),
        libraries: Dict::new(),
    };
    let channel = LocalChain::address_of(&init).expect("address");
    let mut chain = LocalChain::new(config, now);
    let wallet = StdAddr::new(0, HashBytes([0xa0; 32]));
    let top_up = |add: u128| {
        ChannelMessage::TopUp {
            add_a: NanoTon(add),
            add_b: NanoTon(0),
        }
        .to_cell()
        .expect("body")
    };
    let send = |chain: &mut LocalChain, body, init: Option<StateInit>| {
        chain
            .send_internal(InternalMessage {
                src: wallet.clone(),
                dst: channel.clone(),
                value: TON,
                bounce: false,
                body,
                init,
            })
            .expect("runs")
    };
    assert_eq!(
        send(&mut chain, top_up(TON / 2), Some(init))[0].exit_code,
        Some(0)
    );

    let n = 2000;
    let start = Instant::now();
    let cpu0 = thread_cpu_s();
    for _ in 0..n {
        let out = send(&mut chain, top_up(1), None);
        assert_eq!(out[0].exit_code, Some(0));
    }
    let base = n as f64 / cpu_since(cpu0, start);
    println!(
        "{:<52} {base:>8.0} tx/s per core (baseline)",
        "internal top-up (7272 gas)"
    );

    let balance = chain.balance(&channel).expect("balance");
    let body = InitBody {
        channel_id: id,
        balance_a: NanoTon(TON / 2 + n as u128),
        balance_b: NanoTon(0),
    };
    assert!(balance > TON);
    let init_msg = ChannelMessage::Init(OneSigned::sign(Side::A, &ka, body).expect("sign"));
    assert_eq!(
        send(&mut chain, init_msg.to_cell().expect("cell"), None)[0].exit_code,
        Some(0)
    );

    let commits: Vec<_> = (1..=n as u64)
        .map(|s| {
            let body = CommitBody {
                channel_id: id,
                seqno_a: SeqNo(s),
                seqno_b: SeqNo(s),
            };
            let h = body.signing_hash().expect("hash");
            ChannelMessage::CooperativeCommit(TwoSigned {
                sig_a: cocoon_protocol::channel::keys::sign_hash(&ka, &h),
                sig_b: cocoon_protocol::channel::keys::sign_hash(&kb, &h),
                body,
            })
            .to_cell()
            .expect("cell")
        })
        .collect();
    let start = Instant::now();
    let cpu0 = thread_cpu_s();
    for c in commits {
        let out = chain.send_external(&channel, c).expect("runs");
        assert_eq!(out[0].exit_code, Some(0));
    }
    let rate = n as f64 / cpu_since(cpu0, start);
    println!(
        "{:<52} {rate:>8.0} tx/s per core ({:.2}x of baseline)",
        "external cooperative commit, 2 sig checks (9471 gas)",
        rate / base
    );
}

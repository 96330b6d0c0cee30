//! Signed payment states created and verified per second on one core, against the bare
//! ed25519 sign/verify of a 32-byte hash measured in the same run (the baseline: what
//! the cell building, hashing and rule checks add).
//!
//! `cargo bench -p cocoon-protocol --bench channel`
//!
//! curve25519-dalek uses its AVX-512 IFMA backend only when the target feature is on at
//! compile time (it still checks the CPU at run time). The workspace builds with
//! `-C target-cpu=native` (`.cargo/config.toml`), so on a CPU that has IFMA (these build
//! machines do) the acceptance rule (`verify_strict`) runs on it. The portable build
//! for comparison: `RUSTFLAGS="-C target-cpu=x86-64-v2" CARGO_TARGET_DIR=target-portable \
//!  cargo bench -p cocoon-protocol --bench channel`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cocoon_protocol::channel::*;
use ed25519_dalek::{Signer, SigningKey};

/// Nanoseconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`), so a
/// rate per core can be measured on a machine other processes keep busy.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Runs `f` for about a second of wall time; prints operations per second of this
/// thread's CPU time (per core), and per wall second for comparison.
fn rate(label: &str, baseline: Option<f64>, mut f: impl FnMut(u64)) -> f64 {
    for i in 0..200 {
        f(i);
    }
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            f(n);
            n += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => wall,
    };
    let per_core = n as f64 / cpu;
    let per_wall = n as f64 / wall;
    match baseline {
        Some(b) => println!(
            "{label:<48} {per_core:>8.0}/s per core {per_wall:>8.0}/s wall ({:.2}x of baseline)",
            per_core / b
        ),
        None => {
            println!("{label:<48} {per_core:>8.0}/s per core {per_wall:>8.0}/s wall (baseline)")
        }
    }
    per_core
}

fn main() {
    let ka = SigningKey::from_bytes(&[7; 32]);
    let kb = SigningKey::from_bytes(&[9; 32]);
    let params = ChannelParams {
        channel_id: ChannelId(42),
        key_a: ka.verifying_key(),
        key_b: kb.verifying_key(),
        deposit_a: NanoTon(u64::MAX as u128),
        deposit_b: NanoTon(0),
        closing: ClosingConfig {
            quarantine_duration: 3600,
            misbehavior_fine: NanoTon(0),
            conditional_close_duration: 1800,
        },
    };
    let price = Price {
        per_prompt_token: NanoTon(1),
        per_completion_token: NanoTon(3),
    };
    let hash = [0x5a; 32];
    let sig = ka.sign(&hash);

    let sign_base = rate("ed25519 sign of a 32-byte hash", None, |_| {
        black_box(ka.sign(black_box(&hash)));
    });
    let mut payer = Payer::new(
        params.clone(),
        Side::A,
        ka.clone(),
        price,
        NanoTon::MAX_COINS,
        SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
    )
    .expect("payer");
    let mut states = Vec::new();
    rate(
        "Payer: count tokens, build state, sign",
        Some(sign_base),
        |i| {
            payer
                .record_served(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 1,
                })
                .expect("served");
            let st = payer.pay_owed().expect("sign");
            if i < 400_000 {
                states.push(st);
            }
        },
    );

    let verify_base = rate("ed25519 verify_strict of a 32-byte hash", None, |_| {
        ka.verifying_key()
            .verify_strict(black_box(&hash), &sig)
            .expect("verifies");
    });
    let mut payee = Payee::new(
        params.clone(),
        Side::B,
        kb.clone(),
        price,
        NanoTon::MAX_COINS,
        None,
    )
    .expect("payee");
    let mut it = states.iter();
    rate(
        "Payee: rebuild cell, hash, verify, check rules",
        Some(verify_base),
        |_| {
            let st = it.next().expect("enough states").clone();
            payee.accept_payment(st).expect("accept");
        },
    );
    let bocs: Vec<Vec<u8>> = states.iter().map(|s| s.to_boc().expect("boc")).collect();
    let mut payee =
        Payee::new(params, Side::B, kb, price, NanoTon::MAX_COINS, None).expect("payee");
    let mut it = bocs.iter();
    rate(
        "Payee: decode BoC from the wire, then accept",
        Some(verify_base),
        |_| {
            let st = SignedSemiChannel::from_boc(it.next().expect("enough")).expect("decode");
            payee.accept_payment(st).expect("accept");
        },
    );
}

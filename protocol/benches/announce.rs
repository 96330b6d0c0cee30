//! Announcements signed and verified per second on one core, with the bare ed25519
//! sign/verify measured in the same run as the baseline.

use std::time::{Duration, Instant};

use cocoon_protocol::announce::{
    Announcement, Prices, VerifyPolicy, sign_announcement, verify_announcement,
};
use cocoon_protocol::identity::{NodeIdentity, verify_signature};
use cocoon_protocol::session::CipherSuite;
use cocoon_protocol::units::{BlockRange, ModelId, NanoTon, Role, SeqNo, UnixMillis};

fn rate(mut f: impl FnMut(u64)) -> f64 {
    // Warm up, then run for about a second.
    for i in 0..200 {
        f(i);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            f(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let id = NodeIdentity::from_secrets(&[1; 32], &[2; 32]);
    let now = UnixMillis(1_800_000_000_000);
    let ann = Announcement {
        node_key: id.public_key(),
        role: Role::Worker,
        model_id: Some(ModelId([7; 32])),
        n_blocks: 30,
        blocks: BlockRange::new(0, 15).expect("ordered"),
        prices: Prices {
            prompt: NanoTon(1000),
            completion: NanoTon(2000),
        },
        throughput_milli_tps: 25_000,
        free_kv_tokens: 8192,
        noise_static_key: id.noise_public_key(),
        ton_wallet: "EQD4FPq-PRDieyQKkizFTRtSDyucUIqrj0v_zXJmqaDp6_0t".into(),
        listen_addrs: vec![
            vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1],
            vec![4, 10, 0, 0, 2, 0x91, 0x02, 0x0f, 0xa1, 0xcc, 0x03],
        ],
        seqno: SeqNo(1),
        issued_at: now,
        expires_at: now.plus_ms(300_000),
        cipher_suites: CipherSuite::offered(true),
    };
    let bytes = sign_announcement(&id, &ann);
    let policy = VerifyPolicy::default();
    let sig = id.sign(b"baseline message of a similar length to an announcement body, roughly 200 bytes long.........");
    let key = id.public_key();

    let base_sign = rate(|_| {
        std::hint::black_box(id.sign(std::hint::black_box(b"baseline message")));
    });
    let base_verify = rate(|_| {
        assert!(verify_signature(
            &key,
            b"baseline message of a similar length to an announcement body, roughly 200 bytes long.........",
            &sig
        ));
    });
    let sign = rate(|i| {
        let mut a = ann.clone();
        a.seqno = SeqNo(i + 1);
        std::hint::black_box(sign_announcement(&id, &a));
    });
    let verify = rate(|_| {
        let got = verify_announcement(std::hint::black_box(&bytes), now, &policy, |_| None);
        assert!(got.is_ok());
    });
    println!(
        "announcement size: {} bytes (single thread, one core)",
        bytes.len()
    );
    println!("{:<34} {:>12} {:>10}", "operation", "ops/s", "vs ed25519");
    println!(
        "{:<34} {:>12.0} {:>10}",
        "ed25519 sign (baseline)", base_sign, "1.00"
    );
    println!(
        "{:<34} {:>12.0} {:>10.2}",
        "sign announcement (encode+sign)",
        sign,
        sign / base_sign
    );
    println!(
        "{:<34} {:>12.0} {:>10}",
        "ed25519 verify_strict (baseline)", base_verify, "1.00"
    );
    println!(
        "{:<34} {:>12.0} {:>10.2}",
        "verify_announcement (all rules)",
        verify,
        verify / base_verify
    );
}

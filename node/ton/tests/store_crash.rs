//! The channel store under `kill -9`: a child process (this test binary, re-run with
//! `COCOON_STORE_CHILD` set) pays or serves in a loop, committing each record before it
//! "acts" (prints the seqno it sent or the tokens it served). The parent kills it with
//! SIGKILL mid-stream, reopens the store and checks that the record is at least as new
//! as every act, decodes, verifies, and that a resumed side continues strictly forward.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cocoon_protocol::channel::*;
use cocoon_ton::store::{ChannelRecord, ChannelStore, Role, StoreError};
use ed25519_dalek::SigningKey;

const ID: ChannelId = ChannelId(0x5707e);
const PRICE: Price = Price {
    per_prompt_token: NanoTon(2),
    per_completion_token: NanoTon(5),
};

fn params() -> ChannelParams {
    ChannelParams {
        channel_id: ID,
        key_a: SigningKey::from_bytes(&[7; 32]).verifying_key(),
        key_b: SigningKey::from_bytes(&[9; 32]).verifying_key(),
        deposit_a: NanoTon(1 << 60),
        deposit_b: NanoTon(0),
        closing: ClosingConfig {
            quarantine_duration: 60,
            misbehavior_fine: NanoTon(0),
            conditional_close_duration: 60,
        },
    }
}

fn resume_payer(store: &ChannelStore) -> Payer {
    let (latest, served) = match store.load(ID).expect("load") {
        Some(r) => (r.body(), r.served()),
        None => (
            SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
            Usage::default(),
        ),
    };
    let mut p = Payer::new(
        params(),
        Side::A,
        SigningKey::from_bytes(&[7; 32]),
        PRICE,
        NanoTon(1 << 50),
        latest,
    )
    .expect("payer");
    p.record_served(served).expect("restore served");
    p
}

/// The child: pays for one token batch at a time, committing before "sending".
fn child_payer(path: &Path) {
    let store = ChannelStore::open(path).expect("open");
    let mut payer = resume_payer(&store);
    loop {
        payer
            .record_served(Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
            })
            .expect("served");
        let st = payer.pay_owed().expect("sign");
        let rec = ChannelRecord::new(Role::Payer, Side::A, &st, payer.served()).expect("record");
        store.commit(&rec).expect("commit");
        // The act: the state leaves the process only after the commit.
        println!("sent {} {}", st.state.body.seqno.0, st.state.body.sent.0);
    }
}

fn resume_payee(store: &ChannelStore) -> Payee {
    let rec = store.load(ID).expect("load");
    let best = rec.as_ref().and_then(|r| r.state().expect("decodes"));
    let served = rec.map(|r| r.served()).unwrap_or_default();
    Payee::new(
        params(),
        Side::B,
        SigningKey::from_bytes(&[9; 32]),
        PRICE,
        NanoTon(40),
        best,
    )
    .expect("payee")
    .with_served(served)
}

/// The worker child: authorises a batch, commits, serves it ("served" line); accepts
/// the client's payment, commits, acknowledges it ("accepted" line). The client runs
/// in the same process, resumed from the worker's record (it is not under test here).
fn child_payee(path: &Path) {
    let store = ChannelStore::open(path).expect("open");
    let mut payee = resume_payee(&store);
    let mut payer = Payer::new(
        params(),
        Side::A,
        SigningKey::from_bytes(&[7; 32]),
        PRICE,
        NanoTon(1 << 50),
        payee.paid_body(),
    )
    .expect("payer");
    payer.record_served(payee.served()).expect("served");
    let batch = Usage {
        prompt_tokens: 3,
        completion_tokens: 1,
    };
    loop {
        payee.authorize(batch).expect("within credit");
        let best = payee.best_state().cloned();
        let rec = match &best {
            Some(st) => {
                ChannelRecord::new(Role::Payee, Side::B, st, payee.served()).expect("record")
            }
            None => ChannelRecord {
                channel_id: ID.0,
                role: Role::Payee,
                we_are_a: false,
                seqno: 0,
                sent: 0,
                state_boc: Vec::new(),
                prompt_tokens: payee.served().prompt_tokens,
                completion_tokens: payee.served().completion_tokens,
            },
        };
        store.commit(&rec).expect("commit");
        println!(
            "served {} {}",
            payee.served().prompt_tokens,
            payee.served().completion_tokens
        );
        payer.record_served(batch).expect("served");
        let st = payer.pay_owed().expect("sign");
        payee.accept_payment(st.clone()).expect("accept");
        store
            .commit(&ChannelRecord::new(Role::Payee, Side::B, &st, payee.served()).expect("record"))
            .expect("commit");
        println!(
            "accepted {} {}",
            st.state.body.seqno.0, st.state.body.sent.0
        );
    }
}

#[test]
fn crash_child() {
    if let Some(path) = std::env::var_os("COCOON_STORE_CHILD") {
        match std::env::var("COCOON_STORE_ROLE").as_deref() {
            Ok("payee") => child_payee(Path::new(&path)),
            _ => child_payer(Path::new(&path)),
        }
    }
}

#[test]
fn payee_killed_mid_stream_never_serves_twice_or_forgets_a_payment() {
    let dir = std::env::temp_dir().join(format!("cocoon-store-payee-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("channels.redb");
    let _ = std::fs::remove_file(&path);
    let mut last_served_before = 0;
    for round in 0..3 {
        let lines = run_child_collect(&path, "payee", 200);
        let served: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("served "))
            .filter_map(|r| r.split(' ').next()?.parse().ok())
            .collect();
        let accepted: Vec<(u64, u128)> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("accepted "))
            .filter_map(|r| {
                let mut it = r.split(' ');
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .collect();
        let last_served = *served.last().expect("served something");
        let (last_seqno, last_sent) = *accepted.last().expect("accepted something");
        assert!(
            served[0] > last_served_before,
            "round {round}: served continues, never repeats"
        );
        let store = ChannelStore::open(&path).expect("reopen after kill -9");
        let rec = store.load(ID).expect("load").expect("record");
        assert!(
            rec.prompt_tokens >= last_served,
            "round {round}: every served batch was committed"
        );
        assert!(
            rec.seqno >= last_seqno && rec.sent >= last_sent,
            "every acknowledged payment kept"
        );
        // A payment already accepted, replayed after the restart, is refused.
        let mut payee = resume_payee(&store);
        let st = rec.state().expect("decodes").expect("state");
        assert_eq!(
            payee.accept_payment(st).expect_err("replay").rule(),
            "seqno-increases"
        );
        last_served_before = last_served;
        drop(store);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Runs a child in `role`, kills it with SIGKILL after `acts` lines, returns every line
/// it printed (including those still in the pipe).
fn run_child_collect(path: &Path, role: &str, acts: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("COCOON_STORE_CHILD", path)
        .env("COCOON_STORE_ROLE", role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut out = Vec::new();
    while out.len() < acts {
        let line = lines.next().expect("child alive").expect("line");
        if line.starts_with("served ") || line.starts_with("accepted ") {
            out.push(line);
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    out.extend(
        lines
            .map_while(Result::ok)
            .filter(|l| l.starts_with("served ") || l.starts_with("accepted ")),
    );
    out
}

fn run_child_and_kill(path: &Path, acts: usize) -> (u64, u128) {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("COCOON_STORE_CHILD", path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let parse = |line: &str| -> Option<(u64, u128)> {
        let mut it = line.strip_prefix("sent ")?.split(' ');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    let mut last = (0, 0);
    let mut seen = 0;
    while seen < acts {
        let line = lines.next().expect("child alive").expect("line");
        if let Some(act) = parse(&line) {
            last = act;
            seen += 1;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // What the child printed before it died is still in the pipe: the last act.
    for line in lines.map_while(Result::ok) {
        if let Some(act) = parse(&line) {
            last = act;
        }
    }
    last
}

#[test]
fn payer_killed_mid_stream_resumes_without_paying_twice() {
    let dir = std::env::temp_dir().join(format!("cocoon-store-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("channels.redb");
    let _ = std::fs::remove_file(&path);

    let mut prev_seqno = 0;
    for round in 0..3 {
        let (acted_seqno, acted_sent) = run_child_and_kill(&path, 150);
        assert!(acted_seqno > prev_seqno, "round {round}: resumed forward");
        let store = ChannelStore::open(&path).expect("reopen after kill -9");
        let rec = store.load(ID).expect("load").expect("record survived");
        // Commit before act: the record is at least as new as the last state sent.
        assert!(
            rec.seqno >= acted_seqno,
            "round {round}: {} < {acted_seqno}",
            rec.seqno
        );
        assert!(rec.sent >= acted_sent);
        // At most one state was committed and not yet sent when the kill came.
        assert!(rec.seqno <= acted_seqno + 1);
        // The stored state is the genuine signed state for that record.
        let st = rec.state().expect("decodes").expect("present");
        assert_eq!(st.state.body, rec.body());
        let mut payee = Payee::new(
            params(),
            Side::B,
            SigningKey::from_bytes(&[9; 32]),
            PRICE,
            NanoTon(1 << 50),
            None,
        )
        .expect("payee");
        payee.accept_payment(st).expect("stored state verifies");
        // Sent matches the tokens recorded: nothing paid for tokens not served.
        assert_eq!(NanoTon(rec.sent), PRICE.cost(rec.served()).expect("cost"));
        // A resumed payer signs strictly above anything it ever sent.
        let mut p = resume_payer(&store);
        p.record_served(Usage {
            prompt_tokens: 1,
            completion_tokens: 0,
        })
        .expect("served");
        assert!(p.pay_owed().expect("sign").state.body.seqno.0 > acted_seqno);
        prev_seqno = acted_seqno;
        drop(store);
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn store_refuses_records_that_go_back() {
    let dir = std::env::temp_dir().join(format!("cocoon-store-regress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = ChannelStore::open(&dir.join("c.redb")).expect("open");
    let k = SigningKey::from_bytes(&[7; 32]);
    let st = |seqno, sent| {
        state::sign_state(
            ID,
            &k,
            SemiChannelBody::new(SeqNo(seqno), NanoTon(sent)),
            None,
        )
        .expect("sign")
    };
    let served = Usage {
        prompt_tokens: 10,
        completion_tokens: 0,
    };
    store
        .commit(&ChannelRecord::new(Role::Payer, Side::A, &st(5, 20), served).expect("rec"))
        .expect("commit");
    let older = ChannelRecord::new(Role::Payer, Side::A, &st(4, 20), served).expect("rec");
    assert!(matches!(
        store.commit(&older),
        Err(StoreError::Regress { what: "seqno", .. })
    ));
    let lower = ChannelRecord::new(Role::Payer, Side::A, &st(6, 19), served).expect("rec");
    assert!(matches!(
        store.commit(&lower),
        Err(StoreError::Regress { what: "sent", .. })
    ));
    let fork = ChannelRecord::new(Role::Payer, Side::A, &st(5, 21), served).expect("rec");
    assert!(matches!(
        store.commit(&fork),
        Err(StoreError::Regress { what: "seqno", .. })
    ));
    let next = ChannelRecord::new(Role::Payer, Side::A, &st(6, 30), served).expect("rec");
    store.commit(&next).expect("forward is fine");
    assert_eq!(store.list().expect("list"), vec![next]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

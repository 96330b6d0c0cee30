//! The official payment-channel contract (its compiled code from tonweb@0.0.66, fetched
//! by `scripts/ton/fetch-contracts`) run in the embedded TVM with TON's network config,
//! fed the exact messages `cocoon_protocol::channel` builds: deploy, top up, init,
//! 1000 off-chain payments, cooperative commit and close; an uncooperative close with a
//! stale state challenged by the worker, each time window enforced, settle and finish;
//! and the contract hazards the off-chain rules exist for. Exit codes and balances are
//! asserted; gas per step is printed (`-- --nocapture`).

use cocoon_protocol::channel::messages::SettleBody;
use cocoon_protocol::channel::state::{commit_body_for, sign_state};
use cocoon_protocol::channel::*;
use cocoon_ton::local_chain::{
    InternalMessage, LocalChain, TxOutcome, load_channel_code, load_ton_config,
};
use ed25519_dalek::SigningKey;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::dict::Dict;
use tycho_types::models::{StateInit, StdAddr};

const TON: u128 = 1_000_000_000;
const START: u32 = 1_750_000_000;
const QUARANTINE: u32 = 3600;
const SETTLE_WINDOW: u32 = 1800;
const GAS_MONEY: u128 = TON / 10;

struct Fixture {
    chain: LocalChain,
    channel: StdAddr,
    ka: SigningKey,
    kb: SigningKey,
    params: ChannelParams,
    wallet_a: StdAddr,
    wallet_b: StdAddr,
    dest_a: StdAddr,
    dest_b: StdAddr,
    gas: Vec<(String, Option<i32>, u64)>,
}

fn addr(byte: u8) -> StdAddr {
    StdAddr::new(0, HashBytes([byte; 32]))
}

impl Fixture {
    /// Deploys a channel (A = client, B = worker), tops both sides up and inits it.
    fn open(id: u128, deposit_a: u128, deposit_b: u128, fine: u128) -> Fixture {
        let config = load_ton_config(START).expect("TON config (run scripts/ton/fetch-contracts)");
        let code = load_channel_code().expect("channel code (run scripts/ton/fetch-contracts)");
        let ka = SigningKey::from_bytes(&[7; 32]);
        let kb = SigningKey::from_bytes(&[9; 32]);
        let closing = ClosingConfig {
            quarantine_duration: QUARANTINE,
            misbehavior_fine: NanoTon(fine),
            conditional_close_duration: SETTLE_WINDOW,
        };
        let payment = PaymentConfig {
            excess_fee: NanoTon(TON / 100),
            dest_a: StdAddress {
                workchain: 0,
                account: [0xda; 32],
            },
            dest_b: StdAddress {
                workchain: 0,
                account: [0xdb; 32],
            },
        };
        let storage = ChannelStorage::initial(
            ka.verifying_key().to_bytes(),
            kb.verifying_key().to_bytes(),
            ChannelId(id),
            closing,
            payment,
        );
        let init = StateInit {
            split_depth: None,
            special: None,
            code: Some(code),
            data: Some(storage.to_cell().expect("data")),
            libraries: Dict::new(),
        };
        let channel = LocalChain::address_of(&init).expect("address");
        let mut f = Fixture {
            chain: LocalChain::new(config, START),
            channel,
            params: ChannelParams {
                channel_id: ChannelId(id),
                key_a: ka.verifying_key(),
                key_b: kb.verifying_key(),
                deposit_a: NanoTon(deposit_a),
                deposit_b: NanoTon(deposit_b),
                closing,
            },
            ka,
            kb,
            wallet_a: addr(0xa0),
            wallet_b: addr(0xb0),
            dest_a: addr(0xda),
            dest_b: addr(0xdb),
            gas: Vec::new(),
        };
        // Deploy with A's top-up (tonweb's flow: state init + top_up body from A's wallet).
        let top_a = ChannelMessage::TopUp {
            add_a: NanoTon(deposit_a),
            add_b: NanoTon(0),
        };
        let out = f.internal_with(
            Side::A,
            deposit_a + GAS_MONEY,
            &top_a,
            Some(init),
            "deploy+top-up A",
        );
        assert_eq!(out.exit_code, Some(0), "deploy and top up");
        let top_b = ChannelMessage::TopUp {
            add_a: NanoTon(0),
            add_b: NanoTon(deposit_b),
        };
        let out = f.internal(Side::B, deposit_b + GAS_MONEY, &top_b, "top-up B");
        assert_eq!(out.exit_code, Some(0), "top up B");
        let body = InitBody {
            channel_id: ChannelId(id),
            balance_a: NanoTon(deposit_a),
            balance_b: NanoTon(deposit_b),
        };
        let init_msg = ChannelMessage::Init(OneSigned::sign(Side::A, &f.ka, body).expect("sign"));
        let out = f.internal(Side::A, GAS_MONEY, &init_msg, "init");
        assert_eq!(out.exit_code, Some(0), "init");
        let st = f.storage();
        assert!(st.inited);
        assert_eq!(
            (st.balance_a, st.balance_b),
            (NanoTon(deposit_a), NanoTon(deposit_b))
        );
        f
    }

    fn storage(&self) -> ChannelStorage {
        let data = self
            .chain
            .data(&self.channel)
            .expect("data")
            .expect("channel is active");
        ChannelStorage::from_cell(&data).expect("storage decodes with our layout")
    }

    fn record(&mut self, step: &str, outs: &[TxOutcome]) -> TxOutcome {
        let first = outs.first().expect("one outcome at least").clone();
        self.gas
            .push((step.to_string(), first.exit_code, first.gas_used));
        first
    }

    fn internal_with(
        &mut self,
        from: Side,
        value: u128,
        msg: &ChannelMessage,
        init: Option<StateInit>,
        step: &str,
    ) -> TxOutcome {
        let src = match from {
            Side::A => self.wallet_a.clone(),
            Side::B => self.wallet_b.clone(),
        };
        let outs = self
            .chain
            .send_internal(InternalMessage {
                src,
                dst: self.channel.clone(),
                value,
                bounce: false,
                body: msg.to_cell().expect("body"),
                init,
            })
            .expect("chain runs");
        self.record(step, &outs)
    }

    fn internal(&mut self, from: Side, value: u128, msg: &ChannelMessage, step: &str) -> TxOutcome {
        self.internal_with(from, value, msg, None, step)
    }

    fn external(&mut self, msg: &ChannelMessage, step: &str) -> TxOutcome {
        let body: Cell = msg.to_cell().expect("body");
        let channel = self.channel.clone();
        let outs = self
            .chain
            .send_external(&channel, body)
            .expect("chain runs");
        self.record(step, &outs)
    }

    fn two_signed<B: SignedBody>(&self, body: B) -> TwoSigned<B> {
        let h = body.signing_hash().expect("hash");
        TwoSigned {
            sig_a: cocoon_protocol::channel::keys::sign_hash(&self.ka, &h),
            sig_b: cocoon_protocol::channel::keys::sign_hash(&self.kb, &h),
            body,
        }
    }

    /// Writes the transcript of every message sent, for `scripts/ton/replay.js` (TON's
    /// own emulator), when `COCOON_TON_TRANSCRIPTS` names a directory.
    fn dump_transcript(&self, name: &str) {
        self.dump_transcript_noting(name, &[]);
    }

    /// As [`Fixture::dump_transcript`], marking entries where the embedded TVM is known
    /// to differ from TON's (the replayer reports them without failing).
    fn dump_transcript_noting(&self, name: &str, known: &[(usize, &str)]) {
        let Some(dir) = std::env::var_os("COCOON_TON_TRANSCRIPTS") else {
            return;
        };
        let a = |x: &StdAddr| format!("{}:{}", x.workchain, hex::encode(x.address.0));
        let entries: Vec<serde_json::Value> = self
            .chain
            .transcript()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                serde_json::json!({
                    "known_divergence": known.iter().find(|(k, _)| *k == i).map(|(_, why)| *why),
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
        let path = std::path::Path::new(&dir).join(format!("{name}.json"));
        std::fs::create_dir_all(&dir).expect("transcript dir");
        std::fs::write(&path, serde_json::to_string_pretty(&entries).expect("json"))
            .expect("write transcript");
    }

    fn print_gas(&self, title: &str) {
        self.dump_transcript(title);
        eprintln!("gas ({title}):");
        for (step, exit, gas) in &self.gas {
            eprintln!(
                "  {step:<40} exit {:>5} gas {gas:>6}",
                exit.map_or("-".into(), |e| e.to_string())
            );
        }
    }
}

const PRICE: Price = Price {
    per_prompt_token: NanoTon(1_000),
    per_completion_token: NanoTon(3_000),
};

fn payer_payee(f: &Fixture) -> (Payer, Payee) {
    let payer = Payer::new(
        f.params.clone(),
        Side::A,
        f.ka.clone(),
        PRICE,
        NanoTon(TON),
        SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
    )
    .expect("payer");
    let payee = Payee::new(
        f.params.clone(),
        Side::B,
        f.kb.clone(),
        PRICE,
        NanoTon(200_000),
        None,
    )
    .expect("payee");
    (payer, payee)
}

/// One batch: the worker authorises, the client counts, pays, the worker accepts.
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

#[test]
fn cooperative_lifecycle_pays_exactly() {
    let (dep_a, dep_b) = (3 * TON, TON / 2);
    let mut f = Fixture::open(0xc0c0_0001, dep_a, dep_b, TON / 10);

    // Top-up only before init: the contract refuses it after (error::already_inited).
    let late = ChannelMessage::TopUp {
        add_a: NanoTon(TON),
        add_b: NanoTon(0),
    };
    assert_eq!(
        f.internal(Side::A, TON + GAS_MONEY, &late, "top-up after init")
            .exit_code,
        Some(100)
    );

    let (mut c, mut w) = payer_payee(&f);
    serve_and_pay(&mut c, &mut w, 1000);
    let paid = w.paid();
    assert_eq!(paid, NanoTon(1000 * (7 * 1_000 + 13 * 3_000)));
    assert_eq!(w.paid_body().seqno, SeqNo(1000));

    // Cooperative commit: B's seqno 0 is not above the committed 0 -> seqno_regress,
    // thrown before accept_message, so the external message is not even included.
    let stale = commit_body_for(
        &f.params,
        &c.latest().clone(),
        &SemiChannelBody::new(SeqNo(0), NanoTon(0)),
    );
    let out = f.external(
        &ChannelMessage::CooperativeCommit(f.two_signed(stale)),
        "commit (seqno_B 0)",
    );
    assert!(!out.included);
    assert_eq!(out.exit_code, Some(108));
    let commit = CommitBody {
        channel_id: f.params.channel_id,
        seqno_a: SeqNo(1000),
        seqno_b: SeqNo(1),
    };
    let out = f.external(
        &ChannelMessage::CooperativeCommit(f.two_signed(commit.clone())),
        "cooperative commit",
    );
    assert_eq!(out.exit_code, Some(0));
    w.record_commit(&commit);
    let st = f.storage();
    assert_eq!((st.committed_seqno_a, st.committed_seqno_b), (1000, 1));

    // A commit signed with the signatures swapped is refused on chain too (not_authorized).
    let again = CommitBody {
        channel_id: f.params.channel_id,
        seqno_a: SeqNo(1001),
        seqno_b: SeqNo(2),
    };
    let mut swapped = f.two_signed(again);
    std::mem::swap(&mut swapped.sig_a, &mut swapped.sig_b);
    let out = f.external(
        &ChannelMessage::CooperativeCommit(swapped),
        "commit (swapped sigs)",
    );
    assert_eq!((out.included, out.exit_code), (false, Some(101)));

    // Cooperative close on the worker's figures; the client checks and co-signs.
    let close = w.close_body().expect("close body");
    assert_eq!(close.balance_a, NanoTon(dep_a - paid.0));
    assert_eq!(close.balance_b, NanoTon(dep_b + paid.0));
    let sig_b = w.sign_close(&close).expect("worker signs");
    let sig_a =
        cocoon_protocol::channel::keys::sign_hash(&f.ka, &close.signing_hash().expect("hash"));
    let msg = ChannelMessage::CooperativeClose(TwoSigned {
        sig_a,
        sig_b,
        body: close.clone(),
    });
    let contract_before = f.chain.balance(&f.channel).expect("balance");
    let outs = f
        .chain
        .send_external(&f.channel.clone(), msg.to_cell().expect("cell"))
        .expect("runs");
    let out = f.record("cooperative close", &outs);
    assert_eq!(out.exit_code, Some(0));
    assert!(out.success);
    assert_eq!(out.out.len(), 2, "two payouts");

    // B's payout is its balance less the forward fee (mode 2), exact to the nanoton.
    let to_b = f.chain.balance(&f.dest_b).expect("balance");
    assert_eq!(to_b, close.balance_b.0 - f.chain.lump_price());
    // A takes everything left (mode 128): its balance plus unspent gas money.
    let to_a = f.chain.balance(&f.dest_a).expect("balance");
    assert!(to_a > close.balance_a.0, "A gets at least its balance");
    assert_eq!(
        f.chain.balance(&f.channel).expect("balance"),
        0,
        "contract emptied"
    );
    // Exact to the nanoton: the contract's balance went to the fees of the close and to
    // the two payouts (value + forward fee each), and each payout arrived in full.
    let sent: u128 = out.out.iter().map(|t| t.value + t.fwd_fee).sum();
    assert_eq!(
        contract_before,
        out.total_fees + sent,
        "close conserves value"
    );
    let by_dst = |d: &StdAddr| out.out.iter().find(|t| t.dst == *d).expect("payout").value;
    assert_eq!(to_a, by_dst(&f.dest_a));
    assert_eq!(to_b, by_dst(&f.dest_b));
    let st = f.storage();
    assert!(!st.inited);
    assert_eq!((st.balance_a, st.balance_b), (NanoTon(0), NanoTon(0)));
    assert_eq!((st.committed_seqno_a, st.committed_seqno_b), (1001, 2));
    f.print_gas("cooperative");
}

#[test]
fn stale_uncooperative_close_is_challenged_and_fined() {
    let (dep_a, dep_b, fine) = (3 * TON, TON / 2, TON / 10);
    let mut f = Fixture::open(0xc0c0_0002, dep_a, dep_b, fine);
    let (mut c, mut w) = payer_payee(&f);
    // At open the worker hands the client its own state (seqno 0, nothing seen yet).
    let worker_state = w.own_state().expect("worker's own state");
    serve_and_pay(&mut c, &mut w, 3);
    // The client keeps a copy of its state #3, then pays up to #10.
    let stale_a = sign_state(f.params.channel_id, &f.ka, c.latest().clone(), None).expect("sign");
    serve_and_pay(&mut c, &mut w, 7);
    let best = w.paid_body();
    assert_eq!(best.seqno, SeqNo(10));

    // The client cheats: starts an uncooperative close with its stale state #3.
    let start = cocoon_protocol::channel::messages::StartCloseBody {
        channel_id: f.params.channel_id,
        sch_a: stale_a,
        sch_b: worker_state,
    };
    let msg = ChannelMessage::StartUncooperativeClose(
        OneSigned::sign(Side::A, &f.ka, start).expect("sign"),
    );
    assert_eq!(
        f.internal(Side::A, GAS_MONEY, &msg, "start uncooperative close")
            .exit_code,
        Some(0)
    );
    let q = f.storage().quarantine.expect("quarantined");
    assert!(q.committed_by_a);
    assert_eq!(q.state_a.seqno, SeqNo(3));
    assert_eq!(q.challenged, Some(false));

    // A second start while quarantined: quarantin_already_active.
    let again = w.start_uncooperative_close().expect("worker's start");
    let out = f.internal(
        Side::B,
        GAS_MONEY,
        &ChannelMessage::StartUncooperativeClose(again),
        "start again",
    );
    assert_eq!(out.exit_code, Some(106));
    // Finish before the windows passed: too_early_to_close.
    let out = f.internal(
        Side::B,
        GAS_MONEY,
        &ChannelMessage::FinishUncooperativeClose,
        "finish too early",
    );
    assert_eq!(out.exit_code, Some(113));
    // Settle during the quarantine: quarantin_not_finished.
    let settle = |f: &Fixture| {
        let body = SettleBody {
            channel_id: f.params.channel_id,
            to_settle: None,
        };
        ChannelMessage::SettleConditionals(OneSigned::sign(Side::B, &f.kb, body).expect("sign"))
    };
    let out = f.internal(Side::B, GAS_MONEY, &settle(&f), "settle in quarantine");
    assert_eq!(out.exit_code, Some(110));

    // The watcher sees a quarantine committed by the other side with a seqno below its
    // best state, and challenges within the quarantine.
    f.chain.advance(QUARANTINE / 2);
    assert_eq!(
        w.watch(&q, f.chain.now()),
        WatchAction::Challenge {
            deadline: q.quarantine_starts + QUARANTINE
        }
    );
    // The cheater cannot challenge its own state (unauthorized_challenge).
    let own = ChannelMessage::ChallengeQuarantinedState(
        OneSigned::sign(
            Side::A,
            &f.ka,
            cocoon_protocol::channel::messages::ChallengeBody {
                channel_id: f.params.channel_id,
                sch_a: w.best_state().expect("best").clone(),
                sch_b: w.own_state().expect("own"),
            },
        )
        .expect("sign"),
    );
    assert_eq!(
        f.internal(Side::A, GAS_MONEY, &own, "challenge by committer")
            .exit_code,
        Some(109)
    );
    let challenge = ChannelMessage::ChallengeQuarantinedState(w.challenge().expect("challenge"));
    assert_eq!(
        f.internal(Side::B, GAS_MONEY, &challenge, "challenge")
            .exit_code,
        Some(0)
    );
    let q = f.storage().quarantine.expect("quarantined");
    assert_eq!(q.state_a.seqno, SeqNo(10));
    assert_eq!(q.state_a.sent, NanoTon(best.sent.0 + fine), "cheater fined");
    assert_eq!(q.challenged, Some(true));
    assert_eq!(
        f.internal(Side::B, GAS_MONEY, &challenge, "challenge twice")
            .exit_code,
        Some(115)
    );
    let q = f.storage().quarantine.expect("quarantined");
    assert!(matches!(
        w.watch(&q, f.chain.now()),
        WatchAction::WaitUntil { .. }
    ));

    // After the quarantine: challenges are too late, settling is open.
    f.chain.advance(QUARANTINE / 2 + 1);
    assert_eq!(
        f.internal(Side::B, GAS_MONEY, &challenge, "challenge too late")
            .exit_code,
        Some(111)
    );
    assert_eq!(
        f.internal(Side::B, GAS_MONEY, &settle(&f), "settle conditionals")
            .exit_code,
        Some(0)
    );
    assert_eq!(
        f.storage().quarantine.expect("q").challenged,
        None,
        "settle drops the bit (FunC source)"
    );
    f.chain.advance(SETTLE_WINDOW);
    assert_eq!(
        f.internal(Side::B, GAS_MONEY, &settle(&f), "settle too late")
            .exit_code,
        Some(112)
    );
    let q = f.storage().quarantine.expect("quarantined");
    assert_eq!(w.watch(&q, f.chain.now()), WatchAction::Finish);

    let contract_before = f.chain.balance(&f.channel).expect("balance");
    let outs = f
        .chain
        .send_external(
            &f.channel.clone(),
            ChannelMessage::FinishUncooperativeClose
                .to_cell()
                .expect("cell"),
        )
        .expect("runs");
    let out = f.record("finish uncooperative close", &outs);
    assert_eq!(out.exit_code, Some(0));
    let sent: u128 = out.out.iter().map(|t| t.value + t.fwd_fee).sum();
    assert_eq!(
        contract_before,
        out.total_fees + sent,
        "finish conserves value"
    );
    let owed = best.sent.0 + fine;
    assert_eq!(
        f.chain.balance(&f.dest_b).expect("b"),
        dep_b + owed - f.chain.lump_price(),
        "worker paid + fine"
    );
    assert!(f.chain.balance(&f.dest_a).expect("a") > dep_a - owed);
    let st = f.storage();
    assert!(!st.inited);
    assert_eq!((st.committed_seqno_a, st.committed_seqno_b), (11, 1));
    f.print_gas("uncooperative");
}

#[test]
fn contract_hazards_the_off_chain_rules_prevent() {
    let (dep_a, dep_b, fine) = (TON, TON / 10, TON / 10);
    let mut f = Fixture::open(0xc0c0_0003, dep_a, dep_b, fine);

    // A seqno of 2^32 is accepted by the signature checks and then cannot be stored:
    // exit 5 after accept_message, gas burned. The off-chain rule refuses to sign it.
    let close = CloseBody {
        channel_id: f.params.channel_id,
        balance_a: NanoTon(dep_a),
        balance_b: NanoTon(dep_b),
        seqno_a: SeqNo(1 << 32),
        seqno_b: SeqNo(1),
    };
    let out = f.external(
        &ChannelMessage::CooperativeClose(f.two_signed(close)),
        "close with seqno 2^32",
    );
    assert_eq!((out.included, out.exit_code), (true, Some(5)));
    assert!(out.gas_used > 0);
    assert_eq!(
        state::close_body_for(
            &f.params,
            &SemiChannelBody::new(SeqNo(u32::MAX as u64), NanoTon(0)),
            &SemiChannelBody::new(SeqNo(0), NanoTon(0)),
        )
        .expect_err("refused")
        .rule(),
        "seqno-on-chain"
    );

    // A state whose sent exceeds A's balance: the contract takes it into quarantine,
    // and finish then fails with exit 5, now and forever: the funds are locked.
    let over = NanoTon(dep_a + 1);
    let sch_a = sign_state(
        f.params.channel_id,
        &f.ka,
        SemiChannelBody::new(SeqNo(1), over),
        None,
    )
    .expect("sign");
    let sch_b = sign_state(
        f.params.channel_id,
        &f.kb,
        SemiChannelBody::new(SeqNo(0), NanoTon(0)),
        None,
    )
    .expect("sign");
    let mut w = Payee::new(
        f.params.clone(),
        Side::B,
        f.kb.clone(),
        PRICE,
        NanoTon(0),
        None,
    )
    .expect("payee");
    assert_eq!(
        w.accept_payment(sch_a.clone()).expect_err("refused").rule(),
        "balance-non-negative"
    );
    let start = cocoon_protocol::channel::messages::StartCloseBody {
        channel_id: f.params.channel_id,
        sch_a,
        sch_b,
    };
    let msg = ChannelMessage::StartUncooperativeClose(
        OneSigned::sign(Side::B, &f.kb, start).expect("sign"),
    );
    assert_eq!(
        f.internal(Side::B, GAS_MONEY, &msg, "start with sent > balance")
            .exit_code,
        Some(0)
    );
    f.chain.advance(QUARANTINE + SETTLE_WINDOW + 1);
    let finish = f.internal(
        Side::B,
        GAS_MONEY,
        &ChannelMessage::FinishUncooperativeClose,
        "finish (A negative)",
    );
    // On TON this finish fails with exit 5 (range check storing a negative payout), and
    // every later one too: the funds are locked (scripts/ton/replay.js shows it with
    // @ton/sandbox). tycho-types 0.3.6's `store_var_bigint` does not refuse a negative
    // value for STGRAMS, so in the embedded TVM it "succeeds": A's payout takes the
    // whole balance and B, owed deposit + sent, gets nothing. Either way the worker
    // loses what the states say it is owed; the off-chain rule above prevents both.
    assert_eq!(
        finish.exit_code,
        Some(0),
        "tycho-vm divergence (TON: exit 5)"
    );
    assert_eq!(
        f.chain.balance(&f.dest_b).expect("b"),
        0,
        "worker paid nothing"
    );
    let last = f.chain.transcript().len() - 1;
    f.dump_transcript_noting(
        "hazards",
        &[(
            last,
            "tycho-types 0.3.6 STGRAMS stores a negative amount; TON throws exit 5",
        )],
    );
    f.gas.push(("(see above)".into(), None, 0));
    eprintln!("gas (hazards):");
    for (step, exit, gas) in &f.gas {
        eprintln!(
            "  {step:<40} exit {:>5} gas {gas:>6}",
            exit.map_or("-".into(), |e| e.to_string())
        );
    }
}

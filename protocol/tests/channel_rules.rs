//! The off-chain rules of a payment channel, each refusal checked by the rule it names:
//! forged signatures, signatures swapped between parties, replays, lower `sent`,
//! seqnos the contract cannot store, states that would drive a balance negative,
//! payments beyond what was served, serving beyond the credit window. Property tests
//! drive a payer and a payee through random batches.

use cocoon_protocol::channel::state::{close_body_for, sign_state};
use cocoon_protocol::channel::*;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

const ID: ChannelId = ChannelId(0xc0c0);
const FINE: NanoTon = NanoTon(1_000);
const DEPOSIT_CLIENT: NanoTon = NanoTon(1_000_000);
const DEPOSIT_WORKER: NanoTon = NanoTon(5_000);

fn client_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}
fn worker_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// Client is A, worker is B.
fn params() -> ChannelParams {
    ChannelParams {
        channel_id: ID,
        key_a: client_key().verifying_key(),
        key_b: worker_key().verifying_key(),
        deposit_a: DEPOSIT_CLIENT,
        deposit_b: DEPOSIT_WORKER,
        closing: ClosingConfig {
            quarantine_duration: 3600,
            misbehavior_fine: FINE,
            conditional_close_duration: 1800,
        },
    }
}

const PRICE: Price = Price {
    per_prompt_token: NanoTon(10),
    per_completion_token: NanoTon(30),
};

fn payer() -> Payer {
    Payer::new(
        params(),
        Side::A,
        client_key(),
        PRICE,
        NanoTon(500_000),
        SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO),
    )
    .expect("payer")
}

fn payee(window: NanoTon) -> Payee {
    Payee::new(params(), Side::B, worker_key(), PRICE, window, None).expect("payee")
}

fn usage(p: u64, c: u64) -> Usage {
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
    }
}

fn rule<T: std::fmt::Debug>(r: Result<T, ChannelError>) -> &'static str {
    r.expect_err("must be refused").rule()
}

#[test]
fn honest_payment_is_accepted_and_counted() {
    let (mut c, mut w) = (payer(), payee(NanoTon(1_000)));
    w.authorize(usage(10, 20)).expect("within credit window");
    c.record_served(usage(10, 20)).expect("within budget");
    let st = c.pay_owed().expect("sign");
    let acc = w.accept_payment(st).expect("accept");
    assert_eq!(acc.seqno, SeqNo(1));
    assert_eq!(acc.paid, NanoTon(100 + 600));
    assert_eq!(acc.increase, NanoTon(700));
}

#[test]
fn forged_signature_is_refused() {
    let (mut c, mut w) = (payer(), payee(NanoTon(1_000)));
    c.record_served(usage(10, 0)).expect("served");
    let mut st = c.pay_owed().expect("sign");
    st.signature[3] ^= 0x40;
    assert_eq!(rule(w.accept_payment(st.clone())), "signature");
    // A tampered amount under a genuine signature fails the same way.
    let mut st2 = c.pay_owed().expect("sign");
    st2.state.body.sent = NanoTon(st2.state.body.sent.0 + 1);
    assert_eq!(
        w.accept_payment(st2).expect_err("refused"),
        ChannelError::BadSignature { side: Side::A }
    );
}

#[test]
fn signatures_swapped_between_parties_are_refused() {
    let mut w = payee(NanoTon(1_000));
    // The worker's own key signs a state that claims to be the client's.
    let forged = sign_state(
        ID,
        &worker_key(),
        SemiChannelBody::new(SeqNo(1), NanoTon(10)),
        None,
    )
    .expect("sign");
    assert_eq!(
        w.accept_payment(forged).expect_err("refused"),
        ChannelError::BadSignature { side: Side::A }
    );
    // A two-party message with A's and B's signatures in each other's place.
    let body = CommitBody {
        channel_id: ID,
        seqno_a: SeqNo(1),
        seqno_b: SeqNo(1),
    };
    let h = body.signing_hash().expect("hash");
    let sa = cocoon_protocol::channel::keys::sign_hash(&client_key(), &h);
    let sb = cocoon_protocol::channel::keys::sign_hash(&worker_key(), &h);
    let swapped = TwoSigned {
        sig_a: sb,
        sig_b: sa,
        body: body.clone(),
    };
    let p = params();
    assert_eq!(rule(swapped.verify(&p.key_a, &p.key_b)), "signature");
    let right = TwoSigned {
        sig_a: sa,
        sig_b: sb,
        body,
    };
    right
        .verify(&p.key_a, &p.key_b)
        .expect("correct order verifies");
}

#[test]
fn replayed_state_is_refused() {
    let (mut c, mut w) = (payer(), payee(NanoTon(1_000)));
    c.record_served(usage(5, 0)).expect("served");
    let st = c.pay_owed().expect("sign");
    w.accept_payment(st.clone()).expect("first time");
    assert_eq!(
        w.accept_payment(st).expect_err("replay"),
        ChannelError::SeqnoNotIncreasing {
            found: SeqNo(1),
            last: SeqNo(1)
        }
    );
}

#[test]
fn lower_sent_is_refused_by_payee_and_payer() {
    let mut w = payee(NanoTon(1_000));
    let k = client_key();
    let hi = sign_state(ID, &k, SemiChannelBody::new(SeqNo(1), NanoTon(500)), None).expect("sign");
    let lo = sign_state(ID, &k, SemiChannelBody::new(SeqNo(2), NanoTon(499)), None).expect("sign");
    w.accept_payment(hi).expect("accept");
    assert_eq!(rule(w.accept_payment(lo)), "sent-not-lower");

    let mut c = payer();
    c.record_served(usage(10, 0)).expect("served");
    c.pay(NanoTon(100)).expect("pay 100");
    assert_eq!(rule(c.pay(NanoTon(99))), "sent-not-lower");
}

#[test]
fn seqno_the_contract_cannot_store_is_refused() {
    let mut w = payee(NanoTon(1_000));
    let k = client_key();
    for seqno in [1u64 << 32, u32::MAX as u64, u64::MAX] {
        let st =
            sign_state(ID, &k, SemiChannelBody::new(SeqNo(seqno), NanoTon(1)), None).expect("sign");
        assert_eq!(
            rule(w.accept_payment(st)),
            "seqno-on-chain",
            "seqno {seqno}"
        );
    }
    // The payer refuses to sign past the limit too.
    let mut c = Payer::new(
        params(),
        Side::A,
        client_key(),
        PRICE,
        NanoTon(500_000),
        SemiChannelBody::new(SeqNo::MAX_ON_CHAIN, NanoTon::ZERO),
    )
    .expect("payer");
    c.record_served(usage(1, 0)).expect("served");
    assert_eq!(rule(c.pay_owed()), "seqno-on-chain");
    // The largest storable seqno is fine.
    let ok = sign_state(
        ID,
        &k,
        SemiChannelBody::new(SeqNo::MAX_ON_CHAIN, NanoTon(1)),
        None,
    )
    .expect("sign");
    w.accept_payment(ok).expect("MAX_ON_CHAIN accepted");
}

#[test]
fn balance_negative_states_are_refused() {
    let mut w = payee(NanoTon(u128::MAX >> 9));
    let k = client_key();
    // sent + fine must stay within the deposit (plus what the client received: none).
    let edge = DEPOSIT_CLIENT.0 - FINE.0;
    let over = sign_state(
        ID,
        &k,
        SemiChannelBody::new(SeqNo(1), NanoTon(edge + 1)),
        None,
    )
    .expect("sign");
    assert_eq!(
        w.accept_payment(over).expect_err("refused"),
        ChannelError::BalanceNegative {
            side: Side::A,
            owed: NanoTon(edge + 1 + FINE.0),
            available: DEPOSIT_CLIENT
        }
    );
    let at = sign_state(ID, &k, SemiChannelBody::new(SeqNo(1), NanoTon(edge)), None).expect("sign");
    w.accept_payment(at).expect("exactly at the limit");

    // A fine larger than a deposit is refused when the channel is set up.
    let mut p = params();
    p.closing.misbehavior_fine = NanoTon(DEPOSIT_WORKER.0 + 1);
    assert_eq!(
        Payee::new(p, Side::B, worker_key(), PRICE, NanoTon(0), None)
            .expect_err("refused")
            .rule(),
        "fine-covered"
    );
    // Close balances refuse states that drive a side negative.
    let a = SemiChannelBody::new(SeqNo(1), NanoTon(DEPOSIT_CLIENT.0));
    let b = SemiChannelBody::new(SeqNo(0), NanoTon(0));
    assert_eq!(
        rule(close_body_for(&params(), &a, &b)),
        "balance-non-negative"
    );
}

#[test]
fn payer_never_pays_more_than_served_or_agreed() {
    let mut c = payer();
    c.record_served(usage(10, 0)).expect("served");
    assert_eq!(
        c.pay(NanoTon(101)).expect_err("refused"),
        ChannelError::PayMoreThanOwed {
            asked: NanoTon(101),
            owed: NanoTon(100)
        }
    );
    // Budget is 500_000: 16_667 completion tokens cost 500_010.
    assert_eq!(rule(c.record_served(usage(0, 16_667))), "agreed-budget");
    assert_eq!(c.served(), usage(10, 0), "refused tokens are not counted");
}

#[test]
fn payee_stops_serving_when_payment_lags() {
    let (mut c, mut w) = (payer(), payee(NanoTon(300)));
    w.authorize(usage(0, 10)).expect("300 within window");
    assert_eq!(rule(w.authorize(usage(1, 0))), "credit-window");
    c.record_served(usage(0, 10)).expect("served");
    w.accept_payment(c.pay_owed().expect("sign"))
        .expect("accept");
    w.authorize(usage(0, 10)).expect("window open again");
}

#[test]
fn state_of_another_channel_is_refused() {
    let mut w = payee(NanoTon(1_000));
    let st = sign_state(
        ChannelId(1),
        &client_key(),
        SemiChannelBody::new(SeqNo(1), NanoTon(1)),
        None,
    )
    .expect("sign");
    assert_eq!(rule(w.accept_payment(st)), "channel-id");
}

#[test]
fn cooperative_close_is_signed_only_for_the_right_balances() {
    let (mut c, mut w) = (payer(), payee(NanoTon(10_000)));
    c.record_served(usage(100, 100)).expect("served");
    w.accept_payment(c.pay_owed().expect("sign"))
        .expect("accept");
    let close = w.close_body().expect("close body");
    assert_eq!(close.balance_a, NanoTon(DEPOSIT_CLIENT.0 - 4_000));
    assert_eq!(close.balance_b, NanoTon(DEPOSIT_WORKER.0 + 4_000));
    assert_eq!((close.seqno_a, close.seqno_b), (SeqNo(2), SeqNo(1)));
    w.sign_close(&close).expect("worker signs");
    let mut greedy = close.clone();
    greedy.balance_a = NanoTon(greedy.balance_a.0 + 1);
    assert_eq!(rule(w.sign_close(&greedy)), "close-balances");
}

#[test]
fn uncooperative_close_needs_a_counterparty_state() {
    let w = payee(NanoTon(10));
    assert_eq!(
        rule(w.start_uncooperative_close()),
        "have-counterparty-state"
    );
}

proptest! {
    /// Any sequence of batches: every state the payer signs is accepted by the payee,
    /// paid never exceeds the price of what was served, seqnos rise by one, and
    /// replaying any earlier state is refused.
    #[test]
    fn payer_and_payee_agree(batches in prop::collection::vec((0u64..200, 0u64..200), 1..40)) {
        let (mut c, mut w) = (payer(), payee(NanoTon(20_000)));
        let mut history = Vec::new();
        for (p, q) in batches {
            let u = usage(p, q);
            if w.authorize(u).is_err() { break; }
            if c.record_served(u).is_err() { break; }
            let st = c.pay_owed().expect("payer signs what was served");
            let acc = w.accept_payment(st.clone()).expect("payee accepts");
            prop_assert_eq!(acc.paid, c.owed().expect("owed"));
            prop_assert_eq!(acc.seqno.0, history.len() as u64 + 1);
            history.push(st);
        }
        for old in history.iter().rev().skip(1) {
            prop_assert_eq!(rule(w.accept_payment(old.clone())), "seqno-increases");
        }
    }

    /// Whatever seqno and sent a state carries, the payee accepts it only if every rule
    /// holds, and then the close it would sign leaves no side negative.
    #[test]
    fn accepted_states_are_always_closable(seqno in 0u64..(1u64 << 33), sent in 0u128..2_000_000) {
        let mut w = payee(NanoTon(0));
        let st = sign_state(ID, &client_key(), SemiChannelBody::new(SeqNo(seqno), NanoTon(sent)), None)
            .expect("sign");
        let ok = seqno >= 1 && SeqNo(seqno).fits_on_chain() && sent + FINE.0 <= DEPOSIT_CLIENT.0;
        match w.accept_payment(st) {
            Ok(_) => {
                prop_assert!(ok);
                let close = w.close_body().expect("closable");
                prop_assert_eq!(close.balance_a.0 + close.balance_b.0, DEPOSIT_CLIENT.0 + DEPOSIT_WORKER.0);
            }
            Err(e) => prop_assert!(!ok, "refused {e} though valid"),
        }
    }

    /// Semi-channel states survive a BoC round trip unchanged.
    #[test]
    fn signed_state_boc_round_trip(seqno in any::<u64>(), sent in 0u128..(1u128 << 120), cp in any::<Option<(u64, u64)>>()) {
        let cp = cp.map(|(s, v)| SemiChannelBody::new(SeqNo(s), NanoTon(v as u128)));
        let st = sign_state(ID, &client_key(), SemiChannelBody::new(SeqNo(seqno), NanoTon(sent)), cp).expect("sign");
        let back = SignedSemiChannel::from_boc(&st.to_boc().expect("boc")).expect("decode");
        prop_assert_eq!(back, st);
    }
}

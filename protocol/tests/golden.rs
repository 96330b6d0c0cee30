//! Golden vectors: every cell of the channel built in Rust must have the hash (and
//! BoC bytes) TON's own JS library computes for the same inputs, and every signature
//! must equal the one @ton/crypto makes with the same seed. The fixture is generated
//! by `scripts/ton/golden.js` and committed.

use cocoon_protocol::channel::layout::QuarantinedState;
use cocoon_protocol::channel::messages::{ChallengeBody, SettleBody, StartCloseBody};
use cocoon_protocol::channel::state::sign_state;
use cocoon_protocol::channel::*;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use tycho_types::boc::Boc;
use tycho_types::cell::Cell;

struct Golden(Value);

impl Golden {
    fn load() -> Self {
        let text = include_str!("fixtures/ton-golden.json");
        Golden(serde_json::from_str(text).expect("fixture is JSON"))
    }
    fn field(&self, name: &str, f: &str) -> String {
        self.0["cells"][name][f]
            .as_str()
            .unwrap_or_else(|| panic!("fixture lacks cells.{name}.{f}"))
            .to_string()
    }
    fn cell(&self, name: &str) -> Cell {
        Boc::decode(hex::decode(self.field(name, "boc")).expect("hex")).expect("boc")
    }
    /// Asserts that `ours` has the fixture's hash, and that the fixture's BoC decodes
    /// to the same cell tree. (BoC bytes themselves may differ in the order cells are
    /// listed: @ton/core and tycho-types order children differently, both valid.)
    fn check(&self, name: &str, ours: &Cell) {
        assert_eq!(
            hex::encode(ours.repr_hash().0),
            self.field(name, "hash"),
            "hash of {name}"
        );
        assert_eq!(
            self.cell(name).repr_hash(),
            ours.repr_hash(),
            "decoded hash of {name}"
        );
        let again = Boc::decode(Boc::encode(ours)).expect("our BoC decodes");
        assert_eq!(
            again.repr_hash(),
            ours.repr_hash(),
            "BoC round trip of {name}"
        );
    }
}

fn key(seed_hex: &str) -> SigningKey {
    let seed: [u8; 32] = hex::decode(seed_hex)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    SigningKey::from_bytes(&seed)
}

fn keys(g: &Golden) -> (SigningKey, SigningKey) {
    let a = key(g.0["keys"]["seed_a"].as_str().expect("seed_a"));
    let b = key(g.0["keys"]["seed_b"].as_str().expect("seed_b"));
    assert_eq!(
        hex::encode(a.verifying_key().to_bytes()),
        g.0["keys"]["pub_a"].as_str().expect("pub_a")
    );
    assert_eq!(
        hex::encode(b.verifying_key().to_bytes()),
        g.0["keys"]["pub_b"].as_str().expect("pub_b")
    );
    (a, b)
}

const ID: ChannelId = ChannelId(0x0123456789abcdef0fedcba987654321);

fn signed_states(ka: &SigningKey, kb: &SigningKey) -> (SignedSemiChannel, SignedSemiChannel) {
    let body_a = SemiChannelBody::new(SeqNo(5), NanoTon(1_234_567_890));
    let a = sign_state(ID, ka, body_a.clone(), None).expect("sign A");
    let b = sign_state(
        ID,
        kb,
        SemiChannelBody::new(SeqNo(2), NanoTon(0)),
        Some(body_a),
    )
    .expect("sign B");
    (a, b)
}

#[test]
fn semi_channel_states_and_signatures_match_ton_js() {
    let g = Golden::load();
    let (ka, kb) = keys(&g);
    let (a, b) = signed_states(&ka, &kb);
    g.check("state_a", &a.state.to_cell().expect("cell"));
    g.check("state_b", &b.state.to_cell().expect("cell"));
    assert_eq!(hex::encode(a.signature), g.field("state_a", "signature"));
    assert_eq!(hex::encode(b.signature), g.field("state_b", "signature"));
    g.check("signed_state_a", &a.to_cell().expect("cell"));
    g.check("signed_state_b", &b.to_cell().expect("cell"));
    // JS bytes decode to the same value.
    assert_eq!(
        SignedSemiChannel::from_cell(&g.cell("signed_state_b")).expect("decode"),
        b
    );

    let edge = sign_state(
        ID,
        &ka,
        SemiChannelBody::new(SeqNo::MAX_ON_CHAIN, NanoTon((1 << 119) + 12345)),
        Some(SemiChannelBody::new(SeqNo::MAX_ON_CHAIN, NanoTon(1))),
    )
    .expect("sign edge");
    g.check("state_edge", &edge.state.to_cell().expect("cell"));
    assert_eq!(
        hex::encode(edge.signature),
        g.field("state_edge", "signature")
    );
}

#[test]
fn message_bodies_match_ton_js() {
    let g = Golden::load();
    let (ka, kb) = keys(&g);
    let (sch_a, sch_b) = signed_states(&ka, &kb);

    let init = InitBody {
        channel_id: ID,
        balance_a: NanoTon(3_000_000_000),
        balance_b: NanoTon(500_000_000),
    };
    g.check("init_body", &init.to_cell().expect("cell"));
    let msg = ChannelMessage::Init(OneSigned::sign(Side::A, &ka, init).expect("sign"));
    g.check("msg_init", &msg.to_cell().expect("cell"));

    let close = CloseBody {
        channel_id: ID,
        balance_a: NanoTon(1_765_432_110),
        balance_b: NanoTon(1_734_567_890),
        seqno_a: SeqNo(6),
        seqno_b: SeqNo(3),
    };
    g.check("close_body", &close.to_cell().expect("cell"));
    let h = close.signing_hash().expect("hash");
    let two = TwoSigned {
        sig_a: cocoon_protocol::channel::keys::sign_hash(&ka, &h),
        sig_b: cocoon_protocol::channel::keys::sign_hash(&kb, &h),
        body: close,
    };
    two.verify(&ka.verifying_key(), &kb.verifying_key())
        .expect("both signatures verify");
    g.check(
        "msg_cooperative_close",
        &ChannelMessage::CooperativeClose(two)
            .to_cell()
            .expect("cell"),
    );

    let commit = CommitBody {
        channel_id: ID,
        seqno_a: SeqNo(5),
        seqno_b: SeqNo(2),
    };
    g.check("commit_body", &commit.to_cell().expect("cell"));
    let h = commit.signing_hash().expect("hash");
    let two = TwoSigned {
        sig_a: cocoon_protocol::channel::keys::sign_hash(&ka, &h),
        sig_b: cocoon_protocol::channel::keys::sign_hash(&kb, &h),
        body: commit,
    };
    g.check(
        "msg_cooperative_commit",
        &ChannelMessage::CooperativeCommit(two)
            .to_cell()
            .expect("cell"),
    );

    let start = StartCloseBody {
        channel_id: ID,
        sch_a: sch_a.clone(),
        sch_b: sch_b.clone(),
    };
    g.check("start_close_body", &start.to_cell().expect("cell"));
    let m = ChannelMessage::StartUncooperativeClose(
        OneSigned::sign(Side::B, &kb, start).expect("sign"),
    );
    g.check("msg_start_uncooperative_close", &m.to_cell().expect("cell"));

    let ch = ChallengeBody {
        channel_id: ID,
        sch_a,
        sch_b,
    };
    g.check("challenge_body", &ch.to_cell().expect("cell"));
    let m =
        ChannelMessage::ChallengeQuarantinedState(OneSigned::sign(Side::A, &ka, ch).expect("sign"));
    g.check("msg_challenge", &m.to_cell().expect("cell"));

    let settle = SettleBody {
        channel_id: ID,
        to_settle: None,
    };
    g.check("settle_body", &settle.to_cell().expect("cell"));
    let m =
        ChannelMessage::SettleConditionals(OneSigned::sign(Side::A, &ka, settle).expect("sign"));
    g.check("msg_settle", &m.to_cell().expect("cell"));

    g.check(
        "msg_finish",
        &ChannelMessage::FinishUncooperativeClose
            .to_cell()
            .expect("cell"),
    );
    let top = ChannelMessage::TopUp {
        add_a: NanoTon(3_000_000_000),
        add_b: NanoTon(0),
    };
    g.check("msg_top_up", &top.to_cell().expect("cell"));
}

#[test]
fn js_messages_decode_and_reencode_identically() {
    let g = Golden::load();
    for name in [
        "msg_init",
        "msg_cooperative_close",
        "msg_cooperative_commit",
        "msg_start_uncooperative_close",
        "msg_challenge",
        "msg_settle",
        "msg_finish",
        "msg_top_up",
    ] {
        let cell = g.cell(name);
        let msg = ChannelMessage::from_cell(&cell).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            msg.to_cell().expect("cell").repr_hash(),
            cell.repr_hash(),
            "{name}"
        );
    }
}

#[test]
fn storage_and_quarantine_match_ton_js() {
    let g = Golden::load();
    let (ka, kb) = keys(&g);
    let closing = ClosingConfig {
        quarantine_duration: 3600,
        misbehavior_fine: NanoTon(100_000_000),
        conditional_close_duration: 1800,
    };
    let payment = PaymentConfig {
        excess_fee: NanoTon(10_000_000),
        dest_a: StdAddress {
            workchain: 0,
            account: [0xaa; 32],
        },
        dest_b: StdAddress {
            workchain: 0,
            account: [0xbb; 32],
        },
    };
    let mut st = ChannelStorage::initial(
        ka.verifying_key().to_bytes(),
        kb.verifying_key().to_bytes(),
        ID,
        closing,
        payment,
    );
    g.check("storage_initial", &st.to_cell().expect("cell"));
    assert_eq!(
        ChannelStorage::from_cell(&g.cell("storage_initial")).expect("decode"),
        st
    );

    let mut q = QuarantinedState {
        state_a: SemiChannelBody::new(SeqNo(5), NanoTon(1_234_567_890)),
        state_b: SemiChannelBody::new(SeqNo(2), NanoTon(0)),
        quarantine_starts: 1_700_000_000,
        committed_by_a: false,
        challenged: Some(true),
    };
    g.check("quarantine_challenged", &q.to_cell().expect("cell"));
    st.inited = true;
    st.balance_a = NanoTon(3_000_000_000);
    st.balance_b = NanoTon(500_000_000);
    st.committed_seqno_a = 1;
    st.quarantine = Some(q.clone());
    g.check("storage_quarantined", &st.to_cell().expect("cell"));
    assert_eq!(
        ChannelStorage::from_cell(&g.cell("storage_quarantined")).expect("decode"),
        st
    );
    q.challenged = None;
    g.check("quarantine_settled", &q.to_cell().expect("cell"));
    assert_eq!(
        QuarantinedState::from_cell(&g.cell("quarantine_settled")).expect("decode"),
        q
    );
}

//! Property tests of the message codec: every message the contract accepts, with any
//! field values, survives cell and BoC round trips unchanged, and signatures made over
//! a body verify after the round trip (the hash is stable).

use cocoon_protocol::channel::messages::{ChallengeBody, SettleBody, StartCloseBody};
use cocoon_protocol::channel::state::sign_state;
use cocoon_protocol::channel::*;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn coins() -> impl Strategy<Value = NanoTon> {
    prop_oneof![
        (0u128..1_000_000).prop_map(NanoTon),
        (0u128..(1u128 << 120)).prop_map(NanoTon),
        Just(NanoTon::MAX_COINS),
    ]
}

fn message() -> impl Strategy<Value = ChannelMessage> {
    let ka = SigningKey::from_bytes(&[1; 32]);
    let kb = SigningKey::from_bytes(&[2; 32]);
    (
        0u8..8,
        any::<u128>(),
        coins(),
        coins(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(move |(kind, id, x, y, s1, s2, a_signs)| {
            let id = ChannelId(id);
            let (side, key) = if a_signs {
                (Side::A, &ka)
            } else {
                (Side::B, &kb)
            };
            let sch = |k: &SigningKey, s: u64, v: NanoTon, cp: bool| {
                let cp = cp.then(|| SemiChannelBody::new(SeqNo(s2), y));
                sign_state(id, k, SemiChannelBody::new(SeqNo(s), v), cp).expect("sign")
            };
            match kind {
                0 => ChannelMessage::TopUp { add_a: x, add_b: y },
                1 => ChannelMessage::Init(
                    OneSigned::sign(
                        side,
                        key,
                        InitBody {
                            channel_id: id,
                            balance_a: x,
                            balance_b: y,
                        },
                    )
                    .expect("sign"),
                ),
                2 => ChannelMessage::CooperativeClose(TwoSigned {
                    sig_a: [3; 64],
                    sig_b: [4; 64],
                    body: CloseBody {
                        channel_id: id,
                        balance_a: x,
                        balance_b: y,
                        seqno_a: SeqNo(s1),
                        seqno_b: SeqNo(s2),
                    },
                }),
                3 => ChannelMessage::CooperativeCommit(TwoSigned {
                    sig_a: [5; 64],
                    sig_b: [6; 64],
                    body: CommitBody {
                        channel_id: id,
                        seqno_a: SeqNo(s1),
                        seqno_b: SeqNo(s2),
                    },
                }),
                4 => ChannelMessage::StartUncooperativeClose(
                    OneSigned::sign(
                        side,
                        key,
                        StartCloseBody {
                            channel_id: id,
                            sch_a: sch(&ka, s1, x, true),
                            sch_b: sch(&kb, s2, y, false),
                        },
                    )
                    .expect("sign"),
                ),
                5 => ChannelMessage::ChallengeQuarantinedState(
                    OneSigned::sign(
                        side,
                        key,
                        ChallengeBody {
                            channel_id: id,
                            sch_a: sch(&ka, s1, x, false),
                            sch_b: sch(&kb, s2, y, true),
                        },
                    )
                    .expect("sign"),
                ),
                6 => ChannelMessage::SettleConditionals(
                    OneSigned::sign(
                        side,
                        key,
                        SettleBody {
                            channel_id: id,
                            to_settle: None,
                        },
                    )
                    .expect("sign"),
                ),
                _ => ChannelMessage::FinishUncooperativeClose,
            }
        })
}

proptest! {
    #[test]
    fn messages_round_trip(msg in message()) {
        let cell = msg.to_cell().expect("encodes");
        prop_assert_eq!(&ChannelMessage::from_cell(&cell).expect("decodes"), &msg);
        let boc = msg.to_boc().expect("boc");
        let back = ChannelMessage::from_boc(&boc).expect("decodes");
        let again = back.to_cell().expect("encodes");
        prop_assert_eq!(again.repr_hash(), cell.repr_hash());
        let (ka, kb) = (SigningKey::from_bytes(&[1; 32]).verifying_key(), SigningKey::from_bytes(&[2; 32]).verifying_key());
        match back {
            ChannelMessage::Init(m) => m.verify(if m.signer == Side::A { &ka } else { &kb }).expect("verifies"),
            ChannelMessage::StartUncooperativeClose(m) => {
                m.verify(if m.signer == Side::A { &ka } else { &kb }).expect("verifies");
                verify_state_sig(&m.body.sch_a, &ka);
                verify_state_sig(&m.body.sch_b, &kb);
            }
            ChannelMessage::ChallengeQuarantinedState(m) => m.verify(if m.signer == Side::A { &ka } else { &kb }).expect("verifies"),
            ChannelMessage::SettleConditionals(m) => m.verify(if m.signer == Side::A { &ka } else { &kb }).expect("verifies"),
            _ => {}
        }
    }

    /// Truncating a message's BoC anywhere never panics and never decodes to a message
    /// other than the original.
    #[test]
    fn truncated_bocs_are_refused(msg in message(), cut in 0usize..400) {
        let boc = msg.to_boc().expect("boc");
        let cut = cut.min(boc.len().saturating_sub(1));
        if let Ok(m) = ChannelMessage::from_boc(&boc[..cut]) {
            prop_assert_eq!(m, msg);
        }
    }
}

fn verify_state_sig(st: &SignedSemiChannel, key: &ed25519_dalek::VerifyingKey) {
    let h = st.state.signing_hash().expect("hash");
    cocoon_protocol::channel::keys::verify_hash(key, &h, &st.signature, Side::A)
        .expect("state signature verifies");
}

//! A payee's rules for a peer's request to open or to close a channel with it: what is
//! checked before anything is signed or stored, each refusal named by its rule (as
//! [`ChannelError`](super::ChannelError) names a state's). Pure functions over the
//! decoded request, so the node and the fuzz target run the same checks.
//!
//! Two checks need more than the request: the contract address its storage deploys at
//! (computed from the contract's code, which `cocoon-ton` holds) and whether the channel
//! id is already in the node's store. The driver computes those and asks
//! [`check_open_address`] and [`check_channel_owner`].

use tycho_types::boc::Boc;

use super::keys::{verify_hash, verifying_key};
use super::layout::{ChannelStorage, SemiChannelBody, SignedSemiChannel, StdAddress};
use super::messages::CloseBody;
use super::units::{ChannelId, NanoTon, SeqNo, Side};
use crate::PeerId;
use crate::identity::peer_id_of;
use crate::proto::channel::{CloseProposal, OpenNotice};

/// Why a payee refuses a peer's open or close request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the channel's storage is not a BoC or does not decode: {0}")]
    Storage(String),
    #[error("key B is not mine")]
    NotMyKey,
    #[error("key A is not the key of the peer asking")]
    KeyANotRequester,
    #[error("B's payouts would not go to my wallet")]
    PayoutsElsewhere,
    #[error("a fine above my zero deposit could lock the channel")]
    FineAboveDeposit,
    #[error("not a fresh channel")]
    NotFresh,
    #[error("workchain {0} is out of range")]
    Workchain(i32),
    #[error("the address is not the storage's")]
    AddressMismatch,
    #[error("the payer's signed opening state: {0}")]
    OpeningState(String),
    #[error("channel id already in use")]
    ChannelIdInUse,
    #[error("channel id must be 16 bytes, not {0}")]
    ChannelIdLength(usize),
    #[error("not a channel with you")]
    NotYourChannel,
    #[error("the proposed close {asked} differs from mine {mine}")]
    CloseDiffers { asked: String, mine: String },
}

impl Refusal {
    /// The short name of the rule broken, for logs and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Storage(_) => "storage-decodes",
            Refusal::NotMyKey => "key-b-mine",
            Refusal::KeyANotRequester => "key-a-requester",
            Refusal::PayoutsElsewhere => "payouts-mine",
            Refusal::FineAboveDeposit => "no-fine",
            Refusal::NotFresh => "fresh",
            Refusal::Workchain(_) => "workchain",
            Refusal::AddressMismatch => "address-matches",
            Refusal::OpeningState(_) => "opening-state",
            Refusal::ChannelIdInUse => "channel-id-free",
            Refusal::ChannelIdLength(_) => "channel-id-length",
            Refusal::NotYourChannel => "channel-party",
            Refusal::CloseDiffers { .. } => "close-matches",
        }
    }
}

/// Who is asked, and by whom.
#[derive(Clone, Copy, Debug)]
pub struct Payee<'a> {
    /// The payee's channel key (its identity key).
    pub key: &'a [u8; 32],
    /// Where the payee's payouts must go.
    pub payouts: &'a StdAddress,
    /// The peer asking.
    pub requester: &'a PeerId,
}

/// An open request that passed every rule [`check_open`] applies.
#[derive(Clone, Debug)]
pub struct ProposedOpen {
    pub storage: ChannelStorage,
    /// The payer's (A's) zero state, signed: B's way to close before A pays anything.
    pub payer_state: SignedSemiChannel,
    /// The contract's address as the request gives it.
    pub address: StdAddress,
    pub deposit: NanoTon,
}

/// The zero state both sides start from: seqno 0, nothing sent.
pub fn zero_body() -> SemiChannelBody {
    SemiChannelBody::new(SeqNo::ZERO, NanoTon::ZERO)
}

/// Decodes a peer's open request and checks it against the payee: B's key is the payee's,
/// A's is the requester's, B's payouts go to the payee, no fine (B deposits nothing), a
/// fresh channel, and A's signed zero state for this channel.
pub fn check_open(n: &OpenNotice, payee: Payee<'_>) -> Result<ProposedOpen, Refusal> {
    let cell = Boc::decode(&n.storage_boc).map_err(|e| Refusal::Storage(e.to_string()))?;
    let storage = ChannelStorage::from_cell(&cell).map_err(|e| Refusal::Storage(e.to_string()))?;
    if storage.key_b != *payee.key {
        return Err(Refusal::NotMyKey);
    }
    if !peer_id_of(&storage.key_a).is_ok_and(|p| p == *payee.requester) {
        return Err(Refusal::KeyANotRequester);
    }
    if storage.payment.dest_b != *payee.payouts {
        return Err(Refusal::PayoutsElsewhere);
    }
    if storage.closing.misbehavior_fine != NanoTon::ZERO {
        return Err(Refusal::FineAboveDeposit);
    }
    if storage.inited || storage.quarantine.is_some() {
        return Err(Refusal::NotFresh);
    }
    let workchain = i8::try_from(n.workchain).map_err(|_| Refusal::Workchain(n.workchain))?;
    let account: [u8; 32] = n
        .account
        .as_slice()
        .try_into()
        .map_err(|_| Refusal::AddressMismatch)?;
    let payer_state = check_zero_state(
        &n.payer_state_boc,
        &storage.key_a,
        Side::A,
        storage.channel_id,
    )?;
    Ok(ProposedOpen {
        storage,
        payer_state,
        address: StdAddress { workchain, account },
        deposit: NanoTon(u128::from(n.deposit_nanoton)),
    })
}

/// The request's address against `deployed_at`, the address its storage deploys at.
pub fn check_open_address(open: &ProposedOpen, deployed_at: &StdAddress) -> Result<(), Refusal> {
    if open.address == *deployed_at {
        Ok(())
    } else {
        Err(Refusal::AddressMismatch)
    }
}

/// A channel id already stored must belong to the same peer (`known_peer`: the stored
/// party's peer id, as text).
pub fn check_channel_owner(known_peer: Option<&str>, requester: &PeerId) -> Result<(), Refusal> {
    match known_peer {
        Some(known) if known != requester.to_string() => Err(Refusal::ChannelIdInUse),
        _ => Ok(()),
    }
}

/// `side`'s zero state for `channel_id`, signed by `key`.
pub fn check_zero_state(
    boc: &[u8],
    key: &[u8; 32],
    side: Side,
    channel_id: ChannelId,
) -> Result<SignedSemiChannel, Refusal> {
    let bad = |e: String| Refusal::OpeningState(e);
    let s = SignedSemiChannel::from_boc(boc).map_err(|e| bad(e.to_string()))?;
    if s.state.channel_id != channel_id {
        return Err(bad("signed for another channel".into()));
    }
    if s.state.body != zero_body() {
        return Err(bad("not seqno 0, sent 0".into()));
    }
    let hash = s.state.signing_hash().map_err(|e| bad(e.to_string()))?;
    let key = verifying_key(key).map_err(|e| bad(e.to_string()))?;
    verify_hash(&key, &hash, &s.signature, side).map_err(|e| bad(e.to_string()))?;
    Ok(s)
}

/// The channel id a close proposal names.
pub fn close_channel_id(c: &CloseProposal) -> Result<ChannelId, Refusal> {
    let id: [u8; 16] = c
        .channel_id
        .as_slice()
        .try_into()
        .map_err(|_| Refusal::ChannelIdLength(c.channel_id.len()))?;
    Ok(ChannelId(u128::from_be_bytes(id)))
}

/// A close proposal from `requester` for a channel whose party is `party` (as text)
/// against `mine`, the close this payee would sign (from the latest states).
pub fn check_close(
    c: &CloseProposal,
    requester: &PeerId,
    party: &str,
    mine: &CloseBody,
) -> Result<(), Refusal> {
    if party != requester.to_string() {
        return Err(Refusal::NotYourChannel);
    }
    let asked = CloseBody {
        channel_id: close_channel_id(c)?,
        balance_a: NanoTon(u128::from(c.balance_a_nanoton)),
        balance_b: NanoTon(u128::from(c.balance_b_nanoton)),
        seqno_a: SeqNo(c.seqno_a),
        seqno_b: SeqNo(c.seqno_b),
    };
    if asked == *mine {
        return Ok(());
    }
    let show = |b: &CloseBody| {
        format!(
            "(A {} B {}, seqnos {} {})",
            b.balance_a.0, b.balance_b.0, b.seqno_a.0, b.seqno_b.0
        )
    };
    Err(Refusal::CloseDiffers {
        asked: show(&asked),
        mine: show(mine),
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::channel::layout::{ClosingConfig, PaymentConfig};
    use crate::channel::state::sign_state;

    const ID: ChannelId = ChannelId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);

    struct World {
        payer: SigningKey,
        payee_key: [u8; 32],
        payouts: StdAddress,
        requester: PeerId,
    }

    fn world() -> World {
        let payer = SigningKey::from_bytes(&[7; 32]);
        let requester = peer_id_of(&payer.verifying_key().to_bytes()).expect("valid key");
        World {
            payer,
            payee_key: SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes(),
            payouts: StdAddress {
                workchain: 0,
                account: [3; 32],
            },
            requester,
        }
    }

    fn notice(w: &World, edit: impl FnOnce(&mut ChannelStorage)) -> OpenNotice {
        let mut storage = ChannelStorage::initial(
            w.payer.verifying_key().to_bytes(),
            w.payee_key,
            ID,
            ClosingConfig {
                quarantine_duration: 60,
                misbehavior_fine: NanoTon::ZERO,
                conditional_close_duration: 60,
            },
            PaymentConfig {
                excess_fee: NanoTon(1),
                dest_a: StdAddress {
                    workchain: 0,
                    account: [1; 32],
                },
                dest_b: w.payouts,
            },
        );
        edit(&mut storage);
        let payer_state = sign_state(ID, &w.payer, zero_body(), Some(zero_body()))
            .expect("signs")
            .to_boc()
            .expect("encodes");
        OpenNotice {
            workchain: 0,
            account: vec![5; 32],
            storage_boc: Boc::encode(storage.to_cell().expect("cell")),
            deposit_nanoton: 1_000,
            payer_state_boc: payer_state,
            deployed: false,
        }
    }

    fn check(w: &World, n: &OpenNotice) -> Result<ProposedOpen, Refusal> {
        check_open(
            n,
            Payee {
                key: &w.payee_key,
                payouts: &w.payouts,
                requester: &w.requester,
            },
        )
    }

    #[test]
    fn a_fair_open_passes_and_each_unfair_one_names_its_rule() {
        let w = world();
        let open = check(&w, &notice(&w, |_| {})).expect("a fair open");
        assert_eq!(open.deposit, NanoTon(1_000));
        assert_eq!(open.storage.channel_id, ID);
        let refused = |edit: fn(&mut ChannelStorage)| {
            check(&w, &notice(&w, edit)).expect_err("refused").rule()
        };
        assert_eq!(refused(|s| s.key_b = [1; 32]), "key-b-mine");
        assert_eq!(refused(|s| s.key_a = [1; 32]), "key-a-requester");
        assert_eq!(
            refused(|s| s.payment.dest_b.account = [4; 32]),
            "payouts-mine"
        );
        assert_eq!(
            refused(|s| s.closing.misbehavior_fine = NanoTon(1)),
            "no-fine"
        );
        assert_eq!(refused(|s| s.inited = true), "fresh");
        // A's state signed for another channel.
        assert_eq!(refused(|s| s.channel_id = ChannelId(1)), "opening-state");

        let mut n = notice(&w, |_| {});
        n.workchain = 300;
        assert_eq!(check(&w, &n).expect_err("refused").rule(), "workchain");
        let mut n = notice(&w, |_| {});
        n.storage_boc.truncate(10);
        assert_eq!(
            check(&w, &n).expect_err("refused").rule(),
            "storage-decodes"
        );
        let mut n = notice(&w, |_| {});
        let last = n.payer_state_boc.len() - 1;
        n.payer_state_boc[last] ^= 1;
        assert_eq!(check(&w, &n).expect_err("refused").rule(), "opening-state");
        // A state that is not the zero state.
        let mut n = notice(&w, |_| {});
        let paid = SemiChannelBody::new(SeqNo(1), NanoTon(5));
        n.payer_state_boc = sign_state(ID, &w.payer, paid, None)
            .expect("signs")
            .to_boc()
            .expect("encodes");
        assert_eq!(check(&w, &n).expect_err("refused").rule(), "opening-state");
    }

    #[test]
    fn the_address_and_the_owner_are_checked_against_what_the_driver_knows() {
        let w = world();
        let open = check(&w, &notice(&w, |_| {})).expect("a fair open");
        assert_eq!(check_open_address(&open, &open.address), Ok(()));
        let elsewhere = StdAddress {
            workchain: 0,
            account: [6; 32],
        };
        assert_eq!(
            check_open_address(&open, &elsewhere),
            Err(Refusal::AddressMismatch)
        );
        assert_eq!(check_channel_owner(None, &w.requester), Ok(()));
        let me = w.requester.to_string();
        assert_eq!(check_channel_owner(Some(&me), &w.requester), Ok(()));
        assert_eq!(
            check_channel_owner(Some("someone else"), &w.requester),
            Err(Refusal::ChannelIdInUse)
        );
    }

    #[test]
    fn a_close_must_come_from_the_party_and_match_the_latest_states() {
        let w = world();
        let mine = CloseBody {
            channel_id: ID,
            balance_a: NanoTon(900),
            balance_b: NanoTon(100),
            seqno_a: SeqNo(4),
            seqno_b: SeqNo(0),
        };
        let proposal = CloseProposal {
            channel_id: ID.0.to_be_bytes().to_vec(),
            balance_a_nanoton: 900,
            balance_b_nanoton: 100,
            seqno_a: 4,
            seqno_b: 0,
        };
        let party = w.requester.to_string();
        assert_eq!(check_close(&proposal, &w.requester, &party, &mine), Ok(()));
        let err = check_close(&proposal, &w.requester, "another peer", &mine);
        assert_eq!(err, Err(Refusal::NotYourChannel));
        let greedy = CloseProposal {
            balance_b_nanoton: 1_000,
            ..proposal.clone()
        };
        let err = check_close(&greedy, &w.requester, &party, &mine).expect_err("refused");
        assert_eq!(err.rule(), "close-matches");
        let short = CloseProposal {
            channel_id: vec![1; 15],
            ..proposal
        };
        assert_eq!(
            check_close(&short, &w.requester, &party, &mine),
            Err(Refusal::ChannelIdLength(15))
        );
    }
}

//! The bodies of the messages the contract accepts (`recv_internal` and
//! `recv_external` share one dispatcher), byte for byte as `async-channel.func` parses
//! them:
//!
//! ```text
//! op:uint32 then, per op:
//!   top_up_balance               add_A:Coins add_B:Coins
//!   init_channel                 is_A:Bool signature:bits512 | tag channel_id balance_A balance_B
//!   cooperative_close            sig_A:^bits512 sig_B:^bits512 | tag channel_id balance_A balance_B seqno_A:uint64 seqno_B:uint64
//!   cooperative_commit           sig_A:^bits512 sig_B:^bits512 | tag channel_id seqno_A:uint64 seqno_B:uint64
//!   start_uncooperative_close    signed_by_A:Bool signature:bits512 | tag channel_id sch_A:^SignedSemiChannel sch_B:^SignedSemiChannel
//!   challenge_quarantined_state  challenged_by_A:Bool signature:bits512 | (same as above, own tag)
//!   settle_conditionals          from_A:Bool signature:bits512 | tag channel_id conditionals_to_settle:(HashmapE 32 Cell)
//!   finish_uncooperative_close   (nothing)
//! ```
//!
//! What follows `|` is a [`SignedBody`]: the contract takes `slice_hash` of the rest of
//! the message there, which is the representation hash of the body built as its own
//! cell, so that hash is what each party signs.

use ed25519_dalek::{SigningKey, VerifyingKey};
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder, CellSlice};

use super::error::{ChannelError, LayoutError};
use super::keys::{sign_hash, verify_hash};
use super::layout::{
    SignedSemiChannel, build, ensure_empty, load_bytes, load_coins, load_maybe_ref, slice_of,
    store_coins, store_maybe_ref,
};
use super::units::{ChannelId, NanoTon, SeqNo, Side};

type Res<T> = Result<T, LayoutError>;

/// Op codes: crc32 of the TL-B constructor strings in `async-channel.func`.
pub mod op {
    /// `top_up_balance add_A:Coins add_B:Coins = InternalMsgBody`
    pub const TOP_UP_BALANCE: u32 = 0x67c7_d281;
    /// `init_channel ...`
    pub const INIT_CHANNEL: u32 = 0x0e06_20c2;
    /// `cooperative_close ...`
    pub const COOPERATIVE_CLOSE: u32 = 0x5577_587e;
    /// `cooperative_commit ...`
    pub const COOPERATIVE_COMMIT: u32 = 0x79a1_26ef;
    /// `start_uncooperative_close ...`
    pub const START_UNCOOPERATIVE_CLOSE: u32 = 0x1f15_1acf;
    /// `challenge_quarantined_state ...`
    pub const CHALLENGE_QUARANTINED_STATE: u32 = 0x088e_aa32;
    /// `settle_conditionals ...`
    pub const SETTLE_CONDITIONALS: u32 = 0x66f6_f069;
    /// `finish_uncooperative_close = InternalMsgBody`
    pub const FINISH_UNCOOPERATIVE_CLOSE: u32 = 0x2543_2a91;
    /// `channel_closed channel_id:uint128 = InternalMsgBody` (the payouts' body)
    pub const CHANNEL_CLOSED: u32 = 0xdddc_88ba;
}

/// Tags inside signed bodies (ASCII: "init", "Clos", "CCmt", "UnCl", "ChgQ", "ClCn").
pub mod tag {
    /// `tag::init`
    pub const INIT: u32 = 0x696e_6974;
    /// `tag::cooperative_close`
    pub const COOPERATIVE_CLOSE: u32 = 0x436c_6f73;
    /// `tag::cooperative_commit`
    pub const COOPERATIVE_COMMIT: u32 = 0x4343_6d74;
    /// `tag::start_uncooperative_close`
    pub const START_UNCOOPERATIVE_CLOSE: u32 = 0x556e_436c;
    /// `tag::challenge_state`
    pub const CHALLENGE_STATE: u32 = 0x4368_6751;
    /// `tag::settle_conditionals`
    pub const SETTLE_CONDITIONALS: u32 = 0x436c_436e;
}

/// A body that is signed: a tag, then fields. Its hash as a standalone cell is what
/// the contract checks signatures against.
pub trait SignedBody: Sized {
    /// The tag the contract checks.
    const TAG: u32;
    /// The layout's name, for errors.
    const NAME: &'static str;
    /// Appends the fields after the tag.
    fn store_fields(&self, b: &mut CellBuilder) -> Res<()>;
    /// Reads the fields after the tag.
    fn load_fields(s: &mut CellSlice<'_>) -> Res<Self>;
    /// The channel the body is for.
    fn channel_id(&self) -> ChannelId;

    /// Appends tag and fields.
    fn store(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_u32(Self::TAG)
            .map_err(LayoutError::cell(Self::NAME))?;
        self.store_fields(b)
    }

    /// Reads tag and fields.
    fn load(s: &mut CellSlice<'_>) -> Res<Self> {
        let t = s.load_u32().map_err(LayoutError::cell(Self::NAME))?;
        if t != Self::TAG {
            return Err(LayoutError::WrongTag {
                what: Self::NAME,
                found: t,
                expected: Self::TAG,
            });
        }
        Self::load_fields(s)
    }

    /// The body as a standalone cell.
    fn to_cell(&self) -> Res<Cell> {
        let mut b = CellBuilder::new();
        self.store(&mut b)?;
        build(b, Self::NAME)
    }

    /// The hash the signers sign.
    fn signing_hash(&self) -> Res<[u8; 32]> {
        Ok(self.to_cell()?.repr_hash().0)
    }
}

fn e(what: &'static str) -> impl FnOnce(tycho_types::error::Error) -> LayoutError {
    LayoutError::cell(what)
}

/// `init_channel`'s signed part: the balances the channel opens with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitBody {
    /// The channel.
    pub channel_id: ChannelId,
    /// A's balance (at least what A topped up).
    pub balance_a: NanoTon,
    /// B's balance (at least what B topped up).
    pub balance_b: NanoTon,
}

impl SignedBody for InitBody {
    const TAG: u32 = tag::INIT;
    const NAME: &'static str = "InitBody";
    fn store_fields(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_u128(self.channel_id.0).map_err(e(Self::NAME))?;
        store_coins(b, self.balance_a, Self::NAME)?;
        store_coins(b, self.balance_b, Self::NAME)
    }
    fn load_fields(s: &mut CellSlice<'_>) -> Res<Self> {
        Ok(Self {
            channel_id: ChannelId(s.load_u128().map_err(e(Self::NAME))?),
            balance_a: load_coins(s, Self::NAME)?,
            balance_b: load_coins(s, Self::NAME)?,
        })
    }
    fn channel_id(&self) -> ChannelId {
        self.channel_id
    }
}

/// `cooperative_close`'s signed part: final balances and seqnos (each strictly above
/// the committed ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseBody {
    /// The channel.
    pub channel_id: ChannelId,
    /// A's payout.
    pub balance_a: NanoTon,
    /// B's payout.
    pub balance_b: NanoTon,
    /// A's seqno.
    pub seqno_a: SeqNo,
    /// B's seqno.
    pub seqno_b: SeqNo,
}

impl SignedBody for CloseBody {
    const TAG: u32 = tag::COOPERATIVE_CLOSE;
    const NAME: &'static str = "CloseBody";
    fn store_fields(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_u128(self.channel_id.0).map_err(e(Self::NAME))?;
        store_coins(b, self.balance_a, Self::NAME)?;
        store_coins(b, self.balance_b, Self::NAME)?;
        b.store_u64(self.seqno_a.0).map_err(e(Self::NAME))?;
        b.store_u64(self.seqno_b.0).map_err(e(Self::NAME))
    }
    fn load_fields(s: &mut CellSlice<'_>) -> Res<Self> {
        Ok(Self {
            channel_id: ChannelId(s.load_u128().map_err(e(Self::NAME))?),
            balance_a: load_coins(s, Self::NAME)?,
            balance_b: load_coins(s, Self::NAME)?,
            seqno_a: SeqNo(s.load_u64().map_err(e(Self::NAME))?),
            seqno_b: SeqNo(s.load_u64().map_err(e(Self::NAME))?),
        })
    }
    fn channel_id(&self) -> ChannelId {
        self.channel_id
    }
}

/// `cooperative_commit`'s signed part: seqnos both sides commit to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBody {
    /// The channel.
    pub channel_id: ChannelId,
    /// A's seqno.
    pub seqno_a: SeqNo,
    /// B's seqno.
    pub seqno_b: SeqNo,
}

impl SignedBody for CommitBody {
    const TAG: u32 = tag::COOPERATIVE_COMMIT;
    const NAME: &'static str = "CommitBody";
    fn store_fields(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_u128(self.channel_id.0).map_err(e(Self::NAME))?;
        b.store_u64(self.seqno_a.0).map_err(e(Self::NAME))?;
        b.store_u64(self.seqno_b.0).map_err(e(Self::NAME))
    }
    fn load_fields(s: &mut CellSlice<'_>) -> Res<Self> {
        Ok(Self {
            channel_id: ChannelId(s.load_u128().map_err(e(Self::NAME))?),
            seqno_a: SeqNo(s.load_u64().map_err(e(Self::NAME))?),
            seqno_b: SeqNo(s.load_u64().map_err(e(Self::NAME))?),
        })
    }
    fn channel_id(&self) -> ChannelId {
        self.channel_id
    }
}

/// The signed part of `start_uncooperative_close` (`TAG` = [`tag::START_UNCOOPERATIVE_CLOSE`])
/// and `challenge_quarantined_state` (`TAG` = [`tag::CHALLENGE_STATE`]): both sides'
/// latest signed semi-channel states, by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncooperativeBody<const TAG: u32> {
    /// The channel.
    pub channel_id: ChannelId,
    /// A's state, signed by A.
    pub sch_a: SignedSemiChannel,
    /// B's state, signed by B.
    pub sch_b: SignedSemiChannel,
}

/// Signed part of `start_uncooperative_close`.
pub type StartCloseBody = UncooperativeBody<{ tag::START_UNCOOPERATIVE_CLOSE }>;
/// Signed part of `challenge_quarantined_state`.
pub type ChallengeBody = UncooperativeBody<{ tag::CHALLENGE_STATE }>;

impl<const TAG: u32> SignedBody for UncooperativeBody<TAG> {
    const TAG: u32 = TAG;
    const NAME: &'static str = if TAG == tag::CHALLENGE_STATE {
        "ChallengeBody"
    } else {
        "StartCloseBody"
    };
    fn store_fields(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_u128(self.channel_id.0).map_err(e(Self::NAME))?;
        b.store_reference(self.sch_a.to_cell()?)
            .map_err(e(Self::NAME))?;
        b.store_reference(self.sch_b.to_cell()?)
            .map_err(e(Self::NAME))
    }
    fn load_fields(s: &mut CellSlice<'_>) -> Res<Self> {
        let channel_id = ChannelId(s.load_u128().map_err(e(Self::NAME))?);
        let a = s.load_reference_cloned().map_err(e(Self::NAME))?;
        let b = s.load_reference_cloned().map_err(e(Self::NAME))?;
        Ok(Self {
            channel_id,
            sch_a: SignedSemiChannel::from_cell(&a)?,
            sch_b: SignedSemiChannel::from_cell(&b)?,
        })
    }
    fn channel_id(&self) -> ChannelId {
        self.channel_id
    }
}

/// `settle_conditionals`' signed part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleBody {
    /// The channel.
    pub channel_id: ChannelId,
    /// `HashmapE 32 Cell` of conditionals to settle with their inputs (`None`: empty).
    pub to_settle: Option<Cell>,
}

impl SignedBody for SettleBody {
    const TAG: u32 = tag::SETTLE_CONDITIONALS;
    const NAME: &'static str = "SettleBody";
    fn store_fields(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_u128(self.channel_id.0).map_err(e(Self::NAME))?;
        store_maybe_ref(b, self.to_settle.as_ref(), Self::NAME)
    }
    fn load_fields(s: &mut CellSlice<'_>) -> Res<Self> {
        Ok(Self {
            channel_id: ChannelId(s.load_u128().map_err(e(Self::NAME))?),
            to_settle: load_maybe_ref(s, Self::NAME)?,
        })
    }
    fn channel_id(&self) -> ChannelId {
        self.channel_id
    }
}

/// A body signed by one party (`is_A:Bool signature:bits512` in front).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneSigned<B> {
    /// Who signed.
    pub signer: Side,
    /// The signature over the body's hash.
    pub signature: [u8; 64],
    /// The body.
    pub body: B,
}

impl<B: SignedBody> OneSigned<B> {
    /// Signs `body` as `signer`.
    pub fn sign(signer: Side, key: &SigningKey, body: B) -> Res<Self> {
        let signature = sign_hash(key, &body.signing_hash()?);
        Ok(Self {
            signer,
            signature,
            body,
        })
    }

    /// Checks the signature under the signer's key.
    pub fn verify(&self, signer_key: &VerifyingKey) -> Result<(), ChannelError> {
        verify_hash(
            signer_key,
            &self.body.signing_hash()?,
            &self.signature,
            self.signer,
        )
    }

    fn store(&self, b: &mut CellBuilder) -> Res<()> {
        b.store_bit(self.signer.is_a()).map_err(e(B::NAME))?;
        b.store_raw(&self.signature, 512).map_err(e(B::NAME))?;
        self.body.store(b)
    }

    fn load(s: &mut CellSlice<'_>) -> Res<Self> {
        let signer = if s.load_bit().map_err(e(B::NAME))? {
            Side::A
        } else {
            Side::B
        };
        let signature = load_bytes::<64>(s, B::NAME)?;
        let body = B::load(s)?;
        Ok(Self {
            signer,
            signature,
            body,
        })
    }
}

/// A body signed by both parties (`sig_A:^bits512 sig_B:^bits512` in front).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoSigned<B> {
    /// A's signature.
    pub sig_a: [u8; 64],
    /// B's signature.
    pub sig_b: [u8; 64],
    /// The body.
    pub body: B,
}

impl<B: SignedBody> TwoSigned<B> {
    /// Checks both signatures.
    pub fn verify(&self, key_a: &VerifyingKey, key_b: &VerifyingKey) -> Result<(), ChannelError> {
        let h = self.body.signing_hash()?;
        verify_hash(key_a, &h, &self.sig_a, Side::A)?;
        verify_hash(key_b, &h, &self.sig_b, Side::B)
    }

    fn store(&self, b: &mut CellBuilder) -> Res<()> {
        for sig in [&self.sig_a, &self.sig_b] {
            let mut sb = CellBuilder::new();
            sb.store_raw(sig, 512).map_err(e(B::NAME))?;
            b.store_reference(build(sb, B::NAME)?).map_err(e(B::NAME))?;
        }
        self.body.store(b)
    }

    fn load(s: &mut CellSlice<'_>) -> Res<Self> {
        let mut sigs = [[0u8; 64]; 2];
        for sig in &mut sigs {
            let c = s.load_reference_cloned().map_err(e(B::NAME))?;
            let mut cs = slice_of(&c, B::NAME)?;
            *sig = load_bytes::<64>(&mut cs, B::NAME)?;
            ensure_empty(&cs, B::NAME)?;
        }
        let body = B::load(s)?;
        Ok(Self {
            sig_a: sigs[0],
            sig_b: sigs[1],
            body,
        })
    }
}

/// Every message body the contract accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelMessage {
    /// Adds to the balances (internal message carrying the value; only before init).
    TopUp {
        /// Added to A.
        add_a: NanoTon,
        /// Added to B.
        add_b: NanoTon,
    },
    /// Opens the channel with its balances.
    Init(OneSigned<InitBody>),
    /// Closes with final balances, both signing.
    CooperativeClose(TwoSigned<CloseBody>),
    /// Commits seqnos, both signing.
    CooperativeCommit(TwoSigned<CommitBody>),
    /// Starts an uncooperative close with both sides' latest states.
    StartUncooperativeClose(OneSigned<StartCloseBody>),
    /// Replaces a quarantined state with newer ones, fining the committer if stale.
    ChallengeQuarantinedState(OneSigned<ChallengeBody>),
    /// Settles conditional payments after the quarantine.
    SettleConditionals(OneSigned<SettleBody>),
    /// Pays out after quarantine and settlement periods.
    FinishUncooperativeClose,
}

impl ChannelMessage {
    /// The op code in front of the body.
    pub fn op(&self) -> u32 {
        match self {
            ChannelMessage::TopUp { .. } => op::TOP_UP_BALANCE,
            ChannelMessage::Init(_) => op::INIT_CHANNEL,
            ChannelMessage::CooperativeClose(_) => op::COOPERATIVE_CLOSE,
            ChannelMessage::CooperativeCommit(_) => op::COOPERATIVE_COMMIT,
            ChannelMessage::StartUncooperativeClose(_) => op::START_UNCOOPERATIVE_CLOSE,
            ChannelMessage::ChallengeQuarantinedState(_) => op::CHALLENGE_QUARANTINED_STATE,
            ChannelMessage::SettleConditionals(_) => op::SETTLE_CONDITIONALS,
            ChannelMessage::FinishUncooperativeClose => op::FINISH_UNCOOPERATIVE_CLOSE,
        }
    }

    /// The message body cell.
    pub fn to_cell(&self) -> Res<Cell> {
        const W: &str = "ChannelMessage";
        let mut b = CellBuilder::new();
        b.store_u32(self.op()).map_err(e(W))?;
        match self {
            ChannelMessage::TopUp { add_a, add_b } => {
                store_coins(&mut b, *add_a, W)?;
                store_coins(&mut b, *add_b, W)?;
            }
            ChannelMessage::Init(m) => m.store(&mut b)?,
            ChannelMessage::CooperativeClose(m) => m.store(&mut b)?,
            ChannelMessage::CooperativeCommit(m) => m.store(&mut b)?,
            ChannelMessage::StartUncooperativeClose(m) => m.store(&mut b)?,
            ChannelMessage::ChallengeQuarantinedState(m) => m.store(&mut b)?,
            ChannelMessage::SettleConditionals(m) => m.store(&mut b)?,
            ChannelMessage::FinishUncooperativeClose => {}
        }
        build(b, W)
    }

    /// Decodes a message body cell; trailing data is refused.
    pub fn from_cell(c: &Cell) -> Res<Self> {
        const W: &str = "ChannelMessage";
        let mut s = slice_of(c, W)?;
        let code = s.load_u32().map_err(e(W))?;
        let m = match code {
            op::TOP_UP_BALANCE => ChannelMessage::TopUp {
                add_a: load_coins(&mut s, W)?,
                add_b: load_coins(&mut s, W)?,
            },
            op::INIT_CHANNEL => ChannelMessage::Init(OneSigned::load(&mut s)?),
            op::COOPERATIVE_CLOSE => ChannelMessage::CooperativeClose(TwoSigned::load(&mut s)?),
            op::COOPERATIVE_COMMIT => ChannelMessage::CooperativeCommit(TwoSigned::load(&mut s)?),
            op::START_UNCOOPERATIVE_CLOSE => {
                ChannelMessage::StartUncooperativeClose(OneSigned::load(&mut s)?)
            }
            op::CHALLENGE_QUARANTINED_STATE => {
                ChannelMessage::ChallengeQuarantinedState(OneSigned::load(&mut s)?)
            }
            op::SETTLE_CONDITIONALS => ChannelMessage::SettleConditionals(OneSigned::load(&mut s)?),
            op::FINISH_UNCOOPERATIVE_CLOSE => ChannelMessage::FinishUncooperativeClose,
            other => return Err(LayoutError::UnknownOp(other)),
        };
        ensure_empty(&s, W)?;
        Ok(m)
    }

    /// The body as a BoC.
    pub fn to_boc(&self) -> Res<Vec<u8>> {
        Ok(Boc::encode(self.to_cell()?))
    }

    /// Decodes a body BoC.
    pub fn from_boc(bytes: &[u8]) -> Res<Self> {
        let c = Boc::decode(bytes).map_err(|err| LayoutError::Boc(err.to_string()))?;
        Self::from_cell(&c)
    }
}

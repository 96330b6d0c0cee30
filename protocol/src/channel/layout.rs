//! The contract's data layouts, byte for byte as `async-channel.func` reads and writes
//! them (where `scheme.tlb` disagrees, the FunC source wins):
//!
//! ```text
//! sc_body#_ seqno:uint64 sent:Coins conditionals:(HashmapE 32 ConditionalPayment)
//! semichannel_state#43685374 channel_id:uint128 data:SemiChannelBody
//!                            counterparty_data:(Maybe ^SemiChannelBody)
//! signed_schs#_ signature:bits512 state:SemiChannel        (state inline, same cell)
//! quarantined_state#_ state_A:SemiChannelBody state_B:SemiChannelBody
//!     quarantine_starts:uint32 state_commited_by_A:Bool state_challenged:Bool
//!     (settle_conditionals rewrites it without the last bit: see QuarantinedState)
//! conf#_ quarantin_duration:uint32 misbehavior_fine:Coins conditional_close_duration:uint32
//! payment_conf#_ excess_fee:Coins dest_A:MsgAddress dest_B:MsgAddress
//! storage: inited:Bool balance_A:Coins balance_B:Coins key_A:uint256 key_B:uint256
//!     channel_id:uint128 config:^ClosingConfig commited_seqno_A:uint32
//!     commited_seqno_B:uint32 quarantin:(Maybe ^QuarantinedState) payments:^PaymentConfig
//! ```
//!
//! Decoders are strict: a cell with bits or references left after the last field is
//! refused, so what is accepted re-encodes to the same cell and the same hash.

use tycho_types::cell::{Cell, CellBuilder, CellSlice, HashBytes};
use tycho_types::num::Tokens;
use tycho_types::prelude::{CellFamily, Load, Store};

use super::error::LayoutError;
use super::units::{ChannelId, NanoTon, SeqNo};

/// `tag::state`, the first 32 bits of a semi-channel state.
pub const TAG_STATE: u32 = 0x4368_5374;

type Res<T> = Result<T, LayoutError>;

pub(crate) fn store_coins(b: &mut CellBuilder, v: NanoTon, what: &'static str) -> Res<()> {
    if !v.fits_coins() {
        return Err(LayoutError::Cell {
            what,
            reason: format!("{v} does not fit Coins"),
        });
    }
    Tokens::new(v.0)
        .store_into(b, Cell::empty_context())
        .map_err(LayoutError::cell(what))
}

/// Reads `Coins`, refusing a non-minimal length (a leading zero byte): such a cell would
/// re-encode differently and change the hash a signature covers.
pub(crate) fn load_coins(s: &mut CellSlice<'_>, what: &'static str) -> Res<NanoTon> {
    let before = s.size_bits();
    let v = Tokens::load_from(s)
        .map(|t| t.into_inner())
        .map_err(LayoutError::cell(what))?;
    let minimal_bytes = (128 - v.leading_zeros()).div_ceil(8) as u16;
    if before - s.size_bits() != 4 + 8 * minimal_bytes {
        return Err(LayoutError::Cell {
            what,
            reason: "Coins not minimally encoded".into(),
        });
    }
    Ok(NanoTon(v))
}

/// `Maybe ^X` / `HashmapE`: one bit, and a reference when set.
pub(crate) fn store_maybe_ref(
    b: &mut CellBuilder,
    c: Option<&Cell>,
    what: &'static str,
) -> Res<()> {
    let e = LayoutError::cell(what);
    match c {
        None => b.store_bit_zero().map_err(e),
        Some(c) => {
            b.store_bit_one().map_err(LayoutError::cell(what))?;
            b.store_reference(c.clone()).map_err(e)
        }
    }
}

pub(crate) fn load_maybe_ref(s: &mut CellSlice<'_>, what: &'static str) -> Res<Option<Cell>> {
    if s.load_bit().map_err(LayoutError::cell(what))? {
        Ok(Some(
            s.load_reference_cloned().map_err(LayoutError::cell(what))?,
        ))
    } else {
        Ok(None)
    }
}

pub(crate) fn load_bytes<const N: usize>(
    s: &mut CellSlice<'_>,
    what: &'static str,
) -> Res<[u8; N]> {
    let mut out = [0u8; N];
    s.load_raw(&mut out, (N * 8) as u16)
        .map_err(LayoutError::cell(what))?;
    Ok(out)
}

pub(crate) fn ensure_empty(s: &CellSlice<'_>, what: &'static str) -> Res<()> {
    if s.is_data_empty() && s.is_refs_empty() {
        Ok(())
    } else {
        Err(LayoutError::Trailing { what })
    }
}

pub(crate) fn build(b: CellBuilder, what: &'static str) -> Res<Cell> {
    b.build().map_err(LayoutError::cell(what))
}

pub(crate) fn slice_of<'a>(c: &'a Cell, what: &'static str) -> Res<CellSlice<'a>> {
    c.as_slice().map_err(LayoutError::cell(what))
}

/// The body of one side's semi-channel: its seqno, the cumulative amount it has sent
/// to the other side, and its conditional payments (a `HashmapE 32`, kept as its root
/// cell; cocoon itself signs none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SemiChannelBody {
    /// The state's sequence number.
    pub seqno: SeqNo,
    /// Cumulative amount sent to the other side.
    pub sent: NanoTon,
    /// Root of the conditional-payments dictionary, `None` when empty.
    pub conditionals: Option<Cell>,
}

impl SemiChannelBody {
    /// A body with no conditional payments.
    pub fn new(seqno: SeqNo, sent: NanoTon) -> Self {
        Self {
            seqno,
            sent,
            conditionals: None,
        }
    }

    /// Appends the fields to `b`.
    pub fn store(&self, b: &mut CellBuilder) -> Res<()> {
        const W: &str = "SemiChannelBody";
        b.store_u64(self.seqno.0).map_err(LayoutError::cell(W))?;
        store_coins(b, self.sent, W)?;
        store_maybe_ref(b, self.conditionals.as_ref(), W)
    }

    /// Reads the fields from `s`.
    pub fn load(s: &mut CellSlice<'_>) -> Res<Self> {
        const W: &str = "SemiChannelBody";
        let seqno = SeqNo(s.load_u64().map_err(LayoutError::cell(W))?);
        let sent = load_coins(s, W)?;
        let conditionals = load_maybe_ref(s, W)?;
        Ok(Self {
            seqno,
            sent,
            conditionals,
        })
    }

    /// The body as a cell of its own (as in `counterparty_data:^SemiChannelBody`).
    pub fn to_cell(&self) -> Res<Cell> {
        let mut b = CellBuilder::new();
        self.store(&mut b)?;
        build(b, "SemiChannelBody")
    }

    /// Decodes a standalone body cell.
    pub fn from_cell(c: &Cell) -> Res<Self> {
        let mut s = slice_of(c, "SemiChannelBody")?;
        let v = Self::load(&mut s)?;
        ensure_empty(&s, "SemiChannelBody")?;
        Ok(v)
    }
}

/// One side's semi-channel state: what that side signs and hands to the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SemiChannelState {
    /// The channel.
    pub channel_id: ChannelId,
    /// The signer's own body.
    pub body: SemiChannelBody,
    /// The latest body of the other side the signer has seen, if any.
    pub counterparty: Option<SemiChannelBody>,
}

impl SemiChannelState {
    /// Appends the fields to `b`.
    pub fn store(&self, b: &mut CellBuilder) -> Res<()> {
        const W: &str = "SemiChannelState";
        b.store_u32(TAG_STATE).map_err(LayoutError::cell(W))?;
        b.store_u128(self.channel_id.0)
            .map_err(LayoutError::cell(W))?;
        self.body.store(b)?;
        let cp = self
            .counterparty
            .as_ref()
            .map(|c| c.to_cell())
            .transpose()?;
        store_maybe_ref(b, cp.as_ref(), W)
    }

    /// Reads the fields from `s`.
    pub fn load(s: &mut CellSlice<'_>) -> Res<Self> {
        const W: &str = "SemiChannelState";
        let tag = s.load_u32().map_err(LayoutError::cell(W))?;
        if tag != TAG_STATE {
            return Err(LayoutError::WrongTag {
                what: W,
                found: tag,
                expected: TAG_STATE,
            });
        }
        let channel_id = ChannelId(s.load_u128().map_err(LayoutError::cell(W))?);
        let body = SemiChannelBody::load(s)?;
        let counterparty = load_maybe_ref(s, W)?
            .map(|c| SemiChannelBody::from_cell(&c))
            .transpose()?;
        Ok(Self {
            channel_id,
            body,
            counterparty,
        })
    }

    /// The state as a cell: its representation hash is what the signer signs.
    pub fn to_cell(&self) -> Res<Cell> {
        let mut b = CellBuilder::new();
        self.store(&mut b)?;
        build(b, "SemiChannelState")
    }

    /// The hash signed by the state's signer.
    pub fn signing_hash(&self) -> Res<[u8; 32]> {
        Ok(self.to_cell()?.repr_hash().0)
    }
}

/// A semi-channel state with its signer's ed25519 signature in front (same cell).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSemiChannel {
    /// Signature over [`SemiChannelState::signing_hash`].
    pub signature: [u8; 64],
    /// The state.
    pub state: SemiChannelState,
}

impl SignedSemiChannel {
    /// The cell `signature:bits512 state:SemiChannel`.
    pub fn to_cell(&self) -> Res<Cell> {
        let mut b = CellBuilder::new();
        b.store_raw(&self.signature, 512)
            .map_err(LayoutError::cell("SignedSemiChannel"))?;
        self.state.store(&mut b)?;
        build(b, "SignedSemiChannel")
    }

    /// Decodes a signed state cell (signature not checked here).
    pub fn from_cell(c: &Cell) -> Res<Self> {
        let mut s = slice_of(c, "SignedSemiChannel")?;
        let signature = load_bytes::<64>(&mut s, "SignedSemiChannel")?;
        let state = SemiChannelState::load(&mut s)?;
        ensure_empty(&s, "SignedSemiChannel")?;
        Ok(Self { signature, state })
    }

    /// Encodes as a BoC, the form it travels in between the parties.
    pub fn to_boc(&self) -> Res<Vec<u8>> {
        Ok(tycho_types::boc::Boc::encode(self.to_cell()?))
    }

    /// Decodes a BoC received from the other party.
    pub fn from_boc(bytes: &[u8]) -> Res<Self> {
        let c =
            tycho_types::boc::Boc::decode(bytes).map_err(|e| LayoutError::Boc(e.to_string()))?;
        Self::from_cell(&c)
    }
}

/// The closing configuration (`conf#_`), fixed when the channel is deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClosingConfig {
    /// Seconds a state started by an uncooperative close can be challenged.
    pub quarantine_duration: u32,
    /// Added to a cheater's `sent` when a challenge proves a newer state.
    pub misbehavior_fine: NanoTon,
    /// Seconds after the quarantine to settle conditionals.
    pub conditional_close_duration: u32,
}

impl ClosingConfig {
    /// The config cell.
    pub fn to_cell(&self) -> Res<Cell> {
        const W: &str = "ClosingConfig";
        let mut b = CellBuilder::new();
        b.store_u32(self.quarantine_duration)
            .map_err(LayoutError::cell(W))?;
        store_coins(&mut b, self.misbehavior_fine, W)?;
        b.store_u32(self.conditional_close_duration)
            .map_err(LayoutError::cell(W))?;
        build(b, W)
    }

    /// Decodes the config cell.
    pub fn from_cell(c: &Cell) -> Res<Self> {
        const W: &str = "ClosingConfig";
        let mut s = slice_of(c, W)?;
        let quarantine_duration = s.load_u32().map_err(LayoutError::cell(W))?;
        let misbehavior_fine = load_coins(&mut s, W)?;
        let conditional_close_duration = s.load_u32().map_err(LayoutError::cell(W))?;
        ensure_empty(&s, W)?;
        Ok(Self {
            quarantine_duration,
            misbehavior_fine,
            conditional_close_duration,
        })
    }
}

/// A standard internal address `addr_std$10 anycast:nothing workchain:int8 address:bits256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StdAddress {
    /// Workchain (0 basechain, -1 masterchain).
    pub workchain: i8,
    /// Account id.
    pub account: [u8; 32],
}

impl StdAddress {
    /// Appends `addr_std` (267 bits).
    pub fn store(&self, b: &mut CellBuilder) -> Res<()> {
        const W: &str = "MsgAddress";
        b.store_small_uint(0b100, 3).map_err(LayoutError::cell(W))?;
        b.store_u8(self.workchain as u8)
            .map_err(LayoutError::cell(W))?;
        b.store_u256(&HashBytes(self.account))
            .map_err(LayoutError::cell(W))
    }

    /// Reads an `addr_std` without anycast; any other address form is refused.
    pub fn load(s: &mut CellSlice<'_>) -> Res<Self> {
        const W: &str = "MsgAddress";
        let prefix = s.load_small_uint(3).map_err(LayoutError::cell(W))?;
        if prefix != 0b100 {
            return Err(LayoutError::Cell {
                what: W,
                reason: "not addr_std without anycast".into(),
            });
        }
        let workchain = s.load_u8().map_err(LayoutError::cell(W))? as i8;
        let account = load_bytes::<32>(s, W)?;
        Ok(Self { workchain, account })
    }
}

/// Where each side's payout goes, and the fee kept for the contract's own gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PaymentConfig {
    /// Left in the contract above the balances at init (`excess_fee`).
    pub excess_fee: NanoTon,
    /// Payout address of A.
    pub dest_a: StdAddress,
    /// Payout address of B.
    pub dest_b: StdAddress,
}

impl PaymentConfig {
    /// The config cell.
    pub fn to_cell(&self) -> Res<Cell> {
        const W: &str = "PaymentConfig";
        let mut b = CellBuilder::new();
        store_coins(&mut b, self.excess_fee, W)?;
        self.dest_a.store(&mut b)?;
        self.dest_b.store(&mut b)?;
        build(b, W)
    }

    /// Decodes the config cell.
    pub fn from_cell(c: &Cell) -> Res<Self> {
        const W: &str = "PaymentConfig";
        let mut s = slice_of(c, W)?;
        let excess_fee = load_coins(&mut s, W)?;
        let dest_a = StdAddress::load(&mut s)?;
        let dest_b = StdAddress::load(&mut s)?;
        ensure_empty(&s, W)?;
        Ok(Self {
            excess_fee,
            dest_a,
            dest_b,
        })
    }
}

/// The state under quarantine after an uncooperative close started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedState {
    /// A's body as committed.
    pub state_a: SemiChannelBody,
    /// B's body as committed.
    pub state_b: SemiChannelBody,
    /// Unix time the quarantine started.
    pub quarantine_starts: u32,
    /// Whether A (rather than B) committed it.
    pub committed_by_a: bool,
    /// Whether it was challenged. `None`: the bit is absent, which is how
    /// `settle_conditionals` rewrites the cell (the FunC source omits it there).
    pub challenged: Option<bool>,
}

impl QuarantinedState {
    /// The cell as the contract writes it.
    pub fn to_cell(&self) -> Res<Cell> {
        const W: &str = "QuarantinedState";
        let mut b = CellBuilder::new();
        self.state_a.store(&mut b)?;
        self.state_b.store(&mut b)?;
        b.store_u32(self.quarantine_starts)
            .map_err(LayoutError::cell(W))?;
        b.store_bit(self.committed_by_a)
            .map_err(LayoutError::cell(W))?;
        if let Some(ch) = self.challenged {
            b.store_bit(ch).map_err(LayoutError::cell(W))?;
        }
        build(b, W)
    }

    /// Decodes the cell (with or without the trailing `challenged` bit).
    pub fn from_cell(c: &Cell) -> Res<Self> {
        const W: &str = "QuarantinedState";
        let mut s = slice_of(c, W)?;
        let state_a = SemiChannelBody::load(&mut s)?;
        let state_b = SemiChannelBody::load(&mut s)?;
        let quarantine_starts = s.load_u32().map_err(LayoutError::cell(W))?;
        let committed_by_a = s.load_bit().map_err(LayoutError::cell(W))?;
        let challenged = if s.is_data_empty() {
            None
        } else {
            Some(s.load_bit().map_err(LayoutError::cell(W))?)
        };
        ensure_empty(&s, W)?;
        Ok(Self {
            state_a,
            state_b,
            quarantine_starts,
            committed_by_a,
            challenged,
        })
    }
}

/// The contract's persistent data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelStorage {
    /// Whether `init_channel` succeeded (top-ups are refused after).
    pub inited: bool,
    /// A's balance.
    pub balance_a: NanoTon,
    /// B's balance.
    pub balance_b: NanoTon,
    /// A's ed25519 public key.
    pub key_a: [u8; 32],
    /// B's ed25519 public key.
    pub key_b: [u8; 32],
    /// The channel id.
    pub channel_id: ChannelId,
    /// Closing configuration.
    pub closing: ClosingConfig,
    /// A's committed seqno (`uint32` on chain).
    pub committed_seqno_a: u32,
    /// B's committed seqno (`uint32` on chain).
    pub committed_seqno_b: u32,
    /// The state under quarantine, if an uncooperative close started.
    pub quarantine: Option<QuarantinedState>,
    /// Payout configuration.
    pub payment: PaymentConfig,
}

impl ChannelStorage {
    /// The initial data of a fresh channel (as tonweb's `createDataCell`).
    pub fn initial(
        key_a: [u8; 32],
        key_b: [u8; 32],
        channel_id: ChannelId,
        closing: ClosingConfig,
        payment: PaymentConfig,
    ) -> Self {
        Self {
            inited: false,
            balance_a: NanoTon::ZERO,
            balance_b: NanoTon::ZERO,
            key_a,
            key_b,
            channel_id,
            closing,
            committed_seqno_a: 0,
            committed_seqno_b: 0,
            quarantine: None,
            payment,
        }
    }

    /// The data cell.
    pub fn to_cell(&self) -> Res<Cell> {
        const W: &str = "ChannelStorage";
        let e = || LayoutError::cell(W);
        let mut b = CellBuilder::new();
        b.store_bit(self.inited).map_err(e())?;
        store_coins(&mut b, self.balance_a, W)?;
        store_coins(&mut b, self.balance_b, W)?;
        b.store_raw(&self.key_a, 256).map_err(e())?;
        b.store_raw(&self.key_b, 256).map_err(e())?;
        b.store_u128(self.channel_id.0).map_err(e())?;
        b.store_reference(self.closing.to_cell()?).map_err(e())?;
        b.store_u32(self.committed_seqno_a).map_err(e())?;
        b.store_u32(self.committed_seqno_b).map_err(e())?;
        let q = self.quarantine.as_ref().map(|q| q.to_cell()).transpose()?;
        store_maybe_ref(&mut b, q.as_ref(), W)?;
        b.store_reference(self.payment.to_cell()?).map_err(e())?;
        build(b, W)
    }

    /// Decodes the data cell.
    pub fn from_cell(c: &Cell) -> Res<Self> {
        const W: &str = "ChannelStorage";
        let e = || LayoutError::cell(W);
        let mut s = slice_of(c, W)?;
        let inited = s.load_bit().map_err(e())?;
        let balance_a = load_coins(&mut s, W)?;
        let balance_b = load_coins(&mut s, W)?;
        let key_a = load_bytes::<32>(&mut s, W)?;
        let key_b = load_bytes::<32>(&mut s, W)?;
        let channel_id = ChannelId(s.load_u128().map_err(e())?);
        let closing = ClosingConfig::from_cell(&s.load_reference_cloned().map_err(e())?)?;
        let committed_seqno_a = s.load_u32().map_err(e())?;
        let committed_seqno_b = s.load_u32().map_err(e())?;
        let quarantine = load_maybe_ref(&mut s, W)?
            .map(|c| QuarantinedState::from_cell(&c))
            .transpose()?;
        let payment = PaymentConfig::from_cell(&s.load_reference_cloned().map_err(e())?)?;
        ensure_empty(&s, W)?;
        Ok(Self {
            inited,
            balance_a,
            balance_b,
            key_a,
            key_b,
            channel_id,
            closing,
            committed_seqno_a,
            committed_seqno_b,
            quarantine,
            payment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_must_be_minimal() {
        // len = 2 bytes holding 0x0005: the contract would read 5, but re-encoding gives
        // len = 1, another cell and another hash.
        let mut b = CellBuilder::new();
        b.store_small_uint(2, 4).expect("len");
        b.store_u16(5).expect("value");
        let c = b.build().expect("cell");
        let mut s = c.as_slice().expect("slice");
        assert!(load_coins(&mut s, "test").is_err());
        let mut b = CellBuilder::new();
        store_coins(&mut b, NanoTon(5), "test").expect("store");
        let c = b.build().expect("cell");
        let mut s = c.as_slice().expect("slice");
        assert_eq!(load_coins(&mut s, "test"), Ok(NanoTon(5)));
    }
}

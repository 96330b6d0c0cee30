//! Errors of the channel module. [`LayoutError`] says why bytes or cells do not decode
//! as a contract layout; [`ChannelError`] names the rule a state, a payment or a message
//! broke, so a refusal reads "refused: rule `sent-not-lower` ..." and never as a panic.

use thiserror::Error;

use super::pricing::{Price, Usage};
use super::units::{ChannelId, CoinsOverflow, NanoTon, SeqNo, Side};

/// A cell, a BoC or a field that does not match the contract's layout.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The bytes are not a valid bag of cells with one root.
    #[error("not a valid BoC: {0}")]
    Boc(String),
    /// A cell ran out of bits or references, or held an invalid field.
    #[error("cell does not match the layout of {what}: {reason}")]
    Cell {
        /// The layout being read or written.
        what: &'static str,
        /// What tycho-types reported.
        reason: String,
    },
    /// A tag or op code differs from the expected one.
    #[error("{what}: tag {found:#010x}, expected {expected:#010x}")]
    WrongTag {
        /// The layout being read.
        what: &'static str,
        /// The tag found.
        found: u32,
        /// The tag the layout has.
        expected: u32,
    },
    /// The op code names no message the contract accepts.
    #[error("unknown op code {0:#010x}")]
    UnknownOp(u32),
    /// Bits or references are left after the last field.
    #[error("{what}: trailing data after the last field")]
    Trailing {
        /// The layout being read.
        what: &'static str,
    },
    /// A signature or key field is not valid ed25519 material.
    #[error("{what}: invalid ed25519 material")]
    Key {
        /// The field.
        what: &'static str,
    },
}

impl LayoutError {
    pub(crate) fn cell(what: &'static str) -> impl FnOnce(tycho_types::error::Error) -> Self {
        move |e| LayoutError::Cell {
            what,
            reason: e.to_string(),
        }
    }
}

/// A refusal: a state, payment or message broke a named rule of the channel.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChannelError {
    /// Rule `signature`: the signature does not verify under the key of the side that
    /// should have signed (a forged state, or one signed by the other party).
    #[error("refused: rule `signature`: state is not signed by side {side}")]
    BadSignature {
        /// The side whose key was checked.
        side: Side,
    },
    /// Rule `channel-id`: the state belongs to another channel.
    #[error("refused: rule `channel-id`: state is for channel {found}, this is {expected}")]
    WrongChannel {
        /// The channel named by the state.
        found: ChannelId,
        /// This channel.
        expected: ChannelId,
    },
    /// Rule `seqno-increases`: a state must carry a strictly higher seqno than the last
    /// one accepted (a replayed or older state).
    #[error("refused: rule `seqno-increases`: seqno {found} is not above {last}")]
    SeqnoNotIncreasing {
        /// The seqno offered.
        found: SeqNo,
        /// The last accepted seqno.
        last: SeqNo,
    },
    /// Rule `seqno-on-chain`: the contract stores seqnos as `uint32` (and `seqno + 1` at
    /// finish); a larger seqno is accepted, then fails with exit 5 forever.
    #[error("refused: rule `seqno-on-chain`: seqno {0} exceeds {max}", max = SeqNo::MAX_ON_CHAIN)]
    SeqnoTooLarge(SeqNo),
    /// Rule `sent-not-lower`: cumulative `sent` never decreases.
    #[error("refused: rule `sent-not-lower`: sent {found} is below the last {last}")]
    SentDecreased {
        /// The amount offered.
        found: NanoTon,
        /// The last accepted amount.
        last: NanoTon,
    },
    /// Rule `balance-non-negative`: with this `sent` (plus the misbehaviour fine, which
    /// the contract may add at a challenge) side `side` would end below zero, which
    /// makes `finish_uncooperative_close` fail with exit 5 and locks the funds forever.
    #[error(
        "refused: rule `balance-non-negative`: side {side} would owe {owed} against {available} available"
    )]
    BalanceNegative {
        /// The side whose balance would go negative.
        side: Side,
        /// What it would owe: its sent plus the fine.
        owed: NanoTon,
        /// Its deposit plus what it received.
        available: NanoTon,
    },
    /// Rule `coins-range`: an amount does not fit the contract's `Coins` field.
    #[error("refused: rule `coins-range`: {0} does not fit Coins (< 2^120)")]
    CoinsOverflow(NanoTon),
    /// Rule `pay-only-served`: the payer never signs more than the price of the tokens
    /// served and within the agreed budget.
    #[error("refused: rule `pay-only-served`: {asked} asked, {owed} owed for tokens served")]
    PayMoreThanOwed {
        /// The cumulative amount that would be signed.
        asked: NanoTon,
        /// The price of what was served.
        owed: NanoTon,
    },
    /// Rule `agreed-budget`: serving these tokens would exceed the budget agreed when the
    /// session opened.
    #[error("refused: rule `agreed-budget`: {cost} would exceed the agreed {budget}")]
    OverBudget {
        /// The cumulative cost with these tokens.
        cost: NanoTon,
        /// The agreed budget.
        budget: NanoTon,
    },
    /// Rule `credit-window`: the payee serves at most its credit window ahead of the
    /// payments it holds.
    #[error(
        "refused: rule `credit-window`: {cost} served would exceed {paid} paid + {window} credit"
    )]
    PaymentLagging {
        /// The cumulative cost of what would be served.
        cost: NanoTon,
        /// The cumulative amount of the latest accepted state.
        paid: NanoTon,
        /// The credit window.
        window: NanoTon,
    },
    /// Rule `announced-terms`: a worker's session terms differ from the prices its signed
    /// announcement carries; the client signs nothing on other terms.
    #[error(
        "refused: rule `announced-terms`: the worker asks {offered:?} per token, it announced {announced:?}"
    )]
    TermsDiffer {
        /// Prices from the signed announcement.
        announced: Price,
        /// Prices in the session's terms.
        offered: Price,
    },
    /// Rule `receipt-matches`: a worker charged a forward for other tokens than it carried.
    #[error("refused: rule `receipt-matches`: charged {charged:?} for a forward of {expected:?}")]
    ReceiptMismatch {
        /// What the forward carried.
        expected: Usage,
        /// What the receipt charged.
        charged: Usage,
    },
    /// Rule `fine-covered`: the channel's misbehaviour fine exceeds a deposit, so a
    /// challenge could drive that side negative whatever states are signed.
    #[error("refused: rule `fine-covered`: fine {fine} exceeds side {side}'s deposit {deposit}")]
    FineExceedsDeposit {
        /// The side.
        side: Side,
        /// The configured fine.
        fine: NanoTon,
        /// Its deposit.
        deposit: NanoTon,
    },
    /// Rule `close-balances`: proposed closing balances do not match the latest states.
    #[error(
        "refused: rule `close-balances`: proposed A={a} B={b}, states give A={want_a} B={want_b}"
    )]
    CloseMismatch {
        /// Proposed balance of A.
        a: NanoTon,
        /// Proposed balance of B.
        b: NanoTon,
        /// Balance of A from the states.
        want_a: NanoTon,
        /// Balance of B from the states.
        want_b: NanoTon,
    },
    /// Rule `no-conditionals`: cocoon signs and accepts no conditional payments; they
    /// would add to `sent` at settlement beyond what the balance checks saw.
    #[error("refused: rule `no-conditionals`: state carries conditional payments")]
    Conditionals,
    /// Rule `have-counterparty-state`: an uncooperative close or a challenge needs a
    /// state signed by the other side, and none was accepted yet.
    #[error("refused: rule `have-counterparty-state`: no state of the other side held")]
    NoCounterpartyState,
    /// The state or message does not decode.
    #[error("refused: rule `layout`: {0}")]
    Layout(#[from] LayoutError),
}

impl From<CoinsOverflow> for ChannelError {
    fn from(e: CoinsOverflow) -> Self {
        ChannelError::CoinsOverflow(e.0)
    }
}

impl ChannelError {
    /// The short name of the rule broken, for logs and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            ChannelError::BadSignature { .. } => "signature",
            ChannelError::WrongChannel { .. } => "channel-id",
            ChannelError::SeqnoNotIncreasing { .. } => "seqno-increases",
            ChannelError::SeqnoTooLarge(_) => "seqno-on-chain",
            ChannelError::SentDecreased { .. } => "sent-not-lower",
            ChannelError::BalanceNegative { .. } => "balance-non-negative",
            ChannelError::CoinsOverflow(_) => "coins-range",
            ChannelError::PayMoreThanOwed { .. } => "pay-only-served",
            ChannelError::OverBudget { .. } => "agreed-budget",
            ChannelError::PaymentLagging { .. } => "credit-window",
            ChannelError::TermsDiffer { .. } => "announced-terms",
            ChannelError::ReceiptMismatch { .. } => "receipt-matches",
            ChannelError::FineExceedsDeposit { .. } => "fine-covered",
            ChannelError::CloseMismatch { .. } => "close-balances",
            ChannelError::Conditionals => "no-conditionals",
            ChannelError::NoCounterpartyState => "have-counterparty-state",
            ChannelError::Layout(_) => "layout",
        }
    }
}

//! Units and identities of a payment channel: [`NanoTon`], [`SeqNo`], [`ChannelId`],
//! [`Side`]. Each carries the on-chain limit of the field it ends up in, so an amount
//! or a seqno the contract cannot store is refused where it is made, not on chain.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of Toncoin in nanotons (1 TON = 10^9 nanotons).
///
/// On chain amounts are `Coins` (`VarUInteger 16`): at most 15 bytes, i.e. below 2^120.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NanoTon(pub u128);

/// A number of nanotons past what the contract's `Coins` can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} nanoton does not fit the contract's Coins", .0.0)]
pub struct CoinsOverflow(pub NanoTon);

impl NanoTon {
    /// Zero nanotons.
    pub const ZERO: Self = Self(0);
    /// The largest amount a `Coins` field holds: 2^120 - 1.
    pub const MAX_COINS: Self = Self((1u128 << 120) - 1);
    /// One Toncoin.
    pub const ONE_TON: Self = Self(1_000_000_000);

    /// Whether the amount fits a `Coins` field.
    pub const fn fits_coins(self) -> bool {
        self.0 <= Self::MAX_COINS.0
    }

    /// `self + other`, `None` on overflow past [`NanoTon::MAX_COINS`].
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .filter(|v| v.fits_coins())
    }

    /// `self - other`, `None` if negative.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }
}

impl fmt::Display for NanoTon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} nanoTON", self.0)
    }
}

/// The sequence number of a semi-channel state.
///
/// Messages carry it as `uint64`, but the contract stores committed seqnos as `uint32`
/// and, when an uncooperative close finishes, stores `seqno + 1`. A seqno above
/// [`SeqNo::MAX_ON_CHAIN`] is therefore accepted by the contract and then fails with
/// exit code 5 (integer out of range), burning gas and, at finish, locking the channel.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The first seqno; a semi-channel that never paid is at zero.
    pub const ZERO: Self = Self(0);
    /// The largest seqno whose successor still fits the contract's `uint32`: 2^32 - 2.
    pub const MAX_ON_CHAIN: Self = Self(u32::MAX as u64 - 1);

    /// Whether the contract can store this seqno and its successor.
    pub const fn fits_on_chain(self) -> bool {
        self.0 <= Self::MAX_ON_CHAIN.0
    }

    /// The next seqno (saturating: a saturated seqno is refused by [`SeqNo::fits_on_chain`]).
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A channel's identifier (`uint128`), chosen by its parties and part of every signed
/// message, so a state of one channel is never valid in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub u128);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The two parties of a channel, as the contract names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Party A: `key_A`, `balance_A`, `dest_A`.
    A,
    /// Party B: `key_B`, `balance_B`, `dest_B`.
    B,
}

impl Side {
    /// The other party.
    pub const fn other(self) -> Self {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// The contract's `is_A` / `signed_by_A` flag.
    pub const fn is_a(self) -> bool {
        matches!(self, Side::A)
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqno_limit_leaves_room_for_finish() {
        assert!(SeqNo(u32::MAX as u64 - 1).fits_on_chain());
        assert!(!SeqNo(u32::MAX as u64).fits_on_chain());
        assert!(!SeqNo(1 << 32).fits_on_chain());
        assert_eq!(SeqNo(u64::MAX).next(), SeqNo(u64::MAX));
    }

    #[test]
    fn coins_limit() {
        assert!(NanoTon::MAX_COINS.fits_coins());
        assert!(!NanoTon(1 << 120).fits_coins());
        assert_eq!(NanoTon::MAX_COINS.checked_add(NanoTon(1)), None);
        assert_eq!(NanoTon(1).checked_sub(NanoTon(2)), None);
    }
}

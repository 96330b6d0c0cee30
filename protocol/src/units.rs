//! Newtypes for the mesh's units and identities: model ids, block ranges, prices,
//! sequence numbers, wall-clock instants and node roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// 32-byte hash identifying a model (the hash of its tensor manifest). Serialised as
/// 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub [u8; 32]);

impl Serialize for ModelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ModelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl ModelId {
    /// The id as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelId({})", self.to_hex())
    }
}

/// A string that is not a valid 64-digit hex model id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("model id must be 64 hex digits (32 bytes), got {0:?}")]
pub struct ModelIdParseError(pub String);

impl FromStr for ModelId {
    type Err = ModelIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim()).map_err(|_| ModelIdParseError(s.to_owned()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ModelIdParseError(s.to_owned()))?;
        Ok(ModelId(arr))
    }
}

/// A half-open range of transformer blocks `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Default)]
pub struct BlockRange {
    start: u32,
    end: u32,
}

/// A block range whose bounds are out of order or unparsable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockRangeError {
    #[error("block range start {start} is after its end {end}")]
    Reversed { start: u32, end: u32 },
    #[error("block range must look like START..END (e.g. 0..30), got {0:?}")]
    Syntax(String),
}

impl BlockRange {
    /// The empty range, served by nodes that hold no blocks (clients, relays).
    pub const EMPTY: BlockRange = BlockRange { start: 0, end: 0 };

    /// `[start, end)`; `start <= end` is required.
    pub fn new(start: u32, end: u32) -> Result<Self, BlockRangeError> {
        if start > end {
            return Err(BlockRangeError::Reversed { start, end });
        }
        Ok(BlockRange { start, end })
    }

    pub fn start(&self) -> u32 {
        self.start
    }

    pub fn end(&self) -> u32 {
        self.end
    }

    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether every block of the range exists in a model of `n_blocks` blocks.
    pub fn fits_in(&self, n_blocks: u32) -> bool {
        self.end <= n_blocks
    }

    pub fn contains(&self, block: u32) -> bool {
        self.start <= block && block < self.end
    }
}

impl fmt::Display for BlockRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl FromStr for BlockRange {
    type Err = BlockRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || BlockRangeError::Syntax(s.to_owned());
        let (a, b) = s.trim().split_once("..").ok_or_else(syntax)?;
        let start = a.trim().parse().map_err(|_| syntax())?;
        let end = b.trim().parse().map_err(|_| syntax())?;
        BlockRange::new(start, end)
    }
}

/// An amount of TON in nanoton (1 TON = 10^9 nanoton).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct NanoTon(pub u64);

impl fmt::Display for NanoTon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} nTON", self.0)
    }
}

/// A per-node announcement sequence number: each new announcement carries a larger one.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The sequence number of the next announcement: the current time in milliseconds, or
    /// one more than the previous number if the clock has not moved past it. Time-based
    /// numbers stay monotonic across restarts without storing anything.
    pub fn next(previous: Option<SeqNo>, now: UnixMillis) -> SeqNo {
        match previous {
            Some(SeqNo(p)) if p >= now.0 => SeqNo(p.saturating_add(1)),
            _ => SeqNo(now.0),
        }
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Wall-clock time as milliseconds since the Unix epoch. The protocol never reads a
/// clock: drivers pass this in.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn plus_ms(self, ms: u64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(ms))
    }

    pub fn saturating_sub(self, other: UnixMillis) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// What a node does in the mesh.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves a range of transformer blocks.
    #[default]
    Worker,
    /// Plans routes and pays workers; holds tokenizer, embeddings and LM head.
    Client,
    /// Public node: relays for peers behind NAT and seeds discovery.
    Relay,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Client => "client",
            Role::Relay => "relay",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name other than worker, client or relay.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role must be worker, client or relay, got {0:?}")]
pub struct RoleParseError(pub String);

impl FromStr for Role {
    type Err = RoleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "worker" => Ok(Role::Worker),
            "client" => Ok(Role::Client),
            "relay" => Ok(Role::Relay),
            other => Err(RoleParseError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_range_parses_and_checks_order() {
        assert_eq!("3..7".parse::<BlockRange>(), BlockRange::new(3, 7));
        assert!(matches!(
            "7..3".parse::<BlockRange>(),
            Err(BlockRangeError::Reversed { .. })
        ));
        assert!(matches!(
            "7-3".parse::<BlockRange>(),
            Err(BlockRangeError::Syntax(_))
        ));
        let r = BlockRange::new(10, 30).expect("ordered");
        assert!(r.fits_in(30));
        assert!(!r.fits_in(29));
        assert_eq!(r.len(), 20);
    }

    #[test]
    fn seqno_is_monotonic_even_when_the_clock_steps_back() {
        let a = SeqNo::next(None, UnixMillis(1000));
        assert_eq!(a, SeqNo(1000));
        let b = SeqNo::next(Some(a), UnixMillis(900));
        assert_eq!(b, SeqNo(1001));
        let c = SeqNo::next(Some(b), UnixMillis(5000));
        assert_eq!(c, SeqNo(5000));
    }

    #[test]
    fn model_id_round_trips_hex() {
        let id = ModelId([0xab; 32]);
        assert_eq!(id.to_hex().parse::<ModelId>(), Ok(id));
        assert!("abc".parse::<ModelId>().is_err());
    }
}

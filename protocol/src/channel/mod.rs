//! Payment channels on TON: the official contract's layouts and messages (byte for byte
//! as `async-channel.func`), ed25519 signatures over cell hashes, pricing, and the
//! off-chain state machine of a client paying a worker per token.
//!
//! - [`units`]: `NanoTon`, `SeqNo`, `ChannelId`, `Side`, with the on-chain limits.
//! - [`layout`]: the contract's storage, configs, semi-channel states, quarantine.
//! - [`messages`]: the bodies of every message the contract accepts.
//! - [`keys`]: signing and verifying cell hashes.
//! - [`pricing`]: tokens × price per token.
//! - [`metering`]: what a forward is charged as, credit windows, terms and receipts.
//! - [`state`]: `Payer` and `Payee`, `verify_state`, close/commit bodies.
//! - [`watcher`]: when to challenge a stale uncooperative close, when to finish.
//! - [`acceptance`]: a payee's rules for a peer's open and close requests.
//! - [`error`]: refusals, each naming its rule.

pub mod acceptance;
pub mod error;
pub mod keys;
pub mod layout;
pub mod messages;
pub mod metering;
pub mod pricing;
pub mod state;
pub mod units;
pub mod watcher;

pub use error::{ChannelError, LayoutError};
pub use layout::{
    ChannelStorage, ClosingConfig, PaymentConfig, QuarantinedState, SemiChannelBody,
    SemiChannelState, SignedSemiChannel, StdAddress,
};
pub use messages::{
    ChannelMessage, CloseBody, CommitBody, InitBody, OneSigned, SignedBody, TwoSigned,
};
pub use pricing::{Price, Usage};
pub use state::{Accepted, ChannelParams, Payee, Payer, verify_state};
pub use units::{ChannelId, NanoTon, SeqNo, Side};
pub use watcher::{WatchAction, judge_quarantine};

//! cocoon-ton-local: an embedded TON chain. The real contracts (the official payment
//! channel's compiled code, fetched at setup) run in `tycho-vm` through
//! `tycho-executor`, with TON's network config, on a clock the caller moves.
//!
//! It lives beside the node (`node/ton-local/`) rather than inside it so that the
//! contract tests build without the node's GPU and libp2p stack; `cocoon ton-local`
//! wraps it in an HTTP server.
//!
//! - [`config`]: where setup stored contract code and config, and loading them (with
//!   the ConfigParam 12 workaround).
//! - [`chain`]: accounts, messages, transactions and their outcomes.

pub mod chain;
pub mod config;

pub use chain::{
    InternalMessage, LocalChain, LocalChainError, OutTransfer, TranscriptEntry, TxOutcome,
};
pub use config::{CHANNEL_CODE_HASH, ConfigError, cache_dir, load_channel_code, load_ton_config};

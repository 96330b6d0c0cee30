//! The embedded chain: [`config`] loads what setup fetched (contract code, TON's network
//! config, with the ConfigParam 12 workaround); [`chain`] runs messages as transactions.

pub mod chain;
pub mod config;

pub use chain::{
    ChainChanges, ChainTransaction, GetterResult, InternalMessage, LocalChain, LocalChainError,
    OutTransfer, TranscriptEntry, TxOutcome,
};
pub use config::{
    CHANNEL_CODE_HASH, ConfigError, WALLET_V4R2_CODE_HASH, cache_dir, load_channel_code,
    load_ton_config, load_wallet_code,
};

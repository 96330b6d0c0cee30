//! Inputs of the local chain that setup fetched (`scripts/ton/fetch-contracts`) into
//! `${COCOON_TON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocoon/ton}`: the payment
//! channel's code (checked against its code hash) and a TON network config.
//!
//! ConfigParam 12 workaround: TON's current config describes workchains with the
//! `workchain_v2#a7` constructor, which tycho-types 0.3.6 cannot parse (it knows
//! `workchain#a6`), so `ParsedConfig::parse` fails with `InvalidTag`. When that happens the basechain
//! description is rebuilt as `workchain#a6` with the values the executor uses
//! (enabled, accepting messages, basic format), and everything else is kept.

use std::path::PathBuf;

use thiserror::Error;
use tycho_executor::ParsedConfig;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, HashBytes};
use tycho_types::dict::Dict;
use tycho_types::models::{
    BlockchainConfig, BlockchainConfigParams, WorkchainDescription, WorkchainFormat,
    WorkchainFormatBasic,
};

/// Representation hash of the payment channel's code (tonweb@0.0.66).
pub const CHANNEL_CODE_HASH: &str =
    "41f5b77f02d4a96eb465197215ed00923720a6c731fa32934f9c0e80ffb85589";

/// Representation hash of the standard wallet v4r2's code (as shipped in tonweb@0.0.66).
pub const WALLET_V4R2_CODE_HASH: &str =
    "feb5ff6820e2ff0d9483e7e0d62c817d846789fb4ae580c878866d959dabd5c0";

/// A setup input that is missing or wrong.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file is not there: setup was not run.
    #[error("{path}: {source} (run scripts/ton/fetch-contracts first)")]
    Missing {
        /// The path read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold a valid BoC.
    #[error("{path}: not a BoC: {reason}")]
    BadBoc {
        /// The path read.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The code's hash is not the one expected.
    #[error("{path}: code hash {found}, expected {expected}")]
    WrongCodeHash {
        /// The path read.
        path: PathBuf,
        /// The hash found.
        found: String,
        /// The hash expected.
        expected: &'static str,
    },
    /// The config does not parse.
    #[error("TON config does not parse: {0}")]
    BadConfig(String),
}

/// The directory setup stores TON inputs in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COCOON_TON_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("cocoon").join("ton")
}

fn read(path: PathBuf) -> Result<(PathBuf, String), ConfigError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok((path, s)),
        Err(source) => Err(ConfigError::Missing { path, source }),
    }
}

/// The payment channel's code cell, hash-checked.
pub fn load_channel_code() -> Result<Cell, ConfigError> {
    load_code("payment-channel.boc.hex", CHANNEL_CODE_HASH)
}

/// The standard wallet v4r2's code cell, hash-checked.
pub fn load_wallet_code() -> Result<Cell, ConfigError> {
    load_code("wallet-v4r2.boc.hex", WALLET_V4R2_CODE_HASH)
}

fn load_code(file: &str, expected: &'static str) -> Result<Cell, ConfigError> {
    let (path, text) = read(cache_dir().join(file))?;
    let code = Boc::decode_hex(text.trim()).map_err(|e| ConfigError::BadBoc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let found = hex::encode(code.repr_hash().0);
    if found != expected {
        return Err(ConfigError::WrongCodeHash {
            path,
            found,
            expected,
        });
    }
    Ok(code)
}

/// TON's network config (from setup), parsed for the executor at time `now`.
pub fn load_ton_config(now: u32) -> Result<ParsedConfig, ConfigError> {
    let (path, text) = read(cache_dir().join("ton-config.boc.b64"))?;
    let root = Boc::decode_base64(text.trim()).map_err(|e| ConfigError::BadBoc {
        path,
        reason: e.to_string(),
    })?;
    parse_ton_config(root, now)
}

/// Parses a ConfigParams dictionary root, applying the ConfigParam 12 workaround.
pub fn parse_ton_config(root: Cell, now: u32) -> Result<ParsedConfig, ConfigError> {
    let bad = |e: tycho_types::error::Error| ConfigError::BadConfig(e.to_string());
    let mut config = BlockchainConfig {
        // TON's config contract: -1:5555…5555.
        address: HashBytes([0x55; 32]),
        params: BlockchainConfigParams::from_raw(root),
    };
    // The dictionary loads lazily: only reading its entries reveals the `#a7` tag.
    let workchains_parse = config
        .params
        .get_workchains()
        .and_then(|d| d.iter().try_for_each(|e| e.map(drop)));
    if workchains_parse.is_err() {
        let mut workchains = Dict::<i32, WorkchainDescription>::new();
        workchains
            .set(
                0,
                WorkchainDescription {
                    enabled_since: 0,
                    actual_min_split: 0,
                    min_split: 0,
                    max_split: 0,
                    active: true,
                    accept_msgs: true,
                    zerostate_root_hash: HashBytes::ZERO,
                    zerostate_file_hash: HashBytes::ZERO,
                    version: 0,
                    format: WorkchainFormat::Basic(WorkchainFormatBasic {
                        vm_mode: 0,
                        vm_version: 0,
                    }),
                },
            )
            .map_err(bad)?;
        config.params.set_workchains(&workchains).map_err(bad)?;
    }
    ParsedConfig::parse(config, now).map_err(bad)
}

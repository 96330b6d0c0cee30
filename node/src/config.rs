//! The daemon's configuration: a TOML file (`cocoon.toml`) whose every key has a
//! command-line flag of the same meaning; flags win over the file. Also the data
//! directory's default location and the names of the files in it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cocoon_protocol::session::{CipherSuite, aes_hardware};
use cocoon_protocol::units::{BlockRange, ModelId, Role};
use serde::{Deserialize, Serialize};

/// Files kept in a node's data directory.
pub mod files {
    /// ed25519 identity (mode 0600).
    pub const NODE_KEY: &str = "node.key";
    /// X25519 static key for end-to-end sessions (mode 0600).
    pub const NOISE_KEY: &str = "noise.key";
    /// Control API bearer token (mode 0600), rewritten at every start.
    pub const COOKIE: &str = "control.cookie";
    /// Control API address (`127.0.0.1:PORT`), removed at exit.
    pub const CONTROL_ADDR: &str = "control.addr";
    /// OpenAI API address (`127.0.0.1:PORT`) of a client node, removed at exit.
    pub const API_ADDR: &str = "api.addr";
    /// The TON API URL the node last ran with (no key), so `cocoon wallet` finds it.
    pub const TON_URL: &str = "ton.url";
}

/// The data directory when `--data-dir` is not given: `$XDG_DATA_HOME/cocoon`, else
/// `$HOME/.local/share/cocoon`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("cocoon");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/cocoon")
}

/// Everything `cocoon node` can be told. Field names are the TOML keys; each has a flag
/// `--field-name`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Multiaddrs to listen on (`--listen`).
    pub listen: Vec<String>,
    /// Multiaddrs of bootstrap peers, ideally with `/p2p/<id>` (`--bootstrap`).
    pub bootstrap: Vec<String>,
    /// Relays to listen through, `/p2p/<id>` required (`--relay`).
    pub relays: Vec<String>,
    /// worker, client or relay (`--role`).
    pub role: Role,
    /// Blocks served, `S..E`, or `auto` / `auto:N` to pick a span of N (default 10) that
    /// strengthens the mesh's weakest blocks (`--blocks`); default: the whole model for
    /// workers, none otherwise.
    pub blocks: Option<String>,
    /// Model file, or `default` for the cached default model (`--model`). Workers load
    /// their blocks from it, clients its head; its manifest hash is the model id.
    pub model: Option<PathBuf>,
    /// Model id as 64 hex digits, used when no model file is given (`--model-id`).
    pub model_id: Option<String>,
    /// Blocks in the model (`--n-blocks`).
    pub n_blocks: u32,
    /// Price per prompt token in nanoton (`--price-prompt`).
    pub price_prompt_nanoton: u64,
    /// Price per generated token in nanoton (`--price-completion`).
    pub price_completion_nanoton: u64,
    /// Announced throughput, tokens/s (`--throughput`), until it is measured.
    pub throughput_tps: f64,
    /// Announced free KV capacity in tokens (`--free-kv-tokens`).
    pub free_kv_tokens: u64,
    /// TON wallet address (`--ton-wallet`); empty: the node's own wallet's when a chain
    /// is configured.
    pub ton_wallet: String,
    /// toncenter-v2 API of the TON chain for payment channels, e.g. a `cocoon ton-local`
    /// or `https://testnet.toncenter.com/api/v2` (`--ton-url`, env `COCOON_TON_URL`);
    /// empty: no payments.
    pub ton_url: String,
    /// toncenter API key, if the endpoint wants one (`--ton-api-key`, env
    /// `COCOON_TON_API_KEY`).
    pub ton_api_key: Option<String>,
    /// Find peers on the LAN with mDNS (`--mdns true|false`).
    pub mdns: bool,
    /// Serve as a relay: `auto` (when AutoNAT finds us public), `on`, `off` (`--relay-server`).
    pub relay_server: RelayServerMode,
    /// Seconds between re-announcements (`--announce-interval`).
    pub announce_interval_secs: u64,
    /// Lifetime of an announcement, seconds (`--announce-ttl`).
    pub announce_ttl_secs: u64,
    /// Port of the control API on 127.0.0.1; 0 picks a free one (`--control-port`).
    pub control_port: u16,
    /// Seconds before AutoNAT's first probe (`--autonat-delay`).
    pub autonat_delay_secs: u64,
    /// Where a client node with a model serves the OpenAI API; loopback only (`--api-listen`).
    pub api_listen: String,
    /// Compute backend for blocks and head: wgpu or cpu (`--backend`).
    pub backend: crate::cmd::run::Backend,
    /// Memory for the KV caches of all sessions, MiB (`--kv-budget-mib`).
    pub kv_budget_mib: usize,
    /// With `--blocks auto`: the memory this worker may use for weights and KV caches,
    /// MiB; it takes as many blocks as fit (`--max-memory-mib`).
    pub max_memory_mib: Option<u64>,
    /// A client gives up on a worker that has not answered a forward in this many
    /// seconds and fails over (`--forward-timeout-secs`).
    pub forward_timeout_secs: u64,
    /// A client runs the model's first and last blocks itself, so no worker sees the
    /// hidden states nearest the tokens (`--local-blocks`).
    pub local_blocks: bool,
    /// A client with a chain opens a payment channel to a worker it has none with,
    /// depositing this many nanoton (`--channel-deposit-nanoton`).
    pub channel_deposit_nanoton: u64,
    /// Cipher suites of end-to-end sessions: `auto` offers and uses AES-GCM where the CPU
    /// has AES hardware (ChaChaPoly otherwise and with peers without it), `chachapoly`
    /// only ChaChaPoly (`--session-cipher`).
    pub session_cipher: SessionCipher,
}

/// Which Noise cipher suites the node's sessions may run.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SessionCipher {
    Auto,
    Chachapoly,
}

impl SessionCipher {
    /// The suites accepted as a worker and usable as a client, on this machine.
    pub fn suites(self) -> Vec<CipherSuite> {
        match self {
            SessionCipher::Auto => CipherSuite::offered(aes_hardware()),
            SessionCipher::Chachapoly => CipherSuite::offered(false),
        }
    }
}

/// When the node serves as a circuit relay.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RelayServerMode {
    Auto,
    On,
    Off,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            relays: Vec::new(),
            role: Role::Worker,
            blocks: None,
            model: None,
            model_id: None,
            n_blocks: crate::model_info::DEFAULT_N_BLOCKS,
            price_prompt_nanoton: 1_000,
            price_completion_nanoton: 2_000,
            throughput_tps: 0.0,
            free_kv_tokens: 0,
            ton_wallet: String::new(),
            ton_url: String::new(),
            ton_api_key: None,
            mdns: true,
            relay_server: RelayServerMode::Auto,
            announce_interval_secs: 60,
            announce_ttl_secs: 300,
            control_port: 0,
            autonat_delay_secs: 15,
            api_listen: "127.0.0.1:0".into(),
            backend: crate::cmd::run::Backend::Wgpu,
            kv_budget_mib: 512,
            max_memory_mib: None,
            forward_timeout_secs: 60,
            local_blocks: false,
            channel_deposit_nanoton: 1_000_000_000,
            session_cipher: SessionCipher::Auto,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// The block range served, checked against `n_blocks`.
    pub fn block_range(&self) -> anyhow::Result<BlockRange> {
        if self.auto_span()?.is_some() {
            return Ok(BlockRange::EMPTY);
        }
        let range = match (&self.blocks, self.role) {
            (Some(b), _) => b.parse::<BlockRange>().context("--blocks")?,
            (None, Role::Worker) => BlockRange::new(0, self.n_blocks).context("n_blocks")?,
            (None, _) => BlockRange::EMPTY,
        };
        anyhow::ensure!(
            range.fits_in(self.n_blocks),
            "blocks {range} lie outside the model's {} blocks",
            self.n_blocks
        );
        Ok(range)
    }

    /// `--blocks auto[:N]` within `--max-memory-mib`: the span length to place, no longer
    /// than the blocks whose weights (`block_bytes`, each block's, in order) fit beside the
    /// KV budget; `None` when auto placement is not asked.
    pub fn auto_span_within(&self, block_bytes: &[u64]) -> anyhow::Result<Option<u32>> {
        let Some(span) = self.auto_span()? else {
            return Ok(None);
        };
        let Some(max) = self.max_memory_mib else {
            return Ok(Some(span));
        };
        let kv = self.kv_budget_mib as u64;
        anyhow::ensure!(
            max > kv,
            "--max-memory-mib {max} leaves nothing for weights beside the KV budget of {kv} MiB"
        );
        let fit = cocoon_protocol::route::blocks_that_fit(block_bytes, (max - kv) << 20);
        anyhow::ensure!(
            fit >= 1,
            "--max-memory-mib {max}: not one block fits ({} MiB a block beside {kv} MiB of KV)",
            block_bytes.iter().copied().max().unwrap_or(0) >> 20
        );
        // `auto` without a length takes every block that fits; `auto:N` at most N.
        let asked = self.blocks.as_deref().is_some_and(|b| b.contains(':'));
        Ok(Some(if asked {
            span.min(fit)
        } else {
            fit.min(self.n_blocks)
        }))
    }

    /// `--blocks auto[:N]`: the span length to place, if asked.
    pub fn auto_span(&self) -> anyhow::Result<Option<u32>> {
        let Some(b) = self.blocks.as_deref() else {
            return Ok(None);
        };
        let Some(rest) = b.strip_prefix("auto") else {
            return Ok(None);
        };
        let span = match rest.strip_prefix(':') {
            None if rest.is_empty() => 10.min(self.n_blocks),
            Some(n) => n
                .parse::<u32>()
                .map_err(|_| anyhow::anyhow!("--blocks {b}: expected auto or auto:N"))?,
            None => anyhow::bail!("--blocks {b}: expected auto or auto:N"),
        };
        anyhow::ensure!(
            span >= 1 && span <= self.n_blocks,
            "--blocks {b}: the span must be 1..={} blocks",
            self.n_blocks
        );
        Ok(Some(span))
    }

    /// The configured model id, if any.
    pub fn parsed_model_id(&self) -> anyhow::Result<Option<ModelId>> {
        self.model_id
            .as_deref()
            .map(|s| s.parse::<ModelId>().context("--model-id"))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_from_toml() {
        let text = r#"
            listen = ["/ip4/127.0.0.1/tcp/4001"]
            bootstrap = ["/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWAbc"]
            relays = []
            role = "relay"
            blocks = "0..10"
            model_id = "0000000000000000000000000000000000000000000000000000000000000000"
            n_blocks = 30
            price_prompt_nanoton = 5
            price_completion_nanoton = 6
            throughput_tps = 12.5
            free_kv_tokens = 100
            ton_wallet = ""
            ton_url = "http://127.0.0.1:8081/api/v2"
            ton_api_key = "k"
            mdns = false
            relay_server = "on"
            announce_interval_secs = 10
            announce_ttl_secs = 60
            control_port = 0
            autonat_delay_secs = 1
        "#;
        let c: NodeConfig = toml::from_str(text).expect("parses");
        assert_eq!(c.role, Role::Relay);
        assert_eq!(c.relay_server, RelayServerMode::On);
        assert_eq!(c.block_range().expect("fits").len(), 10);
        assert!(toml::from_str::<NodeConfig>("no_such_key = 1").is_err());
    }

    /// `auto` takes the blocks that fit in `--max-memory-mib` beside the KV budget (the
    /// heaviest ones counted), `auto:N` at most N, and a cap too small for one block is
    /// an error.
    #[test]
    fn auto_span_fits_the_memory_cap() {
        let mib = 1u64 << 20;
        let blocks = vec![10 * mib; 30];
        let c = |b: &str, max: Option<u64>| NodeConfig {
            blocks: Some(b.into()),
            n_blocks: 30,
            kv_budget_mib: 100,
            max_memory_mib: max,
            ..NodeConfig::default()
        };
        assert_eq!(
            c("auto", None).auto_span_within(&blocks).expect("ok"),
            Some(10)
        );
        assert_eq!(
            c("auto", Some(225)).auto_span_within(&blocks).expect("ok"),
            Some(12)
        );
        assert_eq!(
            c("auto:5", Some(225))
                .auto_span_within(&blocks)
                .expect("ok"),
            Some(5)
        );
        assert_eq!(
            c("auto", Some(1000)).auto_span_within(&blocks).expect("ok"),
            Some(30)
        );
        let mut uneven = blocks.clone();
        uneven[3] = 60 * mib;
        assert_eq!(
            c("auto", Some(225)).auto_span_within(&uneven).expect("ok"),
            Some(7)
        );
        assert!(c("auto", Some(105)).auto_span_within(&blocks).is_err());
        assert!(c("auto", Some(50)).auto_span_within(&blocks).is_err());
        assert_eq!(
            c("0..3", Some(50)).auto_span_within(&blocks).expect("ok"),
            None
        );
    }

    #[test]
    fn blocks_outside_the_model_are_refused() {
        let c = NodeConfig {
            blocks: Some("20..31".into()),
            ..NodeConfig::default()
        };
        assert!(c.block_range().is_err());
    }
}

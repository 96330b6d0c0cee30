//! `cocoon node`: flags (each a twin of a `cocoon.toml` key) merged over the config file.

use std::path::PathBuf;

use cocoon_protocol::units::Role;

use crate::config::{NodeConfig, RelayServerMode, SessionCipher};

/// Runs a mesh node (the daemon).
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// TOML config file; flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Multiaddr to listen on (repeatable), or `none` to accept no direct connections
    /// [default: all interfaces, TCP and QUIC, random ports].
    #[arg(long)]
    pub listen: Vec<String>,
    /// Bootstrap peer multiaddr, ideally ending in /p2p/<id> (repeatable).
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Relay to listen through, ending in /p2p/<id> (repeatable).
    #[arg(long)]
    pub relay: Vec<String>,
    /// worker, client or relay.
    #[arg(long)]
    pub role: Option<Role>,
    /// Blocks served, START..END (half-open), or auto / auto:N (a span of N chosen to
    /// strengthen the mesh's weakest blocks).
    #[arg(long)]
    pub blocks: Option<String>,
    /// Model file, or `default` for the cached default model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Model id (64 hex digits) when no model file is given.
    #[arg(long)]
    pub model_id: Option<String>,
    /// Number of blocks in the model.
    #[arg(long)]
    pub n_blocks: Option<u32>,
    /// Price per prompt token, nanoton.
    #[arg(long)]
    pub price_prompt: Option<u64>,
    /// Price per generated token, nanoton.
    #[arg(long)]
    pub price_completion: Option<u64>,
    /// Announced throughput in tokens/s.
    #[arg(long)]
    pub throughput: Option<f64>,
    /// Announced free KV capacity in tokens.
    #[arg(long)]
    pub free_kv_tokens: Option<u64>,
    /// TON wallet address [default: the node's own wallet's, when --ton-url is set].
    #[arg(long)]
    pub ton_wallet: Option<String>,
    /// toncenter-v2 API base URL of the chain for payment channels (a `cocoon
    /// ton-local`, testnet or mainnet); unset: no payments.
    #[arg(long, env = "COCOON_TON_URL")]
    pub ton_url: Option<String>,
    /// toncenter API key, if the endpoint wants one.
    #[arg(long, env = "COCOON_TON_API_KEY", hide_env_values = true)]
    pub ton_api_key: Option<String>,
    /// Discover LAN peers with mDNS.
    #[arg(long)]
    pub mdns: Option<bool>,
    /// Session cipher suites: auto (AES-GCM where both ends have AES hardware, else
    /// ChaChaPoly) or chachapoly (only).
    #[arg(long, value_enum)]
    pub session_cipher: Option<SessionCipher>,
    /// Serve as a circuit relay: auto (when AutoNAT finds us public), on, off.
    #[arg(long, value_enum)]
    pub relay_server: Option<RelayServerMode>,
    /// Seconds between re-announcements.
    #[arg(long)]
    pub announce_interval: Option<u64>,
    /// Lifetime of an announcement in seconds.
    #[arg(long)]
    pub announce_ttl: Option<u64>,
    /// Control API port on 127.0.0.1 (0: any free port).
    #[arg(long)]
    pub control_port: Option<u16>,
    /// Seconds before AutoNAT's first probe.
    #[arg(long)]
    pub autonat_delay: Option<u64>,
    /// Address of the OpenAI API a client node serves (loopback only).
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Compute backend: wgpu or cpu.
    #[arg(long, value_enum)]
    pub backend: Option<crate::cmd::run::Backend>,
    /// Memory for all sessions' KV caches, MiB.
    #[arg(long)]
    pub kv_budget_mib: Option<usize>,
    /// With `--blocks auto`: memory for weights and KV caches, MiB; the worker takes as
    /// many blocks as fit, then the mesh's weakest span.
    #[arg(long)]
    pub max_memory_mib: Option<u64>,
    /// Seconds a client waits for a worker's answer before failing over.
    #[arg(long)]
    pub forward_timeout_secs: Option<u64>,
    /// Nanoton a client deposits when it opens a channel to pay a worker.
    #[arg(long)]
    pub channel_deposit_nanoton: Option<u64>,
    /// As a client, run the model's first and last blocks here (no worker sees the hidden
    /// states nearest the tokens); workers then serve the blocks in between.
    #[arg(long)]
    pub local_blocks: bool,
    /// Test tooling: enable POST /v1/dev/forge, which publishes invalid announcements.
    #[arg(long, hide = true)]
    pub dev_forge: bool,
    /// Test tooling: misbehave as a worker (wrong-shape, stall, tamper).
    #[arg(long, hide = true, value_enum)]
    pub dev_misbehave: Option<crate::infer::worker::Misbehave>,
    /// Test tooling: announce these blocks instead of the ones served.
    #[arg(long, hide = true)]
    pub dev_announce_blocks: Option<String>,
    /// Test tooling: append the raw bytes of every inference stream to this file.
    #[arg(long, hide = true)]
    pub dev_tap: Option<PathBuf>,
}

impl NodeArgs {
    /// The config file (or defaults) with every given flag applied over it.
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(p) => NodeConfig::load(p)?,
            None => NodeConfig::default(),
        };
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        c.bootstrap.extend(self.bootstrap.iter().cloned());
        c.relays.extend(self.relay.iter().cloned());
        if let Some(v) = self.role {
            c.role = v;
        }
        if self.local_blocks {
            c.local_blocks = true;
        }
        if let Some(v) = &self.blocks {
            c.blocks = Some(v.clone());
        }
        if let Some(v) = &self.model {
            c.model = Some(v.clone());
        }
        if let Some(v) = &self.model_id {
            c.model_id = Some(v.clone());
        }
        if let Some(v) = &self.ton_api_key {
            c.ton_api_key = Some(v.clone());
        }
        if let Some(v) = self.max_memory_mib {
            c.max_memory_mib = Some(v);
        }
        macro_rules! set {
            ($($flag:ident => $key:ident),*) => { $( if let Some(v) = self.$flag.clone() { c.$key = v; } )* };
        }
        set!(n_blocks => n_blocks, price_prompt => price_prompt_nanoton, price_completion => price_completion_nanoton,
             throughput => throughput_tps, free_kv_tokens => free_kv_tokens, ton_wallet => ton_wallet, ton_url => ton_url, mdns => mdns,
             relay_server => relay_server, announce_interval => announce_interval_secs, announce_ttl => announce_ttl_secs,
             control_port => control_port, autonat_delay => autonat_delay_secs,
             api_listen => api_listen, backend => backend, kv_budget_mib => kv_budget_mib,
             forward_timeout_secs => forward_timeout_secs,
             channel_deposit_nanoton => channel_deposit_nanoton, session_cipher => session_cipher);
        Ok(c)
    }
}

//! The control API's request and response bodies, shared by the daemon and the CLI.

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusInfo {
    pub peer_id: String,
    pub role: String,
    pub version: String,
    pub listen_addrs: Vec<String>,
    pub external_addrs: Vec<String>,
    pub nat_status: String,
    pub relay_server: bool,
    pub model_id: Option<String>,
    pub n_blocks: u32,
    pub blocks: String,
    pub connected_peers: usize,
    pub known_peers: usize,
    pub announcements: usize,
    pub uptime_secs: u64,
    pub noise_static_key: String,
}

/// One row of `GET /v1/peers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub connected: bool,
    /// `direct`, `relayed`, or `none` when not connected.
    pub connection: String,
    pub addresses: Vec<String>,
    /// Smoothed RTT (EWMA of pings).
    pub rtt_ms: Option<f64>,
    /// Lowest recent RTT: what route planning charges for the hop.
    #[serde(default)]
    pub path_rtt_ms: Option<f64>,
    pub role: Option<String>,
    pub model_id: Option<String>,
    pub blocks: Option<String>,
    pub score: f64,
    pub gossip_score: Option<f64>,
    pub rejections: u32,
    pub last_rejection: Option<String>,
    pub failures: u32,
    pub banned: bool,
    pub agent: Option<String>,
}

/// `GET /v1/peers/{id}`: the row plus the last announcement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerDetail {
    #[serde(flatten)]
    pub peer: PeerInfo,
    pub protocols: Vec<String>,
    pub announcement: Option<serde_json::Value>,
}

/// `POST /v1/peers/{id}/ping?count=N`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingReport {
    pub peer_id: String,
    /// Round trip of each ping in ms; `None` where it failed.
    pub rtts_ms: Vec<Option<f64>>,
    pub errors: Vec<String>,
}

/// One model of `GET /v1/models`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub model_id: String,
    pub n_blocks: u32,
    /// Blocks served by at least one live worker.
    pub covered_blocks: u32,
    pub complete: bool,
    pub workers: Vec<ModelWorker>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelWorker {
    pub peer_id: String,
    pub blocks: String,
    pub price_prompt_nanoton: u64,
    pub price_completion_nanoton: u64,
    pub throughput_tps: f64,
}

/// `POST /v1/dev/forge?kind=K` (only with `--dev-forge`): publish a deliberately invalid
/// announcement, for tests of the validation path.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ForgeKind {
    BadSignature,
    Expired,
    BlocksBeyondModel,
    ReplayedSeqno,
}

/// `GET /v1/routes?model=M&k=K`: coverage and the best chains for a model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoutesInfo {
    pub model_id: String,
    pub n_blocks: u32,
    /// Live workers per block.
    pub coverage: Vec<u32>,
    pub routes: Vec<RouteInfo>,
    /// Why no route exists, when none does.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteInfo {
    pub hops: Vec<RouteHop>,
    pub expected_ms_per_token: f64,
    pub price_per_token_nanoton: u64,
    pub prompt_price_per_token_nanoton: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteHop {
    pub peer_id: String,
    pub blocks: String,
}

/// One row of `GET /v1/channels`: a payment channel of this node, as its store and the
/// chain know it. Amounts in nanoton.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelRow {
    /// The channel id, 32 hex digits.
    pub channel_id: String,
    /// The contract's address (raw form `0:<hex>`).
    pub address: String,
    /// The other party's peer id.
    pub peer: String,
    /// `payer` (we pay, side A) or `payee` (we are paid, side B).
    pub role: String,
    /// The payer's deposit.
    pub deposit_nanoton: u128,
    /// What we signed over to the peer (payer).
    pub sent_nanoton: u128,
    /// What the peer signed over to us (payee).
    pub received_nanoton: u128,
    /// Seqno of the latest payer state (signed, or accepted).
    pub seqno: u64,
    /// Tokens metered in the channel: the payer counts those paid for, the payee those
    /// served.
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// On chain: `not-deployed`, `uninited`, `open`, `closing` (an uncooperative close
    /// in quarantine), `settling`, `awaiting-finalization`, `closed`, or `unknown: why`.
    pub state: String,
    /// Balances on chain (A, B), when the contract answers.
    pub balances_nanoton: Option<(u128, u128)>,
}

/// `POST /v1/channels/{id}/close`: what was done.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelCloseReport {
    pub channel_id: String,
    pub address: String,
    /// `cooperative` or `uncooperative`.
    pub kind: String,
    /// The channel's row after the message went on chain.
    pub row: ChannelRow,
}

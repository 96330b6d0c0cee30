//! Scenario files: the TOML schema of `simulations/scenarios/*.toml`, its checks, and
//! overriding one dotted parameter (`demand.requests_per_s=4`) for sweeps.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A whole scenario.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Width of the time-series bins, in simulated seconds.
    #[serde(default = "default_bin")]
    pub bin_s: f64,
    pub model: ModelCfg,
    pub nodes: NodesCfg,
    pub workers: WorkersCfg,
    pub network: NetworkCfg,
    #[serde(default)]
    pub churn: ChurnCfg,
    /// Random demand (Poisson arrivals); absent when the scenario lists its `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<DemandCfg>,
    /// A fixed request list, replacing `demand` (validation runs, reproductions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<ScriptedRequest>,
    /// Scripted faults: a worker killed, vanishing or leaving at a time or a token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<ScriptedFault>,
    #[serde(default)]
    pub gossip: GossipCfg,
    #[serde(default)]
    pub adversary: AdversaryCfg,
    #[serde(default)]
    pub client: ClientCfg,
    #[serde(default)]
    pub payments: PaymentsCfg,
}

/// One request of a fixed list: when it arrives, from which client, how long.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedRequest {
    /// Arrival, simulated seconds.
    pub at_s: f64,
    /// Index into the clients (0 = the first).
    #[serde(default)]
    pub client: u32,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
}

/// How a scripted fault takes a worker away, and so how soon its clients notice.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The process is killed (`kill -9`): the kernel resets its connections, so a
    /// client on a live stream notices after one round trip.
    Crash,
    /// The machine drops off the network: noticed at the stall timeout.
    Vanish,
    /// An orderly departure: noticed after the keep-alive (1 s).
    Leave,
}

/// A worker taken away during the run; it does not come back.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    /// Index into the workers, in the order of `workers.spans`.
    pub worker: u32,
    pub kind: FaultKind,
    /// When, in simulated seconds; or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_s: Option<f64>,
    /// once request `request` (index into `requests`) has received `after_tokens` tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_tokens: Option<u64>,
}

fn default_seed() -> u64 {
    1
}
fn default_bin() -> f64 {
    10.0
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCfg {
    pub n_blocks: u32,
    /// Bytes of one token's hidden state between hops (d_model × 4 for f32).
    pub hidden_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodesCfg {
    pub relays: u32,
    pub workers: u32,
    pub clients: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierCfg {
    pub name: String,
    /// Share of workers in this tier (shares are normalised).
    pub share: f64,
    /// Block-tokens per second: one token through one block.
    pub block_tokens_per_s: f64,
    /// Prices in nanoton per token, for the worker's whole span.
    pub price_prompt: u64,
    pub price_completion: u64,
    /// KV-cache capacity in tokens.
    pub kv_tokens: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersCfg {
    /// Blocks per worker when placed with `auto`.
    pub span_blocks: u32,
    /// One entry per worker in order ("0..10" or "auto"); workers past the list use auto.
    #[serde(default)]
    pub spans: Vec<String>,
    pub tiers: Vec<TierCfg>,
    /// One tier name per worker in order, overriding the shares (workers past the list
    /// draw by share): a measured mesh whose workers differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier_of: Vec<String>,
    /// Prefill cost of one prompt token relative to one decoded token (batched).
    #[serde(default = "default_prefill")]
    pub prefill_factor: f64,
    /// Seconds between re-announcements; announcements live `announce_ttl_s`.
    #[serde(default = "default_announce")]
    pub announce_interval_s: f64,
    #[serde(default = "default_ttl")]
    pub announce_ttl_s: f64,
}

fn default_prefill() -> f64 {
    0.2
}
fn default_announce() -> f64 {
    120.0
}
fn default_ttl() -> f64 {
    300.0
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCfg {
    pub regions: Vec<String>,
    /// Share of nodes per region (normalised).
    pub region_share: Vec<f64>,
    /// Round-trip times in ms, `regions × regions`.
    pub rtt_ms: Vec<Vec<f64>>,
    /// Per-link bandwidth in Mbit/s.
    pub bandwidth_mbps: f64,
    /// Probability a message is lost (costs one extra RTT to recover).
    pub loss: f64,
    /// Share of workers behind NAT, reached through a relay.
    pub nat_share: f64,
    /// One-way overhead added by the relay hop, in ms.
    pub relay_overhead_ms: f64,
    /// Extra random jitter on every RTT, as a fraction (0.1 = ±10 %).
    #[serde(default)]
    pub jitter: f64,
    /// One region name per node in the order relays, workers, clients, overriding
    /// `region_share` (nodes past the list draw by share): a measured mesh, each worker
    /// in a region of its own with the RTT the client measured to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_of: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnCfg {
    pub enabled: bool,
    /// Online session lengths: "exp" or "lognormal" with this mean (s).
    pub session_dist: String,
    pub mean_session_s: f64,
    /// Lognormal shape (σ of the underlying normal).
    pub session_sigma: f64,
    /// Offline periods, exponential with this mean (s).
    pub mean_offline_s: f64,
}

impl Default for ChurnCfg {
    fn default() -> Self {
        ChurnCfg {
            enabled: false,
            session_dist: "exp".into(),
            mean_session_s: 3600.0,
            session_sigma: 1.0,
            mean_offline_s: 600.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemandCfg {
    /// Poisson arrivals over all clients, per second.
    pub requests_per_s: f64,
    /// Prompt and output lengths: lognormal with these means (tokens) and σ.
    pub prompt_mean: f64,
    pub prompt_sigma: f64,
    pub output_mean: f64,
    pub output_sigma: f64,
    /// Upper bound of either length.
    pub max_tokens: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GossipCfg {
    pub d: u32,
    pub d_lo: u32,
    pub d_hi: u32,
    pub heartbeat_ms: f64,
    /// Peers a publisher outside the mesh sends to.
    pub fanout: u32,
    /// Validation time per hop (announcement verification), in µs.
    pub validate_us: f64,
    /// Compute the full propagation of every n-th announcement.
    pub sample_every: u32,
}

impl Default for GossipCfg {
    fn default() -> Self {
        GossipCfg {
            d: 6,
            d_lo: 4,
            d_hi: 12,
            heartbeat_ms: 1000.0,
            fanout: 6,
            validate_us: 60.0,
            sample_every: 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdversaryCfg {
    /// Shares of workers that return wrong results, stall, or vanish mid-session.
    pub wrong_share: f64,
    pub stall_share: f64,
    pub vanish_share: f64,
    /// Probability a vanisher drops out during any one request it serves.
    #[serde(default = "default_vanish_p")]
    pub vanish_per_request: f64,
}

fn default_vanish_p() -> f64 {
    0.3
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCfg {
    /// Probability a client spot-checks one hop's output of a request.
    pub spot_check: f64,
    pub max_hops: usize,
    pub max_replans: u32,
    pub stall_timeout_ms: u64,
    /// Price cap per completion token per hop, nanoton (none if absent).
    pub price_cap: Option<u64>,
    /// Providers returned per looked-up block (Kademlia's k).
    pub providers_per_block: usize,
    /// Blocks looked up per request: every `lookup_stride`-th block.
    pub lookup_stride: u32,
    /// The client's own compute per token, ms: embedding, final norm, LM head and
    /// sampling stay on the client (the threat model), once per generated token.
    #[serde(default)]
    pub head_ms_per_token: f64,
    /// What opening one hop's session costs beyond its two round trips (stream
    /// negotiation, then the Noise IK message and the worker's reply), ms: the
    /// handshake's key agreement and the worker allocating the session's KV cache. The
    /// client opens the hops of a route one after another, as cocoon's client does.
    #[serde(default)]
    pub open_ms_per_hop: f64,
}

impl Default for ClientCfg {
    fn default() -> Self {
        ClientCfg {
            spot_check: 0.2,
            max_hops: 6,
            max_replans: 3,
            stall_timeout_ms: 5_000,
            price_cap: None,
            providers_per_block: 20,
            lookup_stride: 5,
            head_ms_per_token: 0.0,
            open_ms_per_hop: 0.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsCfg {
    /// The worker serves at most this much (nanoton) ahead of payment.
    pub credit_window: u64,
    /// The client signs a new state once it owes this much.
    pub pay_threshold: u64,
    /// Client deposit per channel, nanoton.
    pub deposit: u64,
}

impl Default for PaymentsCfg {
    fn default() -> Self {
        PaymentsCfg {
            credit_window: 2_000_000,
            pay_threshold: 500_000,
            deposit: 1_000_000_000_000,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scenario {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text)?;
        s.check()?;
        Ok(s)
    }

    /// The scenario with `name` (a dotted path such as `demand.requests_per_s`) set to
    /// `value` (a TOML value: `4`, `0.5`, `"exp"`, `true`).
    pub fn with_param(&self, name: &str, value: &str) -> anyhow::Result<Scenario> {
        let mut doc = toml::Value::try_from(self)?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let mut slot = &mut doc;
        for part in name.split('.') {
            let table = slot
                .as_table_mut()
                .with_context(|| format!("parameter {name:?}: {part:?} is not inside a table"))?;
            slot = table
                .get_mut(part)
                .with_context(|| format!("parameter {name:?}: no field {part:?}"))?;
        }
        let same_kind = std::mem::discriminant(slot) == std::mem::discriminant(&parsed)
            || matches!(
                (&*slot, &parsed),
                (toml::Value::Float(_), toml::Value::Integer(_))
            );
        if !same_kind {
            bail!(
                "parameter {name:?}: {value:?} is a {}, the field is a {}",
                parsed.type_str(),
                slot.type_str()
            );
        }
        *slot = match (&*slot, parsed) {
            (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (_, v) => v,
        };
        let s: Scenario = doc.try_into()?;
        s.check()?;
        Ok(s)
    }

    /// Refuses scenarios that cannot run, naming the field.
    pub fn check(&self) -> anyhow::Result<()> {
        let pos = |v: f64, what: &str| -> anyhow::Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("{what} must be a positive number, got {v}");
            }
            Ok(())
        };
        let share = |v: f64, what: &str| -> anyhow::Result<()> {
            if !(0.0..=1.0).contains(&v) {
                bail!("{what} must lie in [0, 1], got {v}");
            }
            Ok(())
        };
        pos(self.duration_s, "duration_s")?;
        pos(self.bin_s, "bin_s")?;
        if self.model.n_blocks == 0 {
            bail!("model.n_blocks must be at least 1");
        }
        if self.nodes.workers == 0 || self.nodes.clients == 0 {
            bail!("nodes: a scenario needs at least one worker and one client");
        }
        let w = &self.workers;
        if w.span_blocks == 0 || w.span_blocks > self.model.n_blocks {
            bail!(
                "workers.span_blocks must lie in 1..={}, got {}",
                self.model.n_blocks,
                w.span_blocks
            );
        }
        if w.tiers.is_empty() {
            bail!("workers.tiers must name at least one tier");
        }
        for t in &w.tiers {
            pos(t.block_tokens_per_s, "workers.tiers.block_tokens_per_s")?;
            if !(t.share.is_finite() && t.share >= 0.0) {
                bail!("workers.tiers.share must be non-negative");
            }
        }
        if w.tiers.iter().map(|t| t.share).sum::<f64>() <= 0.0 {
            bail!("workers.tiers: shares add up to zero");
        }
        for s in &w.spans {
            if s != "auto" {
                let r: cocoon_protocol::units::BlockRange = s
                    .parse()
                    .with_context(|| format!("workers.spans entry {s:?}"))?;
                if r.is_empty() || !r.fits_in(self.model.n_blocks) {
                    bail!("workers.spans entry {s:?} is empty or outside the model");
                }
            }
        }
        pos(w.prefill_factor, "workers.prefill_factor")?;
        pos(w.announce_interval_s, "workers.announce_interval_s")?;
        pos(w.announce_ttl_s, "workers.announce_ttl_s")?;
        if w.announce_ttl_s <= w.announce_interval_s || w.announce_ttl_s > 900.0 {
            bail!("workers.announce_ttl_s must exceed the interval and be at most 900 s");
        }
        let n = &self.network;
        let r = n.regions.len();
        if r == 0 || n.region_share.len() != r || n.rtt_ms.len() != r {
            bail!("network: regions, region_share and rtt_ms must have the same length");
        }
        for row in &n.rtt_ms {
            if row.len() != r || row.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                bail!("network.rtt_ms must be a {r}×{r} matrix of non-negative numbers");
            }
        }
        pos(n.bandwidth_mbps, "network.bandwidth_mbps")?;
        share(n.loss, "network.loss")?;
        share(n.nat_share, "network.nat_share")?;
        share(n.jitter, "network.jitter")?;
        if n.nat_share > 0.0 && self.nodes.relays == 0 {
            bail!("network.nat_share > 0 needs at least one relay");
        }
        if self.churn.enabled {
            pos(self.churn.mean_session_s, "churn.mean_session_s")?;
            pos(self.churn.mean_offline_s, "churn.mean_offline_s")?;
            if !matches!(self.churn.session_dist.as_str(), "exp" | "lognormal") {
                bail!("churn.session_dist must be \"exp\" or \"lognormal\"");
            }
        }
        match (&self.demand, self.requests.is_empty()) {
            (Some(d), true) => {
                pos(d.requests_per_s, "demand.requests_per_s")?;
                pos(d.prompt_mean, "demand.prompt_mean")?;
                pos(d.output_mean, "demand.output_mean")?;
                if d.max_tokens == 0 {
                    bail!("demand.max_tokens must be at least 1");
                }
            }
            (None, true) => bail!("a scenario needs [demand] or a list of [[requests]]"),
            (Some(_), false) => bail!("[demand] and [[requests]] exclude each other"),
            (None, false) => {}
        }
        for (i, r) in self.requests.iter().enumerate() {
            if !(r.at_s.is_finite() && r.at_s >= 0.0 && r.at_s < self.duration_s) {
                bail!("requests[{i}].at_s must lie in [0, duration_s)");
            }
            if r.client >= self.nodes.clients {
                bail!("requests[{i}].client {} is not a client index", r.client);
            }
            if r.prompt_tokens == 0 || r.output_tokens == 0 {
                bail!("requests[{i}]: prompt_tokens and output_tokens must be at least 1");
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            if f.worker >= self.nodes.workers {
                bail!("faults[{i}].worker {} is not a worker index", f.worker);
            }
            match (f.at_s, f.request, f.after_tokens) {
                (Some(t), None, None) if t.is_finite() && t >= 0.0 => {}
                (None, Some(r), Some(k)) => {
                    let Some(req) = self.requests.get(r as usize) else {
                        bail!("faults[{i}].request {r} is not in requests");
                    };
                    if k == 0 || k >= req.output_tokens {
                        bail!(
                            "faults[{i}].after_tokens must lie in 1..{}",
                            req.output_tokens
                        );
                    }
                }
                _ => bail!("faults[{i}] needs either at_s, or request and after_tokens"),
            }
        }
        for (i, name) in self.network.region_of.iter().enumerate() {
            if !self.network.regions.contains(name) {
                bail!("network.region_of[{i}] names no region: {name:?}");
            }
        }
        for (i, t) in self.workers.tier_of.iter().enumerate() {
            if !self.workers.tiers.iter().any(|x| &x.name == t) {
                bail!("workers.tier_of[{i}] names no tier: {t:?}");
            }
        }
        if !(self.client.head_ms_per_token.is_finite() && self.client.head_ms_per_token >= 0.0) {
            bail!("client.head_ms_per_token must be a non-negative number");
        }
        if !(self.client.open_ms_per_hop.is_finite() && self.client.open_ms_per_hop >= 0.0) {
            bail!("client.open_ms_per_hop must be a non-negative number");
        }
        let g = &self.gossip;
        if !(g.d_lo <= g.d && g.d <= g.d_hi && g.d > 0) {
            bail!("gossip: need 0 < d_lo <= d <= d_hi");
        }
        pos(g.heartbeat_ms, "gossip.heartbeat_ms")?;
        if g.sample_every == 0 {
            bail!("gossip.sample_every must be at least 1");
        }
        let a = &self.adversary;
        share(a.wrong_share, "adversary.wrong_share")?;
        share(a.stall_share, "adversary.stall_share")?;
        share(a.vanish_share, "adversary.vanish_share")?;
        share(a.vanish_per_request, "adversary.vanish_per_request")?;
        if a.wrong_share + a.stall_share + a.vanish_share > 1.0 {
            bail!("adversary shares add up to more than 1");
        }
        let c = &self.client;
        share(c.spot_check, "client.spot_check")?;
        if c.max_hops == 0 || c.providers_per_block == 0 || c.lookup_stride == 0 {
            bail!("client.max_hops, providers_per_block and lookup_stride must be at least 1");
        }
        if self.payments.pay_threshold > self.payments.credit_window {
            bail!("payments.pay_threshold must not exceed payments.credit_window");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = include_str!("../scenarios/tiny.toml");

    #[test]
    fn params_override_and_type_check() {
        let s = Scenario::parse(TINY).expect("tiny parses");
        let t = s.with_param("demand.requests_per_s", "3").expect("set");
        assert_eq!(t.demand.as_ref().map(|d| d.requests_per_s), Some(3.0));
        assert!(s.with_param("demand.nope", "3").is_err());
        assert!(s.with_param("demand.requests_per_s", "\"x\"").is_err());
        assert!(s.with_param("adversary.wrong_share", "2.0").is_err());
    }

    #[test]
    fn bad_files_are_errors_naming_the_field() {
        let bad = TINY.replace("duration_s = ", "duration_s = -");
        let err = Scenario::parse(&bad).expect_err("negative");
        assert!(format!("{err:#}").contains("duration_s"), "{err:#}");
        let unknown = format!("{TINY}\nbogus = 1\n");
        assert!(Scenario::parse(&unknown).is_err());
    }
}

//! What a run records (one row per request, per time bin, per sampled announcement
//! propagation, per worker) and how it is written: CSV files with fixed number formats
//! and `summary.json`, so the same seed gives the same bytes.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Completed with a wrong result no spot-check caught.
    Wrong,
    /// No route, or failover gave up.
    Failed,
    /// Still generating when the run ended.
    Unfinished,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Wrong => "wrong",
            Outcome::Failed => "failed",
            Outcome::Unfinished => "unfinished",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestRow {
    pub id: u32,
    pub client: u32,
    pub arrival_s: f64,
    pub outcome: Outcome,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub served_tokens: u64,
    pub hops: usize,
    pub failovers: u32,
    pub ttft_ms: f64,
    pub per_token_ms: f64,
    pub total_ms: f64,
}

#[derive(Clone, Debug, Default)]
pub struct BinRow {
    pub t_s: f64,
    pub tokens: u64,
    pub completed: u64,
    pub failed: u64,
    pub failovers: u64,
    pub bans: u64,
    pub announcements: u64,
    pub online_workers: u64,
}

#[derive(Clone, Debug)]
pub struct PropagationRow {
    pub t_s: f64,
    pub origin: u32,
    pub reached: usize,
    pub unreached: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug)]
pub struct WorkerRow {
    pub worker: u32,
    pub tier: String,
    pub adversary: &'static str,
    pub region: String,
    pub nat: bool,
    pub blocks: String,
    pub segments: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub faults: u64,
    pub online_fraction: f64,
    pub earned_nanoton: u128,
}

/// One hop of a route: the worker (index in the order of `workers.spans`) and the
/// blocks it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HopRecord {
    pub worker: u32,
    pub blocks: String,
}

/// A failed hop and the hops that replaced it.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverRecord {
    pub worker: u32,
    pub blocks: String,
    pub fault: &'static str,
    /// Tokens the client had received when the fault was noticed.
    pub at_token: u64,
    pub replaced_by: Vec<HopRecord>,
}

/// The routes of one request of a fixed list (`routes.json`).
#[derive(Clone, Debug, Serialize)]
pub struct RouteRecord {
    /// Index in the scenario's `requests`.
    pub request: u32,
    pub planned: Vec<HopRecord>,
    pub failovers: Vec<FailoverRecord>,
    #[serde(rename = "final")]
    pub final_route: Vec<HopRecord>,
    pub served_tokens: u64,
    pub ttft_ms: f64,
    pub per_token_ms: f64,
    pub total_ms: f64,
}

/// Everything recorded during a run.
#[derive(Default)]
pub struct Recorder {
    pub requests: Vec<RequestRow>,
    /// Routes and failovers per request, for scenarios with a fixed request list.
    pub routes: Vec<RouteRecord>,
    pub bins: Vec<BinRow>,
    pub propagation: Vec<PropagationRow>,
    pub workers: Vec<WorkerRow>,
}

impl Recorder {
    /// The bin holding simulated time `t_us`, created on demand.
    pub fn bin(&mut self, t_us: u64, bin_s: f64) -> &mut BinRow {
        let i = (t_us as f64 / 1e6 / bin_s) as usize;
        while self.bins.len() <= i {
            let t_s = self.bins.len() as f64 * bin_s;
            self.bins.push(BinRow {
                t_s,
                ..BinRow::default()
            });
        }
        &mut self.bins[i]
    }

    /// Writes `requests.csv`, `timeseries.csv`, `propagation.csv` and `workers.csv`.
    pub fn write_csvs(&self, dir: &Path, bin_s: f64) -> anyhow::Result<()> {
        let mut s = String::from(
            "id,client,arrival_s,outcome,prompt_tokens,output_tokens,served_tokens,hops,failovers,ttft_ms,per_token_ms,total_ms\n",
        );
        for r in &self.requests {
            writeln!(
                s,
                "{},{},{:.6},{},{},{},{},{},{},{:.3},{:.3},{:.3}",
                r.id,
                r.client,
                r.arrival_s,
                r.outcome.as_str(),
                r.prompt_tokens,
                r.output_tokens,
                r.served_tokens,
                r.hops,
                r.failovers,
                r.ttft_ms,
                r.per_token_ms,
                r.total_ms
            )?;
        }
        write(dir, "requests.csv", &s)?;

        let mut s = String::from(
            "t_s,tokens_per_s,completed,failed,failovers,bans,announcements,online_workers\n",
        );
        for b in &self.bins {
            writeln!(
                s,
                "{:.1},{:.3},{},{},{},{},{},{}",
                b.t_s,
                b.tokens as f64 / bin_s,
                b.completed,
                b.failed,
                b.failovers,
                b.bans,
                b.announcements,
                b.online_workers
            )?;
        }
        write(dir, "timeseries.csv", &s)?;

        let mut s = String::from("t_s,origin,reached,unreached,p50_ms,p90_ms,p99_ms,max_ms\n");
        for p in &self.propagation {
            writeln!(
                s,
                "{:.3},{},{},{},{:.3},{:.3},{:.3},{:.3}",
                p.t_s, p.origin, p.reached, p.unreached, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            )?;
        }
        write(dir, "propagation.csv", &s)?;

        let mut s = String::from(
            "worker,tier,adversary,region,nat,blocks,segments,prompt_tokens,completion_tokens,faults,online_fraction,earned_nanoton\n",
        );
        for w in &self.workers {
            writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{:.4},{}",
                w.worker,
                w.tier,
                w.adversary,
                w.region,
                w.nat,
                w.blocks,
                w.segments,
                w.prompt_tokens,
                w.completion_tokens,
                w.faults,
                w.online_fraction,
                w.earned_nanoton
            )?;
        }
        write(dir, "workers.csv", &s)?;
        Ok(())
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// One point of a sweep.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    pub value: String,
    pub summary: Summary,
}

/// The headline figures of a run, written as `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub nodes: u64,
    pub workers: u64,
    pub clients: u64,
    pub relays: u64,
    pub simulated_seconds: f64,
    /// Wall-clock seconds of the simulation loop (not deterministic; see `timing`).
    pub wall_seconds: f64,
    pub planner: &'static str,
    pub requests: RequestSummary,
    pub tokens: TokenSummary,
    pub latency_ms: LatencySummary,
    pub failover: FailoverSummary,
    pub adversary: AdversarySummary,
    pub announcements: AnnouncementSummary,
    pub payments: PaymentSummary,
    pub earnings: EarningsSummary,
    /// Wall-clock measurements: the only part that differs between runs of one seed.
    pub timing: Timing,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct RequestSummary {
    pub arrived: u64,
    pub ok: u64,
    pub wrong: u64,
    pub failed: u64,
    /// Still running at the end; their missing tokens count as failed tokens.
    pub unfinished: u64,
    pub no_route: u64,
    /// Plans that needed sub-spans of announced spans (`allow_partial`).
    pub partial_plans: u64,
    pub success_rate: f64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct TokenSummary {
    pub requested: u64,
    pub served: u64,
    pub failed: u64,
    pub mean_tokens_per_s: f64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct LatencySummary {
    pub ttft_p50: f64,
    pub ttft_p99: f64,
    pub per_token_p50: f64,
    pub per_token_p99: f64,
    pub total_p50: f64,
    pub total_p99: f64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct FailoverSummary {
    pub failovers: u64,
    pub by_fault: FaultCounts,
    pub bans: u64,
    pub credit_refusals: u64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct FaultCounts {
    pub disconnected: u64,
    pub stalled: u64,
    pub wrong_result: u64,
    pub refused: u64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct AdversarySummary {
    pub wrong_workers: u64,
    pub stall_workers: u64,
    pub vanish_workers: u64,
    pub spot_check: f64,
    /// Segments computed through a wrong-result worker, and how many a spot-check caught.
    pub wrong_segments: u64,
    pub wrong_detected: u64,
    pub detection_rate: f64,
    /// Segments a client routed through a peer it had banned (should stay 0).
    pub routed_through_banned: u64,
    /// Share of segments through adversaries, in the first and the last quarter of the run.
    pub adversary_segment_share_first_quarter: f64,
    pub adversary_segment_share_last_quarter: f64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct AnnouncementSummary {
    pub signed: u64,
    pub verified: u64,
    pub rejected: u64,
    pub propagation_samples: u64,
    pub propagation_p50_ms: f64,
    pub propagation_p99_ms: f64,
    pub coverage: f64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct PaymentSummary {
    pub channels: u64,
    pub signed_states: u64,
    pub paid_by_clients_nanoton: u128,
    pub earned_by_workers_nanoton: u128,
    pub owed_for_served_nanoton: u128,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct EarningsSummary {
    pub workers_earning: u64,
    pub gini: f64,
    pub top_decile_share: f64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Timing {
    pub wall_seconds: f64,
    pub events: u64,
    pub events_per_wall_second: f64,
    pub node_seconds_per_wall_second: f64,
    pub peak_rss_bytes: u64,
    pub rss_per_node_bytes: f64,
}

/// The Gini coefficient of non-negative values (0 = equal).
pub fn gini(values: &[f64]) -> f64 {
    let n = values.len();
    let total: f64 = values.iter().sum();
    if n == 0 || total <= 0.0 {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let weighted: f64 = v
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * (i as f64 + 1.0) - n as f64 - 1.0) * x)
        .sum();
    weighted / (n as f64 * total)
}

/// Peak resident memory of this process (Linux `VmHWM`), bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_of_equal_and_concentrated() {
        assert!(gini(&[1.0, 1.0, 1.0, 1.0]).abs() < 1e-12);
        assert!((gini(&[0.0, 0.0, 0.0, 4.0]) - 0.75).abs() < 1e-12);
        assert_eq!(gini(&[]), 0.0);
    }
}

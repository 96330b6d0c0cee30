//! Parameter sweeps: the scenario run once per value of one dotted parameter, each run
//! in its own sub-folder, the headline metrics gathered into `sweep.csv` and plotted
//! against the parameter.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::metrics;
pub use crate::metrics::SweepPoint;
use crate::run::{RunOptions, run_to_dir};
use crate::scenario::Scenario;

/// Runs `sc` with `name` set to each of `values`; writes `out/<name>=<value>/` per run,
/// `out/sweep.csv` and the sweep plots.
pub fn sweep(
    sc: &Scenario,
    seed: u64,
    name: &str,
    values: &[&str],
    out: &Path,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Vec<SweepPoint>> {
    if values.is_empty() || values.iter().any(|v| v.is_empty()) {
        anyhow::bail!("--param {name}: give at least one non-empty value");
    }
    // Check every value before running any.
    let scenarios: Vec<Scenario> = values
        .iter()
        .map(|v| sc.with_param(name, v))
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut points = Vec::new();
    for (i, (v, s)) in values.iter().zip(&scenarios).enumerate() {
        progress(i, values.len());
        let dir = out.join(format!("{name}={v}"));
        let summary = run_to_dir(s, seed, &dir, RunOptions { plots: false }, |_, _| {})?;
        points.push(SweepPoint {
            value: (*v).to_owned(),
            summary,
        });
    }
    progress(values.len(), values.len());
    let mut csv = format!(
        "{name},success_rate,per_token_p50_ms,per_token_p99_ms,ttft_p50_ms,total_p99_ms,tokens_per_s,failovers,bans,earnings_gini\n"
    );
    for p in &points {
        let s = &p.summary;
        writeln!(
            csv,
            "{},{:.5},{:.3},{:.3},{:.3},{:.3},{:.3},{},{},{:.4}",
            p.value,
            s.requests.success_rate,
            s.latency_ms.per_token_p50,
            s.latency_ms.per_token_p99,
            s.latency_ms.ttft_p50,
            s.latency_ms.total_p99,
            s.tokens.mean_tokens_per_s,
            s.failover.failovers,
            s.failover.bans,
            s.earnings.gini
        )?;
    }
    metrics::write(out, "sweep.csv", &csv)?;
    crate::plots::draw_sweep(name, &points, out)?;
    Ok(points)
}

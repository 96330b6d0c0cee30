//! One run of a scenario from start to files: simulate, summarise, write the CSVs,
//! `summary.json` and the plots into the output folder.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::metrics::{self, *};
use crate::planner::PLANNER;
use crate::scenario::Scenario;
use crate::sim::{Sim, p50_p99};
use crate::world::{Adversary, Kind};

/// What to write besides the CSVs and the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    pub plots: bool,
}

/// Simulates `sc` with `seed`; `progress(simulated_us, end_us)` is called at every bin.
pub fn simulate(
    sc: &Scenario,
    seed: u64,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<(Sim, Summary)> {
    let started = Instant::now();
    let mut sim = Sim::new(sc.clone(), seed)?;
    let end = sim.end_us();
    sim.run(|now| progress(now, end))?;
    let wall = started.elapsed().as_secs_f64();
    let summary = summarise(&mut sim, seed, wall)?;
    Ok((sim, summary))
}

/// Runs `sc` and writes everything into `out`.
pub fn run_to_dir(
    sc: &Scenario,
    seed: u64,
    out: &Path,
    opts: RunOptions,
    progress: impl FnMut(u64, u64),
) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (sim, summary) = simulate(sc, seed, progress)?;
    sim.rec.write_csvs(out, sc.bin_s)?;
    let json = serde_json::to_string_pretty(&summary)? + "\n";
    metrics::write(out, "summary.json", &json)?;
    if !sc.requests.is_empty() {
        let routes = serde_json::to_string_pretty(&sim.rec.routes)? + "\n";
        metrics::write(out, "routes.json", &routes)?;
    }
    if opts.plots {
        crate::plots::draw_all(&sim.rec, sc, out)?;
    }
    Ok(summary)
}

fn summarise(sim: &mut Sim, seed: u64, wall: f64) -> anyhow::Result<Summary> {
    let c = &sim.counters;
    let sc = &sim.sc;
    let nodes = sim.world.nodes.len() as u64;
    let (ttft, per, total) = sim.latencies();
    let (ttft_p50, ttft_p99) = p50_p99(&ttft);
    let (per_token_p50, per_token_p99) = p50_p99(&per);
    let (total_p50, total_p99) = p50_p99(&total);
    let pay = sim.channels.totals()?;
    let earnings = sim.channels.earnings_by_worker();
    // Worker rows.
    for &w in &sim.world.workers {
        let node = &sim.world.nodes[w as usize];
        let wk = node.worker();
        sim.rec.workers.push(WorkerRow {
            worker: w,
            tier: sc.workers.tiers[wk.tier as usize].name.clone(),
            adversary: wk.adversary.as_str(),
            region: sc.network.regions[node.place.region as usize].clone(),
            nat: node.place.nat,
            blocks: wk.blocks.to_string(),
            segments: wk.segments,
            prompt_tokens: wk.prompt_tokens,
            completion_tokens: wk.completion_tokens,
            faults: wk.faults,
            online_fraction: wk.online_us as f64 / sim.end_us().max(1) as f64,
            earned_nanoton: earnings.get(&w).copied().unwrap_or(0),
        });
    }
    let honest_earnings: Vec<f64> = sim
        .rec
        .workers
        .iter()
        .map(|w| w.earned_nanoton as f64)
        .collect();
    let mut sorted = honest_earnings.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total_earned: f64 = sorted.iter().sum();
    let top = sorted.len().div_ceil(10);
    let top_share = if total_earned > 0.0 {
        sorted[..top].iter().sum::<f64>() / total_earned
    } else {
        0.0
    };
    let mut prop_p50: Vec<f64> = sim.rec.propagation.iter().map(|p| p.p50_ms).collect();
    let mut prop_p99: Vec<f64> = sim.rec.propagation.iter().map(|p| p.p99_ms).collect();
    prop_p50.sort_by(f64::total_cmp);
    prop_p99.sort_by(f64::total_cmp);
    let reached: usize = sim.rec.propagation.iter().map(|p| p.reached).sum();
    let unreached: usize = sim.rec.propagation.iter().map(|p| p.unreached).sum();
    let count = |a: Adversary| {
        sim.world
            .workers
            .iter()
            .filter(|&&w| sim.world.nodes[w as usize].worker().adversary == a)
            .count() as u64
    };
    let share = |q: usize| {
        if c.quarter_segments[q] == 0 {
            0.0
        } else {
            c.quarter_adversary_segments[q] as f64 / c.quarter_segments[q] as f64
        }
    };
    let simulated = sc.duration_s;
    let rss = metrics::peak_rss_bytes();
    Ok(Summary {
        scenario: sc.name.clone(),
        seed,
        nodes,
        workers: sim.kind_count(Kind::Worker),
        clients: sim.kind_count(Kind::Client),
        relays: sim.kind_count(Kind::Relay),
        simulated_seconds: simulated,
        wall_seconds: wall,
        planner: PLANNER,
        requests: RequestSummary {
            arrived: c.arrived,
            ok: c.ok,
            wrong: c.wrong,
            failed: c.failed,
            unfinished: c.unfinished,
            no_route: c.no_route,
            partial_plans: c.partial_plans,
            success_rate: if c.arrived > 0 {
                c.ok as f64 / c.arrived as f64
            } else {
                0.0
            },
        },
        tokens: TokenSummary {
            requested: c.tokens_requested,
            served: c.tokens_served,
            failed: c.tokens_failed,
            mean_tokens_per_s: c.tokens_served as f64 / simulated,
        },
        latency_ms: LatencySummary {
            ttft_p50,
            ttft_p99,
            per_token_p50,
            per_token_p99,
            total_p50,
            total_p99,
        },
        failover: FailoverSummary {
            failovers: c.failovers,
            by_fault: FaultCounts {
                disconnected: c.faults[0],
                stalled: c.faults[1],
                wrong_result: c.faults[2],
                refused: c.faults[3],
            },
            bans: c.bans,
            credit_refusals: c.credit_refusals,
        },
        adversary: AdversarySummary {
            wrong_workers: count(Adversary::Wrong),
            stall_workers: count(Adversary::Stall),
            vanish_workers: count(Adversary::Vanish),
            spot_check: sc.client.spot_check,
            wrong_segments: c.wrong_segments,
            wrong_detected: c.wrong_detected,
            detection_rate: if c.wrong_segments > 0 {
                c.wrong_detected as f64 / c.wrong_segments as f64
            } else {
                0.0
            },
            routed_through_banned: c.routed_through_banned,
            adversary_segment_share_first_quarter: share(0),
            adversary_segment_share_last_quarter: share(3),
        },
        announcements: AnnouncementSummary {
            signed: c.ann_signed,
            verified: c.ann_verified,
            rejected: c.ann_rejected,
            propagation_samples: sim.rec.propagation.len() as u64,
            propagation_p50_ms: crate::gossip::quantile(&prop_p50, 0.5),
            propagation_p99_ms: crate::gossip::quantile(&prop_p99, 0.5),
            coverage: if reached + unreached > 0 {
                reached as f64 / (reached + unreached) as f64
            } else {
                0.0
            },
        },
        payments: PaymentSummary {
            channels: pay.channels,
            signed_states: pay.states,
            paid_by_clients_nanoton: pay.paid_by_clients,
            earned_by_workers_nanoton: pay.earned_by_workers,
            owed_for_served_nanoton: pay.owed_for_served,
        },
        earnings: EarningsSummary {
            workers_earning: honest_earnings.iter().filter(|&&e| e > 0.0).count() as u64,
            gini: metrics::gini(&honest_earnings),
            top_decile_share: top_share,
        },
        timing: Timing {
            wall_seconds: wall,
            events: c.events,
            events_per_wall_second: c.events as f64 / wall.max(1e-9),
            node_seconds_per_wall_second: nodes as f64 * simulated / wall.max(1e-9),
            peak_rss_bytes: rss,
            rss_per_node_bytes: rss as f64 / nodes.max(1) as f64,
        },
    })
}

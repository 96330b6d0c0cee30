//! How the simulator scales: the 10k-node scenario (one simulated hour) scaled to other
//! sizes, each size in a fresh child process so its peak memory is its own. Prints wall
//! seconds, CPU seconds of the simulating thread, node-seconds simulated per wall and per
//! CPU second, peak RSS and RSS per node, with ratios against the smallest size run.
//!
//! `cargo bench -p cocoon-sim --bench scale` (1k and 10k), or name the sizes:
//! `cargo bench -p cocoon-sim --bench scale -- 1000 10000 100000`. Sizes scale relays,
//! workers, clients and the request rate in proportion; `COCOON_SIM_BENCH_SECONDS`
//! shortens the simulated time (default 3600).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cocoon_sim::metrics::peak_rss_bytes;
use cocoon_sim::run::simulate;
use cocoon_sim::scenario::Scenario;

const CHILD: &str = "COCOON_SIM_BENCH_CHILD";

fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn scaled(nodes: u64, seconds: &str) -> anyhow::Result<Scenario> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/mesh-10k.toml");
    let base = Scenario::load(&path)?;
    let rate = base
        .demand
        .as_ref()
        .map(|d| d.requests_per_s)
        .ok_or_else(|| anyhow::anyhow!("mesh-10k has random demand"))?;
    let f = nodes as f64 / 10_000.0;
    let n = |x: u32| ((f64::from(x) * f).round() as u64).max(1).to_string();
    base.with_param("nodes.relays", &n(base.nodes.relays))?
        .with_param("nodes.workers", &n(base.nodes.workers))?
        .with_param("nodes.clients", &n(base.nodes.clients))?
        .with_param("demand.requests_per_s", &format!("{}", rate * f))?
        .with_param("duration_s", seconds)
}

fn child(nodes: u64) -> anyhow::Result<()> {
    let seconds = std::env::var("COCOON_SIM_BENCH_SECONDS").unwrap_or_else(|_| "3600".into());
    let sc = scaled(nodes, &seconds)?;
    let cpu0 = thread_cpu_s();
    let t0 = Instant::now();
    let (_, s) = simulate(&sc, sc.seed, |_, _| {})?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_s() - cpu0;
    let rss = peak_rss_bytes();
    println!(
        "{} {} {:.3} {:.3} {} {} {}",
        s.nodes, s.simulated_seconds, wall, cpu, rss, s.timing.events, s.requests.arrived
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if let Ok(n) = std::env::var(CHILD) {
        return child(n.parse()?);
    }
    let mut sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    // Under `cargo test` (no `--bench` argument) a one-minute 1k run is a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching && std::env::var_os("COCOON_SIM_BENCH_SECONDS").is_none() {
        // SAFETY: set before any thread is spawned; children inherit it.
        unsafe { std::env::set_var("COCOON_SIM_BENCH_SECONDS", "60") };
    }
    if sizes.is_empty() {
        sizes = if benching {
            vec![1_000, 10_000]
        } else {
            vec![1_000]
        };
    }
    let exe = std::env::current_exe()?;
    println!(
        "{:>7} {:>6} {:>8} {:>8} {:>14} {:>14} {:>9} {:>10} {:>9} {:>8}",
        "nodes",
        "sim_s",
        "wall_s",
        "cpu_s",
        "node·s/wall·s",
        "node·s/cpu·s",
        "peak_MB",
        "KB/node",
        "events",
        "vs first"
    );
    let mut first: Option<f64> = None;
    for n in sizes {
        let out = Command::new(&exe).env(CHILD, n.to_string()).output()?;
        if !out.status.success() {
            anyhow::bail!("size {n} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        let [nodes, sim_s, wall, cpu, rss, events, _req] = f[..] else {
            anyhow::bail!("size {n}: unexpected child output {line:?}");
        };
        let rate_cpu = nodes * sim_s / cpu.max(1e-9);
        let base = *first.get_or_insert(rate_cpu);
        println!(
            "{:>7} {:>6} {:>8.2} {:>8.2} {:>14.0} {:>14.0} {:>9.0} {:>10.1} {:>9} {:>7.2}x",
            nodes,
            sim_s,
            wall,
            cpu,
            nodes * sim_s / wall.max(1e-9),
            rate_cpu,
            rss / 1e6,
            rss / nodes / 1e3,
            events,
            rate_cpu / base
        );
    }
    Ok(())
}

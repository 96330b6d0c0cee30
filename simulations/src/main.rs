//! The `cocoon-sim` binary: `run` a scenario into a folder of CSVs, `summary.json` and
//! plots, or `sweep` one parameter over several values and plot headline metrics
//! against it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cocoon_sim::run::{RunOptions, run_to_dir};
use cocoon_sim::scenario::Scenario;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "cocoon-sim",
    version,
    about = "Deterministic discrete-event simulator of the cocoon mesh"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate one scenario.
    Run {
        /// Scenario TOML file.
        scenario: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Skip the plots.
        #[arg(long)]
        no_plots: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Simulate a scenario once per value of one parameter.
    Sweep {
        scenario: PathBuf,
        /// NAME=V1,V2,... with NAME a dotted field (e.g. demand.requests_per_s=0.5,1,2).
        #[arg(long)]
        param: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        quiet: bool,
    },
}

fn bar(quiet: bool, label: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(1000);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}% simulated, {elapsed} wall")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(label);
    pb
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            scenario,
            out,
            seed,
            no_plots,
            quiet,
        } => {
            let sc = Scenario::load(&scenario)?;
            let seed = seed.unwrap_or(sc.seed);
            let pb = bar(quiet, sc.name.clone());
            let summary = run_to_dir(
                &sc,
                seed,
                &out,
                RunOptions { plots: !no_plots },
                |now, end| pb.set_position(now * 1000 / end.max(1)),
            )?;
            pb.finish_and_clear();
            println!(
                "{}: {} nodes, {:.0} s simulated in {:.2} s wall; {} requests, {:.1} % ok, per-token p50 {:.1} ms; wrote {}",
                summary.scenario,
                summary.nodes,
                summary.simulated_seconds,
                summary.wall_seconds,
                summary.requests.arrived,
                summary.requests.success_rate * 100.0,
                summary.latency_ms.per_token_p50,
                out.display()
            );
        }
        Cmd::Sweep {
            scenario,
            param,
            out,
            seed,
            quiet,
        } => {
            let sc = Scenario::load(&scenario)?;
            let seed = seed.unwrap_or(sc.seed);
            let (name, values) = param
                .split_once('=')
                .context("--param must look like NAME=V1,V2,...")?;
            let values: Vec<&str> = values.split(',').map(str::trim).collect();
            let pb = bar(quiet, format!("sweep {name}"));
            cocoon_sim::sweep::sweep(&sc, seed, name, &values, &out, |i, n| {
                pb.set_position((i * 1000 / n.max(1)) as u64)
            })?;
            pb.finish_and_clear();
            println!(
                "sweep of {name} over {} values written to {}",
                values.len(),
                out.display()
            );
        }
    }
    Ok(())
}

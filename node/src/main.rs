//! `cocoon`: one binary for every role of the mesh, and the CLI that inspects it.

mod cmd;
mod default_model;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cocoon", version, about = "Private, paid AI inference on a peer-to-peer mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a model on this machine.
    Run(cmd::run::RunArgs),
    /// Fetch or describe models.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => cmd::run::main(args),
        Command::Model(command) => cmd::model::main(command),
    }
}

//! `cocoon`: one binary for every role of the mesh, and the CLI that inspects it.
//! This file only parses the command line and dispatches to the modules below.

mod cli;
mod cmd;
mod config;
mod control;
mod daemon;
mod default_model;
mod devnet;
mod infer;
mod keys;
mod model_info;
mod openai;
mod pay;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cocoon",
    version,
    about = "A peer-to-peer mesh for private, paid AI inference"
)]
struct Cli {
    /// The node's data directory [default: $XDG_DATA_HOME/cocoon or ~/.local/share/cocoon].
    #[arg(long, global = true, env = "COCOON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// `Node` carries every daemon flag; the value is parsed once, so its size is harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a mesh node (the daemon).
    Node(cli::node::NodeArgs),
    /// Print this node's peer id.
    Id(JsonFlag),
    /// Show the node's status.
    Status(JsonFlag),
    /// List known peers.
    Peers(JsonFlag),
    /// Show one peer and its last announcement.
    Peer {
        /// Peer id.
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Ping a peer over the mesh.
    Ping {
        /// Peer id.
        id: String,
        /// Number of pings.
        #[arg(short = 'c', long, default_value_t = 3)]
        count: u32,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Models on the mesh and which blocks are covered, by whom.
    Models(JsonFlag),
    /// Coverage of a model's blocks and the best chains of workers for it.
    Routes {
        /// Model id (64 hex digits) [default: the node's model].
        model: Option<String>,
        /// How many chains to show.
        #[arg(short, long, default_value_t = 3)]
        k: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Generate text over the mesh through a running client node.
    Generate(cmd::generate::GenerateArgs),
    /// Chat over the mesh through a running client node (one line per turn).
    Chat(cmd::generate::ChatArgs),
    /// Start a bootstrap/relay and N nodes on loopback (data in --data-dir).
    Devnet(devnet::DevnetArgs),
    /// Generate text from a model on this machine.
    Run(cmd::run::RunArgs),
    /// Fetch or describe models.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Run a local TON chain (the real contracts in an embedded TVM) on 127.0.0.1.
    TonLocal(cmd::ton::TonLocalArgs),
    /// This node's TON wallet: address and balance.
    Wallet(cmd::ton::WalletArgs),
    /// This node's payment channels: peer, address, deposit, sent, received, seqno, state.
    Channels(JsonFlag),
    /// Open or close a payment channel.
    #[command(subcommand)]
    Channel(cli::channels::ChannelCommand),
}

#[derive(clap::Args)]
struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn init_logging(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, true) => "info",
        (0, false) => "warn",
        (1, _) => "info,cocoon=debug,cocoon_protocol=debug",
        _ => "debug,cocoon=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    match cli.command {
        Command::Node(args) => {
            init_logging(cli.verbose, true);
            let config = args.resolve()?;
            runtime()?.block_on(daemon::run(daemon::DaemonArgs {
                data_dir,
                config,
                dev_forge: args.dev_forge,
                dev_misbehave: args.dev_misbehave,
                dev_announce_blocks: args.dev_announce_blocks.clone(),
                dev_tap: args.dev_tap.clone(),
            }))
        }
        Command::Devnet(args) => {
            init_logging(cli.verbose, false);
            let dir = cli
                .data_dir
                .unwrap_or_else(|| std::env::temp_dir().join("cocoon-devnet"));
            runtime()?.block_on(devnet::run(&dir, &args))
        }
        Command::Id(j) => inspect(cli.verbose, || cli::id(&data_dir, j.json)),
        Command::Status(j) => inspect(cli.verbose, || cli::status(&data_dir, j.json)),
        Command::Peers(j) => inspect(cli.verbose, || cli::peers(&data_dir, j.json)),
        Command::Peer { id, json } => inspect(cli.verbose, || cli::peer(&data_dir, &id, json.json)),
        Command::Ping { id, count, json } => {
            inspect(cli.verbose, || cli::ping(&data_dir, &id, count, json.json))
        }
        Command::Models(j) => inspect(cli.verbose, || cli::models(&data_dir, j.json)),
        Command::Routes { model, k, json } => inspect(cli.verbose, || {
            cli::routes(&data_dir, model.as_deref(), k, json.json)
        }),
        Command::Generate(args) => {
            init_logging(cli.verbose, false);
            cmd::generate::generate(&data_dir, &args)
        }
        Command::Chat(args) => {
            init_logging(cli.verbose, false);
            cmd::generate::chat(&data_dir, &args)
        }
        Command::Run(args) => {
            init_logging(cli.verbose, false);
            cmd::run::main(args)
        }
        Command::Model(command) => {
            init_logging(cli.verbose, false);
            cmd::model::main(command)
        }
        Command::TonLocal(args) => {
            init_logging(cli.verbose, true);
            runtime()?.block_on(cmd::ton::ton_local(&data_dir, &args))
        }
        Command::Channels(j) => inspect(cli.verbose, || cli::channels::list(&data_dir, j.json)),
        Command::Channel(c) => inspect(cli.verbose, || cli::channels::run(&data_dir, &c)),
        Command::Wallet(args) => {
            init_logging(cli.verbose, false);
            runtime()?.block_on(cmd::ton::wallet(&data_dir, &args))
        }
    }
}

/// Runs an inspection command (CLI logging: warnings only unless -v).
fn inspect(verbose: u8, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    // Like other Unix tools, end quietly when the reader goes away (`cocoon peers | head`).
    // SAFETY: sets a signal disposition before any thread or output exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_logging(verbose, false);
    f()
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

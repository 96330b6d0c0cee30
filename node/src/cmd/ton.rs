//! `cocoon ton-local` (a local TON chain running the real contracts, for devnets) and
//! `cocoon wallet` (this node's TON wallet: address and balance).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use cocoon_ton::address::{friendly, raw};
use cocoon_ton::client::{ClientConfig, TonClient};
use cocoon_ton::local_chain::load_wallet_code;
use cocoon_ton::server::{DevnetWallet, ServerConfig, serve};
use cocoon_ton::wallet::{WalletV4, load_or_create_key};

/// Nanotons in one toncoin.
const NANO: u128 = 1_000_000_000;

/// Where `cocoon ton-local` listens by default.
const DEFAULT_TON_URL: &str = "http://127.0.0.1:8081/api/v2";

#[derive(Debug, Args)]
pub struct TonLocalArgs {
    /// Loopback address to serve the toncenter-v2 API subset on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Pre-funded devnet wallets to create (keys under DATA_DIR/ton-local/wallets).
    #[arg(long, default_value_t = 4)]
    pub wallets: usize,
    /// Toncoins minted to each devnet wallet when it is created.
    #[arg(long, default_value_t = 1000)]
    pub balance_ton: u64,
    /// Once serving, write the API's base URL to this file (useful with port 0).
    #[arg(long)]
    pub url_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WalletArgs {
    /// toncenter-v2 API base URL (a `cocoon ton-local`, testnet or mainnet) [default:
    /// the one the node at DATA_DIR runs with, else http://127.0.0.1:8081/api/v2].
    #[arg(long, env = "COCOON_TON_URL")]
    pub ton_url: Option<String>,
    /// toncenter API key, if the endpoint wants one.
    #[arg(long, env = "COCOON_TON_API_KEY", hide_env_values = true)]
    pub ton_api_key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The node's wallet key file (created with mode 0600 on first use).
pub fn wallet_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ton-wallet.key")
}

pub async fn ton_local(data_dir: &Path, args: &TonLocalArgs) -> Result<()> {
    let dir = data_dir.join("ton-local");
    std::fs::create_dir_all(dir.join("wallets"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let wallets = (0..args.wallets)
        .map(|i| DevnetWallet {
            name: format!("wallet-{i}"),
            key_file: dir.join("wallets").join(format!("wallet-{i}.key")),
            balance: u128::from(args.balance_ton) * NANO,
        })
        .collect();
    let server = serve(ServerConfig {
        listen: args.listen,
        db_path: dir.join("chain.redb"),
        start_time: None,
        wallets,
    })
    .await
    .context("starting the local TON chain")?;
    println!("local TON chain (the real wallet and channel code in an embedded TVM)");
    println!("  API     {}", server.url());
    println!("  state   {}", dir.join("chain.redb").display());
    for (name, addr) in &server.wallets {
        println!("  {name}  {}", friendly(addr, false));
    }
    println!("Ctrl-C stops it; the chain is kept for the next start.");
    if let Some(path) = &args.url_file {
        // Written whole under another name, then renamed: a reader never sees half a URL.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", server.url()))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = sigterm.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

/// The wallet a node with data dir `data_dir` uses (its key created if missing).
pub fn node_wallet(data_dir: &Path) -> Result<WalletV4> {
    let key_path = wallet_key_path(data_dir);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let key = load_or_create_key(&key_path)
        .with_context(|| format!("loading the wallet key {}", key_path.display()))?;
    let code = load_wallet_code().context("the wallet contract code (run scripts/setup)")?;
    Ok(WalletV4::new(code, key))
}

pub async fn wallet(data_dir: &Path, args: &WalletArgs) -> Result<()> {
    let url = match &args.ton_url {
        Some(u) => u.clone(),
        None => std::fs::read_to_string(data_dir.join(crate::config::files::TON_URL))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| DEFAULT_TON_URL.to_owned()),
    };
    let wallet = node_wallet(data_dir)?;
    let address = wallet.address().context("deriving the wallet address")?;
    let client = TonClient::new(ClientConfig {
        url: url.clone(),
        api_key: args.ton_api_key.clone(),
        timeout: Duration::from_secs(10),
    })?;
    let balance = client
        .get_address_balance(&address)
        .await
        .with_context(|| format!("asking {url} for the balance"))?;
    if args.json {
        let out = serde_json::json!({
            "address": friendly(&address, false),
            "raw_address": raw(&address),
            "balance_nanoton": balance.to_string(),
        });
        println!("{out}");
    } else {
        println!("address  {}", friendly(&address, false));
        println!("raw      {}", raw(&address));
        println!("balance  {}.{:09} TON", balance / NANO, balance % NANO);
    }
    Ok(())
}

//! `cocoon devnet`: a whole mesh on loopback. Starts a local TON chain (`cocoon
//! ton-local`, data in DIR/ton) and funds every node's wallet on it, then a
//! bootstrap/relay node and N worker nodes as separate processes (this same binary),
//! each with its own data dir under DIR and the chain's URL, waits until every node
//! sees every other, writes `DIR/devnet.json`, and stops them all on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::process::{Child, Command};

use crate::config::files;
use crate::control::api::ChannelRow;
use crate::control::api::{PeerInfo, RoutesInfo, StatusInfo};
use crate::control::client::ControlClient;

/// Starts a local mesh.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Workers that split the model's blocks between them.
    #[arg(long, visible_alias = "nodes", default_value_t = 3)]
    pub workers: u32,
    /// Extra workers, each holding one of the spans again (the middle one first), so a
    /// failed worker can be replaced.
    #[arg(long, default_value_t = 1)]
    pub spares: u32,
    /// The model workers load and the client serves: `default`, a GGUF path, or `none`
    /// (workers only announce the default model's id, nothing is loaded, no client).
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Blocks of the model, with `--model none`.
    #[arg(long, default_value_t = crate::model_info::DEFAULT_N_BLOCKS)]
    pub n_blocks: u32,
    /// Compute backend of workers and client.
    #[arg(long, value_enum, default_value_t = crate::cmd::run::Backend::Wgpu)]
    pub backend: crate::cmd::run::Backend,
    /// Once up, ask the client this as a chat message and print the answer.
    #[arg(long)]
    pub ask: Option<String>,
    /// Tokens for --ask.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Stop the devnet after --ask has been answered.
    #[arg(long, requires = "ask")]
    pub exit: bool,
    /// How long to wait for the nodes to find each other, seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Start a local TON chain, fund every node's wallet and give nodes its URL
    /// (`--ton false`: no chain, no payment channels).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ton: bool,
    /// Toncoins minted to each node's wallet on the local chain.
    #[arg(long, default_value_t = 100)]
    pub fund_ton: u64,
}

/// Nanotons in one toncoin.
const NANO: u128 = 1_000_000_000;

/// The devnet's local TON chain: its process and API URL.
struct Chain {
    child: Child,
    url: String,
    client: cocoon_ton::client::TonClient,
    fund: u128,
}

/// Starts `cocoon ton-local` on a free loopback port with its data in `dir/ton`, and
/// waits for the URL it writes.
async fn start_chain(exe: &Path, dir: &Path, fund_ton: u64) -> anyhow::Result<Chain> {
    let data = dir.join("ton");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let url_file = data.join("api.url");
    let _ = std::fs::remove_file(&url_file);
    let log_path = data.join("ton-local.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let log2 = log.try_clone().context("log file handle")?;
    let mut child = Command::new(exe)
        .arg("--data-dir")
        .arg(&data)
        .args(["ton-local", "--listen", "127.0.0.1:0", "--wallets", "0"])
        .arg("--url-file")
        .arg(&url_file)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} ton-local", exe.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Some(status) = child.try_wait().context("checking ton-local")? {
            bail!(
                "the local TON chain exited ({status}); see {} (run scripts/setup for the \
                 contracts, or pass --ton false)",
                log_path.display()
            );
        }
        if let Ok(text) = std::fs::read_to_string(&url_file) {
            break text.trim().to_owned();
        }
        if Instant::now() > deadline {
            bail!(
                "the local TON chain did not start in time; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client =
        cocoon_ton::client::TonClient::new(cocoon_ton::client::ClientConfig::new(url.clone()))
            .context("the TON client")?;
    Ok(Chain {
        child,
        url,
        client,
        fund: u128::from(fund_ton) * NANO,
    })
}

impl Chain {
    /// Mints the chain's faucet money to the wallet of the node at `data_dir` (its key
    /// created if missing) and returns the flags that point the node at the chain.
    async fn fund_node(&self, data_dir: &Path) -> anyhow::Result<Vec<String>> {
        let wallet = crate::cmd::ton::node_wallet(data_dir)?;
        let addr = wallet.address().context("deriving a wallet address")?;
        self.client
            .fund(&addr, self.fund)
            .await
            .with_context(|| format!("funding the wallet of {}", data_dir.display()))?;
        Ok(vec!["--ton-url".into(), self.url.clone()])
    }
}

/// The model id devnet nodes announce with `--model none`: the default model's.
pub fn devnet_model_id() -> String {
    crate::model_info::DEFAULT_MODEL_ID.to_owned()
}

struct Node {
    name: String,
    data_dir: PathBuf,
    role: &'static str,
    blocks: String,
    child: Child,
    peer_id: Option<String>,
}

fn spawn_node(
    exe: &Path,
    dir: &Path,
    name: &str,
    role: &'static str,
    extra: &[String],
) -> anyhow::Result<Node> {
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let _ = std::fs::remove_file(data_dir.join(files::CONTROL_ADDR));
    let log_path = data_dir.join("node.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let log2 = log.try_clone().context("log file handle")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir")
        .arg(&data_dir)
        .arg("node")
        .args(["--role", role])
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
        .args([
            "--mdns",
            "false",
            "--announce-interval",
            "10",
            "--autonat-delay",
            "5",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let blocks = extra
        .iter()
        .position(|a| a == "--blocks")
        .and_then(|i| extra.get(i + 1).cloned())
        .unwrap_or_default();
    Ok(Node {
        name: name.to_owned(),
        data_dir,
        role,
        blocks,
        child,
        peer_id: None,
    })
}

async fn wait_status(node: &mut Node, deadline: Instant) -> anyhow::Result<StatusInfo> {
    loop {
        if let Some(status) = node.child.try_wait().context("checking a node")? {
            bail!(
                "node {} exited ({status}); see {}",
                node.name,
                node.data_dir.join("node.log").display()
            );
        }
        if let Ok(c) = ControlClient::for_data_dir(&node.data_dir)
            && let Ok(s) = c.get::<StatusInfo>("/v1/status")
            && !s.listen_addrs.is_empty()
        {
            node.peer_id = Some(s.peer_id.clone());
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("node {} did not start its control API in time", node.name);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// How many of the other nodes `node` sees with an announcement.
fn seen_with_announcement(node: &Node, all: &[String]) -> usize {
    let Ok(c) = ControlClient::for_data_dir(&node.data_dir) else {
        return 0;
    };
    let Ok(peers) = c.get::<Vec<PeerInfo>>("/v1/peers") else {
        return 0;
    };
    all.iter()
        .filter(|id| Some(*id) != node.peer_id.as_ref())
        .filter(|id| peers.iter().any(|p| &&p.peer_id == id && p.role.is_some()))
        .count()
}

async fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for n in nodes.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), n.child.wait())
            .await
            .is_err()
        {
            let _ = n.child.kill().await;
        }
    }
}

/// The spans `workers` workers split `n_blocks` into.
fn spans(n_blocks: u32, workers: u32) -> Vec<(u32, u32)> {
    (0..workers)
        .map(|i| (i * n_blocks / workers, (i + 1) * n_blocks / workers))
        .collect()
}

/// Runs the devnet in `dir` until a signal arrives (or after `--ask` with `--exit`).
pub async fn run(dir: &Path, args: &DevnetArgs) -> anyhow::Result<()> {
    let model = match args.model.as_str() {
        "none" => None,
        m => Some(crate::default_model::resolve(m)?),
    };
    let (model_id, n_blocks) = match &model {
        Some(path) => {
            let d = crate::model_info::describe_model(path)?;
            (d.id.to_hex(), d.n_blocks)
        }
        None => (devnet_model_id(), args.n_blocks),
    };
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(
        args.workers <= n_blocks,
        "--workers {} exceeds the model's {n_blocks} blocks",
        args.workers
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("locating the cocoon binary")?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;

    let mut nodes = Vec::new();
    let mut chain = None;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        if args.ton {
            chain = Some(start_chain(&exe, dir, args.fund_ton).await?);
        }
        let chain_ref = chain.as_ref();
        // Funds the node's wallet and adds the chain's flags, when there is a chain.
        let with_chain = |name: &str, mut extra: Vec<String>| {
            let data_dir = dir.join(name);
            async move {
                if let Some(c) = chain_ref {
                    extra.extend(c.fund_node(&data_dir).await?);
                }
                anyhow::Ok(extra)
            }
        };
        let extra = with_chain("bootstrap", vec!["--relay-server".into(), "on".into()]).await?;
        nodes.push(spawn_node(&exe, dir, "bootstrap", "relay", &extra)?);
        let status = wait_status(&mut nodes[0], deadline).await?;
        let boot_addr = status
            .listen_addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .context("bootstrap has no TCP address")?;
        let bootstrap = format!("{boot_addr}/p2p/{}", status.peer_id);
        let spans = spans(n_blocks, args.workers);
        let backend = format!("{:?}", args.backend).to_lowercase();
        let model_flags = |blocks: String| -> Vec<String> {
            let mut v = vec!["--bootstrap".to_owned(), bootstrap.clone()];
            match &model {
                Some(path) => v.extend([
                    "--model".into(),
                    path.display().to_string(),
                    "--backend".into(),
                    backend.clone(),
                ]),
                None => v.extend([
                    "--model-id".into(),
                    model_id.clone(),
                    "--n-blocks".into(),
                    n_blocks.to_string(),
                ]),
            }
            if !blocks.is_empty() {
                v.extend(["--blocks".into(), blocks]);
            }
            v
        };
        for (i, (start, end)) in spans.iter().enumerate() {
            let name = format!("worker-{}", i + 1);
            let extra = with_chain(&name, model_flags(format!("{start}..{end}"))).await?;
            nodes.push(spawn_node(&exe, dir, &name, "worker", &extra)?);
        }
        for k in 0..args.spares {
            // The middle span first: the one a failover test takes away.
            let (start, end) = spans[(1 + k as usize) % spans.len()];
            let name = format!("spare-{}", k + 1);
            let extra = with_chain(&name, model_flags(format!("{start}..{end}"))).await?;
            nodes.push(spawn_node(&exe, dir, &name, "worker", &extra)?);
        }
        if model.is_some() {
            let extra = with_chain("client", model_flags(String::new())).await?;
            nodes.push(spawn_node(&exe, dir, "client", "client", &extra)?);
        }
        for n in nodes.iter_mut().skip(1) {
            wait_status(n, deadline).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        wait_for_mesh(&mut nodes, deadline).await?;
        let api = match model {
            Some(_) => Some(wait_for_api(&mut nodes, deadline).await?),
            None => None,
        };
        let model_name = model
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned());
        let json = serde_json::json!({
            "nodes": nodes.iter().map(|n| serde_json::json!({
                "name": n.name,
                "peer_id": n.peer_id,
                "data_dir": n.data_dir,
                "role": n.role,
                "blocks": n.blocks,
            })).collect::<Vec<_>>(),
            "bootstrap": bootstrap,
            "model_id": model_id,
            "model": model_name,
            "api": api,
            "ton": chain_ref.map(|c| c.url.clone()),
        });
        let path = dir.join("devnet.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "devnet up: {} nodes, described in {}",
            nodes.len(),
            path.display()
        );
        if let (Some(api), Some(name)) = (&api, &model_name) {
            println!("OpenAI API: {api}  (model \"{name}\")");
            println!("  curl {api}/chat/completions -H 'Content-Type: application/json' \\");
            println!("    -d '{{\"model\":\"{name}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi\"}}]}}'");
            let client = nodes.last().map(|n| n.data_dir.display().to_string()).unwrap_or_default();
            println!("  cocoon --data-dir {client} generate --chat --prompt 'Hi'");
            println!("  cocoon --data-dir {client} routes");
        }
        println!("inspect nodes with, for example:");
        println!("  cocoon --data-dir {} peers", nodes[1].data_dir.display());
        println!("  cocoon --data-dir {} models", nodes[1].data_dir.display());
        if let Some(c) = chain_ref {
            println!("local TON chain: {}", c.url);
            println!("  cocoon --data-dir {} wallet", nodes[1].data_dir.display());
            println!("  cocoon --data-dir {} channels", nodes[1].data_dir.display());
        }
        println!("logs: <data dir>/node.log. Ctrl-C stops them all.");
        if let (Some(question), Some(api)) = (&args.ask, &api) {
            ask(api, model_name.as_deref().unwrap_or("default"), question, args.max_tokens).await?;
            if chain_ref.is_some() {
                print_earnings(&nodes).await?;
            }
            if args.exit {
                return Ok(());
            }
        }
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    check_alive(&mut nodes)?;
                    if let Some(c) = chain.as_mut()
                        && let Some(status) = c.child.try_wait().context("checking ton-local")?
                    {
                        bail!("the local TON chain exited ({status}); see {}", dir.join("ton/ton-local.log").display());
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    eprintln!("stopping {} nodes", nodes.len());
    stop_all(&mut nodes).await;
    if let Some(mut c) = chain {
        let _ = c.child.kill().await;
    }
    result
}

fn check_alive(nodes: &mut [Node]) -> anyhow::Result<()> {
    for n in nodes.iter_mut() {
        if let Some(status) = n.child.try_wait().context("checking a node")? {
            bail!(
                "node {} exited ({status}); see {}",
                n.name,
                n.data_dir.join("node.log").display()
            );
        }
    }
    Ok(())
}

/// Waits until every node sees every other one's announcement.
async fn wait_for_mesh(nodes: &mut [Node], deadline: Instant) -> anyhow::Result<()> {
    let ids: Vec<String> = nodes.iter().filter_map(|n| n.peer_id.clone()).collect();
    let others = ids.len() - 1;
    let bar = ProgressBar::new((nodes.len() * others) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} links")
            .map_err(|e| anyhow::anyhow!("progress style: {e}"))?,
    );
    bar.set_message("nodes finding each other");
    loop {
        let seen: usize = nodes.iter().map(|n| seen_with_announcement(n, &ids)).sum();
        bar.set_position(seen as u64);
        if seen == nodes.len() * others {
            break;
        }
        check_alive(nodes)?;
        if Instant::now() > deadline {
            bail!("nodes did not all see each other in time");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bar.finish_with_message("every node sees every other");
    Ok(())
}

/// Waits until the client serves its API and sees a complete route of loaded workers;
/// returns the API's base URL.
async fn wait_for_api(nodes: &mut [Node], deadline: Instant) -> anyhow::Result<String> {
    let bar = ProgressBar::new_spinner();
    bar.set_message("workers loading their blocks");
    bar.enable_steady_tick(Duration::from_millis(200));
    loop {
        check_alive(nodes)?;
        let client = nodes.last().context("no client node")?;
        let api = std::fs::read_to_string(client.data_dir.join(files::API_ADDR)).ok();
        let routed = ControlClient::for_data_dir(&client.data_dir)
            .and_then(|c| c.get::<RoutesInfo>("/v1/routes?k=1"))
            .is_ok_and(|r| r.error.is_none());
        if let (Some(api), true) = (api, routed) {
            bar.finish_with_message("workers loaded; a route covers the model");
            return Ok(format!("http://{}/v1", api.trim()));
        }
        if Instant::now() > deadline {
            bail!("the client found no complete route of loaded workers in time");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One chat completion through the devnet's API, printed with its route.
async fn ask(api: &str, model: &str, question: &str, max_tokens: usize) -> anyhow::Result<()> {
    let url = format!("{api}/chat/completions");
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    let reply: serde_json::Value = tokio::task::spawn_blocking(move || {
        let mut r = ureq::post(&url)
            .send_json(&body)
            .with_context(|| format!("asking {url}"))?;
        r.body_mut()
            .read_json::<serde_json::Value>()
            .context("reading the answer")
    })
    .await
    .context("joining the request")??;
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .context("the answer has no content")?;
    println!("\n> {question}\n{text}\n");
    let hops = crate::cmd::generate::route_hops(&reply["cocoon"]["route"]);
    println!(
        "answered by {} workers: {}  ({:.1} tok/s)",
        hops.len(),
        hops.join(" → "),
        reply["cocoon"]["tokens_per_second"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// What each worker earned, as the client's channel records and the worker's own say
/// (`cocoon channels` on each side), once the last payment has reached the worker.
async fn print_earnings(nodes: &[Node]) -> anyhow::Result<()> {
    let Some(client) = nodes.iter().find(|n| n.role == "client") else {
        return Ok(());
    };
    let rows = |n: &Node| -> Vec<ChannelRow> {
        ControlClient::for_data_dir(&n.data_dir)
            .and_then(|c| c.get::<Vec<ChannelRow>>("/v1/channels"))
            .unwrap_or_default()
    };
    let client_id = client.peer_id.clone().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    println!("paid per token through payment channels (client's record / worker's record):");
    for w in nodes.iter().filter(|n| n.role == "worker") {
        let Some(id) = &w.peer_id else { continue };
        loop {
            let paid = rows(client).into_iter().find(|r| &r.peer == id);
            let earned = rows(w).into_iter().find(|r| r.peer == client_id);
            match (paid, earned) {
                (Some(p), Some(e)) if p.seqno == e.seqno || Instant::now() > deadline => {
                    println!(
                        "  {:<9} [{}]  sent {} nTON / received {} nTON  ({} prompt + {} completion tokens, seqno {})",
                        w.name,
                        w.blocks,
                        p.sent_nanoton,
                        e.received_nanoton,
                        p.prompt_tokens,
                        p.completion_tokens,
                        p.seqno
                    );
                    break;
                }
                // Not on the route: nothing to pay.
                (None, _) => break,
                _ if Instant::now() > deadline => {
                    println!("  {:<9} [{}]  no channel on one side", w.name, w.blocks);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

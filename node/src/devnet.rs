//! `cocoon devnet`: a whole mesh on loopback. Starts a bootstrap/relay node and N worker
//! nodes as separate processes (this same binary), each with its own data dir under
//! DIR, waits until every node sees every other, writes `DIR/devnet.json`, and stops
//! them all on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::process::{Child, Command};

use crate::config::files;
use crate::control::api::{PeerInfo, StatusInfo};
use crate::control::client::ControlClient;

/// Starts a local mesh.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Worker nodes besides the bootstrap/relay.
    #[arg(long, default_value_t = 5)]
    pub nodes: u32,
    /// Blocks of the model split among the workers.
    #[arg(long, default_value_t = crate::model_info::DEFAULT_N_BLOCKS)]
    pub n_blocks: u32,
    /// How long to wait for the nodes to find each other, seconds.
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
}

/// The model id devnet nodes announce: the default model's (its nodes need not load it
/// to announce their blocks).
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

/// Runs the devnet in `dir` until a signal arrives.
pub async fn run(dir: &Path, args: &DevnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    anyhow::ensure!(
        args.nodes <= args.n_blocks,
        "--nodes {} exceeds the model's {} blocks",
        args.nodes,
        args.n_blocks
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("locating the cocoon binary")?;
    let model_id = devnet_model_id();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;

    let mut nodes = Vec::new();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        nodes.push(spawn_node(
            &exe,
            dir,
            "bootstrap",
            "relay",
            &["--relay-server".into(), "on".into()],
        )?);
        let status = wait_status(&mut nodes[0], deadline).await?;
        let boot_addr = status
            .listen_addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .context("bootstrap has no TCP address")?;
        let bootstrap = format!("{boot_addr}/p2p/{}", status.peer_id);
        for i in 0..args.nodes {
            let start = i * args.n_blocks / args.nodes;
            let end = (i + 1) * args.n_blocks / args.nodes;
            let extra = vec![
                "--bootstrap".to_owned(),
                bootstrap.clone(),
                "--model-id".into(),
                model_id.clone(),
                "--n-blocks".into(),
                args.n_blocks.to_string(),
                "--blocks".into(),
                format!("{start}..{end}"),
            ];
            nodes.push(spawn_node(
                &exe,
                dir,
                &format!("node-{}", i + 1),
                "worker",
                &extra,
            )?);
        }
        for n in nodes.iter_mut().skip(1) {
            wait_status(n, deadline).await?;
        }
        let ids: Vec<String> = nodes.iter().filter_map(|n| n.peer_id.clone()).collect();
        let others = ids.len() - 1;
        let bar = ProgressBar::new((nodes.len() * others) as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} links")
                .map_err(|e| anyhow::anyhow!("progress style: {e}"))?,
        );
        bar.set_message("nodes finding each other");
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        loop {
            let seen: usize = nodes.iter().map(|n| seen_with_announcement(n, &ids)).sum();
            bar.set_position(seen as u64);
            if seen == nodes.len() * others {
                break;
            }
            for n in nodes.iter_mut() {
                if let Some(status) = n.child.try_wait().context("checking a node")? {
                    bail!("node {} exited ({status})", n.name);
                }
            }
            if Instant::now() > deadline {
                bail!("nodes did not all see each other within {} s", args.timeout);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bar.finish_with_message("every node sees every other");
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
        });
        let path = dir.join("devnet.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "devnet up: {} nodes, described in {}",
            nodes.len(),
            path.display()
        );
        println!("inspect them with, for example:");
        println!("  cocoon --data-dir {} peers", nodes[1].data_dir.display());
        println!("  cocoon --data-dir {} models", nodes[1].data_dir.display());
        println!("  cocoon --data-dir {} status", nodes[0].data_dir.display());
        println!("logs: <data dir>/node.log. Ctrl-C stops them all.");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    for n in nodes.iter_mut() {
                        if let Some(status) = n.child.try_wait().context("checking a node")? {
                            bail!("node {} exited ({status})", n.name);
                        }
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    eprintln!("stopping {} nodes", nodes.len());
    stop_all(&mut nodes).await;
    result
}

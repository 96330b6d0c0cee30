//! The CLI's inspection commands: each asks the node at `--data-dir` through the control
//! API and prints a table, or JSON with `--json`.

pub mod channels;
pub mod node;

use std::path::Path;

use crate::control::api::{ModelInfo, PeerDetail, PeerInfo, PingReport, RoutesInfo, StatusInfo};
use crate::control::client::ControlClient;

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Shortens a peer id for tables: `12D3KooW…last6`.
fn short(id: &str) -> String {
    if id.len() > 20 {
        format!("{}…{}", &id[..8], &id[id.len() - 6..])
    } else {
        id.to_owned()
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Prints rows with columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count())))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// `cocoon id`.
pub fn id(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let s: StatusInfo = ControlClient::for_data_dir(data_dir)?.get("/v1/status")?;
    if json {
        return print_json(
            &serde_json::json!({ "peer_id": s.peer_id, "noise_static_key": s.noise_static_key, "listen_addrs": s.listen_addrs }),
        );
    }
    println!("{}", s.peer_id);
    Ok(())
}

/// `cocoon status`.
pub fn status(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let s: StatusInfo = ControlClient::for_data_dir(data_dir)?.get("/v1/status")?;
    if json {
        return print_json(&s);
    }
    println!("peer id      {}", s.peer_id);
    println!("role         {}  (cocoon {})", s.role, s.version);
    println!(
        "model        {}  blocks {} of {}",
        opt(&s.model_id),
        s.blocks,
        s.n_blocks
    );
    println!(
        "NAT          {}  relay server: {}",
        s.nat_status,
        if s.relay_server { "on" } else { "off" }
    );
    println!(
        "peers        {} connected, {} known, {} announcements",
        s.connected_peers, s.known_peers, s.announcements
    );
    println!("uptime       {} s", s.uptime_secs);
    for a in &s.listen_addrs {
        println!("listening    {a}");
    }
    for a in &s.external_addrs {
        println!("external     {a}");
    }
    Ok(())
}

fn peer_row(p: &PeerInfo) -> Vec<String> {
    vec![
        short(&p.peer_id),
        p.connection.clone(),
        p.rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.1}")),
        opt(&p.role),
        p.model_id
            .as_deref()
            .map_or_else(|| "-".into(), |m| m.chars().take(8).collect()),
        opt(&p.blocks),
        format!("{:.1}{}", p.score, if p.banned { " banned" } else { "" }),
        p.addresses.first().cloned().unwrap_or_else(|| "-".into()),
    ]
}

/// `cocoon peers`.
pub fn peers(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let peers: Vec<PeerInfo> = ControlClient::for_data_dir(data_dir)?.get("/v1/peers")?;
    if json {
        return print_json(&peers);
    }
    if peers.is_empty() {
        println!("no peers yet");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = peers.iter().map(peer_row).collect();
    table(
        &[
            "PEER", "LINK", "RTT ms", "ROLE", "MODEL", "BLOCKS", "SCORE", "ADDRESS",
        ],
        &rows,
    );
    Ok(())
}

/// `cocoon peer ID`.
pub fn peer(data_dir: &Path, id: &str, json: bool) -> anyhow::Result<()> {
    let d: PeerDetail = ControlClient::for_data_dir(data_dir)?.get(&format!("/v1/peers/{id}"))?;
    if json {
        return print_json(&d);
    }
    let p = &d.peer;
    println!("peer id      {}", p.peer_id);
    println!(
        "link         {}{}",
        p.connection,
        if p.banned { " (banned)" } else { "" }
    );
    println!("agent        {}", opt(&p.agent));
    println!(
        "rtt          {}",
        p.rtt_ms
            .map_or_else(|| "-".into(), |r| format!("{r:.2} ms"))
    );
    println!(
        "score        {:.1} (gossip {}), {} rejected announcements{}, {} failures",
        p.score,
        p.gossip_score
            .map_or_else(|| "-".into(), |s| format!("{s:.1}")),
        p.rejections,
        p.last_rejection
            .as_deref()
            .map_or_else(String::new, |r| format!(" (last: {r})")),
        p.failures
    );
    for a in &p.addresses {
        println!("address      {a}");
    }
    if !d.protocols.is_empty() {
        println!("protocols    {}", d.protocols.join(" "));
    }
    match &d.announcement {
        Some(a) => println!("announcement\n{}", serde_json::to_string_pretty(a)?),
        None => println!("announcement -"),
    }
    Ok(())
}

/// `cocoon ping ID -c N`.
pub fn ping(data_dir: &Path, id: &str, count: u32, json: bool) -> anyhow::Result<()> {
    let mut client = ControlClient::for_data_dir(data_dir)?;
    client.timeout = std::time::Duration::from_secs(20 + u64::from(count) * 11);
    let r: PingReport = client.post(&format!("/v1/peers/{id}/ping?count={count}"))?;
    if json {
        return print_json(&r);
    }
    for (i, rtt) in r.rtts_ms.iter().enumerate() {
        match rtt {
            Some(ms) => println!(
                "pong from {}: seq={} time={ms:.2} ms",
                short(&r.peer_id),
                i + 1
            ),
            None => println!("no pong from {}: seq={}", short(&r.peer_id), i + 1),
        }
    }
    for e in &r.errors {
        println!("error: {e}");
    }
    let ok: Vec<f64> = r.rtts_ms.iter().flatten().copied().collect();
    if ok.is_empty() {
        anyhow::bail!("{} did not answer", r.peer_id);
    }
    println!(
        "{} of {} answered, mean {:.2} ms",
        ok.len(),
        r.rtts_ms.len(),
        ok.iter().sum::<f64>() / ok.len() as f64
    );
    Ok(())
}

/// `cocoon models`.
pub fn models(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let models: Vec<ModelInfo> = ControlClient::for_data_dir(data_dir)?.get("/v1/models")?;
    if json {
        return print_json(&models);
    }
    if models.is_empty() {
        println!("no models announced yet");
    }
    for m in &models {
        println!(
            "model {}  blocks covered {}/{}{}",
            m.model_id,
            m.covered_blocks,
            m.n_blocks,
            if m.complete {
                " (complete route possible)"
            } else {
                ""
            }
        );
        let rows: Vec<Vec<String>> = m
            .workers
            .iter()
            .map(|w| {
                vec![
                    format!("  {}", short(&w.peer_id)),
                    w.blocks.clone(),
                    w.price_prompt_nanoton.to_string(),
                    w.price_completion_nanoton.to_string(),
                    format!("{:.1}", w.throughput_tps),
                ]
            })
            .collect();
        table(
            &["  WORKER", "BLOCKS", "PROMPT nTON", "COMPL nTON", "TOK/S"],
            &rows,
        );
    }
    Ok(())
}

/// `cocoon routes [MODEL]`: which workers cover each block, and the best chains.
pub fn routes(data_dir: &Path, model: Option<&str>, k: usize, json: bool) -> anyhow::Result<()> {
    let path = format!("/v1/routes?model={}&k={k}", model.unwrap_or(""));
    let info: RoutesInfo = ControlClient::for_data_dir(data_dir)?.get(&path)?;
    if json {
        return print_json(&info);
    }
    println!("model {}  ({} blocks)", info.model_id, info.n_blocks);
    let cov: Vec<String> = info.coverage.iter().map(|c| c.to_string()).collect();
    println!("workers per block: {}", cov.join(" "));
    if let Some(e) = &info.error {
        println!("no route: {e}");
    }
    for (i, r) in info.routes.iter().enumerate() {
        println!(
            "route {}: {:.1} ms/token expected, {} nTON per generated token, {} per prompt token",
            i + 1,
            r.expected_ms_per_token,
            r.price_per_token_nanoton,
            r.prompt_price_per_token_nanoton
        );
        let rows: Vec<Vec<String>> = r
            .hops
            .iter()
            .map(|h| vec![format!("  {}", short(&h.peer_id)), h.blocks.clone()])
            .collect();
        table(&["  WORKER", "BLOCKS"], &rows);
    }
    Ok(())
}

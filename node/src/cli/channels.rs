//! `cocoon channels`, `cocoon channel open PEER --deposit TON` and `cocoon channel close
//! ID [--force]`: the node's payment channels, through its control API.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::{print_json, short, table};
use crate::control::api::{ChannelCloseReport, ChannelRow};
use crate::control::client::ControlClient;

/// Nanotons in one toncoin.
const NANO: u128 = 1_000_000_000;

/// Channel commands wait on the chain and the peer: give them longer than inspections.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, clap::Subcommand)]
pub enum ChannelCommand {
    /// Open a channel paying PEER: deploy it from this node's wallet with a deposit.
    Open {
        /// The peer's id (its key and wallet come from its announcement).
        peer: String,
        /// Deposit in TON (e.g. `1.5`).
        #[arg(long)]
        deposit: String,
        #[arg(long)]
        json: bool,
    },
    /// Close a channel: cooperatively (the peer co-signs), or with --force by starting
    /// an uncooperative close (settled after the quarantine by the watchers).
    Close {
        /// The channel id (hex) or its contract address.
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Parses a TON amount with up to 9 decimals into nanoton.
pub fn parse_ton(text: &str) -> anyhow::Result<u128> {
    let bad = || anyhow::anyhow!("{text:?} is not an amount of TON (e.g. 1.5)");
    let (int, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if frac.len() > 9 || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac: u128 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    int.checked_mul(NANO)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(bad)
}

fn ton(n: u128) -> String {
    format!("{}.{:09}", n / NANO, n % NANO)
}

fn client(data_dir: &Path) -> anyhow::Result<ControlClient> {
    let mut c = ControlClient::for_data_dir(data_dir)?;
    c.timeout = CHANNEL_TIMEOUT;
    Ok(c)
}

fn print_rows(rows: &[ChannelRow]) {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                short(&r.peer),
                r.channel_id.clone(),
                r.address.clone(),
                r.role.clone(),
                ton(r.deposit_nanoton),
                ton(r.sent_nanoton),
                ton(r.received_nanoton),
                r.seqno.to_string(),
                format!("{}+{}", r.prompt_tokens, r.completion_tokens),
                r.state.clone(),
            ]
        })
        .collect();
    table(
        &[
            "PEER",
            "CHANNEL",
            "ADDRESS",
            "ROLE",
            "DEPOSIT",
            "SENT",
            "RECEIVED",
            "SEQNO",
            "TOKENS (PROMPT+COMPLETION)",
            "STATE",
        ],
        &body,
    );
}

/// `cocoon channels`.
pub fn list(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let rows: Vec<ChannelRow> = client(data_dir)?.get("/v1/channels")?;
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no channels (open one with: cocoon channel open PEER --deposit TON)");
        return Ok(());
    }
    print_rows(&rows);
    Ok(())
}

/// `cocoon channel ...`.
pub fn run(data_dir: &Path, command: &ChannelCommand) -> anyhow::Result<()> {
    match command {
        ChannelCommand::Open {
            peer,
            deposit,
            json,
        } => {
            let nano = parse_ton(deposit).context("--deposit")?;
            let row: ChannelRow = client(data_dir)?.post(&format!(
                "/v1/channels/open?peer={peer}&deposit_nanoton={nano}"
            ))?;
            if *json {
                return print_json(&row);
            }
            println!("channel {} open at {}", row.channel_id, row.address);
            print_rows(&[row]);
            Ok(())
        }
        ChannelCommand::Close { id, force, json } => {
            let report: ChannelCloseReport =
                client(data_dir)?.post(&format!("/v1/channels/{id}/close?force={force}"))?;
            if *json {
                return print_json(&report);
            }
            println!(
                "{} close of channel {} sent; on chain it is now {}",
                report.kind, report.channel_id, report.row.state
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ton_amounts_parse_exactly_and_bad_ones_are_refused() {
        assert_eq!(parse_ton("1.5").expect("ok"), 1_500_000_000);
        assert_eq!(parse_ton("2").expect("ok"), 2_000_000_000);
        assert_eq!(parse_ton("0.000000001").expect("ok"), 1);
        assert_eq!(parse_ton(".25").expect("ok"), 250_000_000);
        for bad in ["", ".", "1.0000000001", "-1", "1e9", "abc", "1.2.3"] {
            assert!(parse_ton(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(ton(1_500_000_001), "1.500000001");
    }
}

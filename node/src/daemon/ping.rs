//! On-demand ping for `cocoon ping` over `/cocoon/ping/1.0.0`: 32 random bytes, echoed.

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use rand::RngCore;
use tokio::sync::oneshot;

use crate::control::api::PingReport;
use crate::swarm::PING_PROTOCOL;

const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Echoes every inbound ping stream.
pub async fn serve(mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((peer, mut stream)) = incoming.next().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 32];
            loop {
                let step = async {
                    stream.read_exact(&mut buf).await?;
                    stream.write_all(&buf).await?;
                    stream.flush().await
                };
                match tokio::time::timeout(Duration::from_secs(30), step).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            tracing::trace!(%peer, "ping stream closed");
        });
    }
}

/// Pings `peer` `count` times on one stream and reports each round trip.
pub async fn ping(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    count: u32,
    reply: oneshot::Sender<Result<PingReport, String>>,
) {
    let mut report = PingReport {
        peer_id: peer.to_string(),
        rtts_ms: Vec::new(),
        errors: Vec::new(),
    };
    let stream = tokio::time::timeout(PING_TIMEOUT, control.open_stream(peer, PING_PROTOCOL)).await;
    let mut stream = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = reply.send(Err(format!("cannot open a ping stream to {peer}: {e}")));
            return;
        }
        Err(_) => {
            let _ = reply.send(Err(format!(
                "no connection to {peer} within {PING_TIMEOUT:?}"
            )));
            return;
        }
    };
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut out = [0u8; 32];
        rand::rng().fill_bytes(&mut out);
        let started = Instant::now();
        let step = async {
            stream.write_all(&out).await?;
            stream.flush().await?;
            let mut back = [0u8; 32];
            stream.read_exact(&mut back).await?;
            Ok::<_, std::io::Error>(back)
        };
        match tokio::time::timeout(PING_TIMEOUT, step).await {
            Ok(Ok(back)) if back == out => report
                .rtts_ms
                .push(Some(started.elapsed().as_secs_f64() * 1000.0)),
            Ok(Ok(_)) => {
                report.rtts_ms.push(None);
                report.errors.push("echo did not match".into());
            }
            Ok(Err(e)) => {
                report.rtts_ms.push(None);
                report.errors.push(e.to_string());
                break;
            }
            Err(_) => {
                report.rtts_ms.push(None);
                report.errors.push("timed out".into());
                break;
            }
        }
    }
    let _ = reply.send(Ok(report));
}

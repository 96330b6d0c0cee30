//! The control API's answers: status, peers, models and their coverage, routes, pings
//! and the payment channels, from what the daemon holds.

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};

use cocoon_protocol::announce::Announcement;
use cocoon_protocol::route;
use cocoon_protocol::units::ModelId;

use super::relay::is_relayed;
use super::{Daemon, now_ms, ping};
use crate::control::api::{ModelInfo, ModelWorker, PeerDetail, PeerInfo, StatusInfo};
use crate::control::server::ControlRequest;

/// Where a control request's answer goes.
type Reply<T> = tokio::sync::oneshot::Sender<Result<T, String>>;

impl Daemon {
    pub(super) fn on_control(&mut self, req: ControlRequest) {
        match req {
            ControlRequest::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ControlRequest::Peers(tx) => {
                let list = self.all_peers().iter().map(|p| self.peer_info(p)).collect();
                let _ = tx.send(list);
            }
            ControlRequest::Peer(id, tx) => {
                let res = id
                    .parse::<PeerId>()
                    .map_err(|_| format!("{id:?} is not a peer id"))
                    .and_then(|p| {
                        if self.peers.table().get(&p).is_none() && !self.live.contains_key(&p) {
                            return Err(format!("peer {p} is not known to this node"));
                        }
                        let ann = self
                            .peers
                            .table()
                            .get(&p)
                            .and_then(|r| r.announcement.as_ref())
                            .map(announcement_json);
                        Ok(PeerDetail {
                            peer: self.peer_info(&p),
                            protocols: self
                                .live
                                .get(&p)
                                .map(|l| l.protocols.clone())
                                .unwrap_or_default(),
                            announcement: ann,
                        })
                    });
                let _ = tx.send(res);
            }
            ControlRequest::Ping(id, count, tx) => match id.parse::<PeerId>() {
                Ok(peer) => {
                    let addrs = self
                        .live
                        .get(&peer)
                        .map(|l| l.listen_addrs.clone())
                        .unwrap_or_default();
                    if !self.swarm.is_connected(&peer) {
                        self.dial_known(peer, addrs);
                    }
                    tokio::spawn(ping::ping(self.stream_control.clone(), peer, count, tx));
                }
                Err(_) => {
                    let _ = tx.send(Err(format!("{id:?} is not a peer id")));
                }
            },
            ControlRequest::Models(tx) => {
                let _ = tx.send(self.models());
            }
            ControlRequest::Forge(kind, tx) => {
                let _ = tx.send(self.forge(kind));
            }
            ControlRequest::Routes(model, k, tx) => {
                let _ = tx.send(self.routes(&model, k));
            }
            ControlRequest::Channels(tx) => {
                let Some((tx, ch)) = self.channels_or_refuse(tx) else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = tx.send(ch.list().await.map_err(|e| format!("{e:#}")));
                });
            }
            ControlRequest::ChannelOpen(peer, deposit, tx) => {
                let Some((tx, ch)) = self.channels_or_refuse(tx) else {
                    return;
                };
                match self.channel_peer(&peer) {
                    Ok((peer, key, wallet)) => {
                        tokio::spawn(async move {
                            let res = ch
                                .open_with(
                                    peer,
                                    key,
                                    &wallet,
                                    cocoon_protocol::channel::NanoTon(deposit),
                                )
                                .await;
                            let _ = tx.send(res.map_err(|e| format!("{e:#}")));
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
            ControlRequest::ChannelClose(id, force, tx) => {
                let Some((tx, ch)) = self.channels_or_refuse(tx) else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = tx.send(ch.close(&id, force).await.map_err(|e| format!("{e:#}")));
                });
            }
        }
    }

    /// The channels, or an error answer when this node has no chain configured.
    pub(super) fn channels_or_refuse<T>(
        &self,
        tx: Reply<T>,
    ) -> Option<(Reply<T>, Arc<crate::pay::Channels>)> {
        match &self.channels {
            Some(ch) => Some((tx, ch.clone())),
            None => {
                let _ = tx.send(Err(
                    "this node has no TON chain configured (start it with --ton-url)".into(),
                ));
                None
            }
        }
    }

    /// A peer's channel key and wallet, from its verified announcement.
    pub(super) fn channel_peer(&self, id: &str) -> Result<(PeerId, [u8; 32], String), String> {
        let peer: PeerId = id.parse().map_err(|_| format!("{id:?} is not a peer id"))?;
        let ann = self
            .peers
            .table()
            .get(&peer)
            .and_then(|r| r.announcement.as_ref())
            .ok_or_else(|| format!("no announcement from {peer} is known to this node"))?;
        if ann.ton_wallet.is_empty() {
            return Err(format!("{peer} announces no TON wallet"));
        }
        Ok((peer, ann.node_key, ann.ton_wallet.clone()))
    }

    pub(super) fn status(&self) -> StatusInfo {
        StatusInfo {
            peer_id: self.local_peer().to_string(),
            role: self.me.role.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            nat_status: self.nat_status.clone(),
            relay_server: self.swarm.behaviour().relay_server.is_enabled(),
            model_id: self.me.model_id.map(|m| m.to_hex()),
            n_blocks: self.me.n_blocks,
            blocks: self.me.blocks.to_string(),
            connected_peers: self
                .live
                .values()
                .filter(|l| !l.connections.is_empty())
                .count(),
            known_peers: self.all_peers().len(),
            announcements: self.peers.table().announcements().count(),
            uptime_secs: self.started.elapsed().as_secs(),
            noise_static_key: hex::encode(self.identity.noise_public_key()),
        }
    }

    pub(super) fn models(&self) -> Vec<ModelInfo> {
        let mut by_model: HashMap<ModelId, (u32, Vec<&Announcement>)> = HashMap::new();
        let mine = self.me.model_id.map(|m| (m, self.me.n_blocks));
        if let Some((m, n)) = mine {
            by_model.entry(m).or_insert((n, Vec::new()));
        }
        for a in self.peers.table().announcements() {
            if let Some(m) = a.model_id {
                let e = by_model.entry(m).or_insert((a.n_blocks, Vec::new()));
                e.0 = e.0.max(a.n_blocks);
                if !a.blocks.is_empty() {
                    e.1.push(a);
                }
            }
        }
        let mut out: Vec<ModelInfo> = by_model
            .into_iter()
            .map(|(model, (n_blocks, anns))| {
                let mut workers: Vec<ModelWorker> = anns
                    .iter()
                    .map(|a| ModelWorker {
                        peer_id: a.peer_id().map(|p| p.to_string()).unwrap_or_default(),
                        blocks: a.blocks.to_string(),
                        price_prompt_nanoton: a.prices.prompt.0,
                        price_completion_nanoton: a.prices.completion.0,
                        throughput_tps: a.throughput_milli_tps as f64 / 1000.0,
                    })
                    .collect();
                let mut spans: Vec<_> = anns.iter().map(|a| a.blocks).collect();
                if self.me.model_id == Some(model) && !self.me.blocks.is_empty() {
                    spans.push(self.me.blocks);
                    workers.push(ModelWorker {
                        peer_id: format!("{} (self)", self.local_peer()),
                        blocks: self.me.blocks.to_string(),
                        price_prompt_nanoton: self.me.prices.prompt.0,
                        price_completion_nanoton: self.me.prices.completion.0,
                        throughput_tps: self.me.throughput_milli_tps as f64 / 1000.0,
                    });
                }
                workers.sort_by(|a, b| a.blocks.cmp(&b.blocks));
                let covered_blocks = route::span_coverage(spans, n_blocks)
                    .iter()
                    .filter(|&&c| c > 0)
                    .count() as u32;
                ModelInfo {
                    model_id: model.to_hex(),
                    n_blocks,
                    covered_blocks,
                    complete: covered_blocks == n_blocks,
                    workers,
                }
            })
            .collect();
        out.sort_by(|a, b| a.model_id.cmp(&b.model_id));
        out
    }

    pub(super) fn peer_info(&self, peer: &PeerId) -> PeerInfo {
        let now = now_ms();
        let rec = self.peers.table().get(peer);
        let live = self.live.get(peer);
        let conns: Vec<&Multiaddr> = live
            .map(|l| l.connections.values().collect())
            .unwrap_or_default();
        let connection = if conns.is_empty() {
            "none"
        } else if conns.iter().any(|a| !is_relayed(a)) {
            "direct"
        } else {
            "relayed"
        };
        let addresses: Vec<String> = if conns.is_empty() {
            live.map(|l| l.listen_addrs.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default()
        } else {
            conns.iter().map(|a| a.to_string()).collect()
        };
        let ann = rec.and_then(|r| r.announcement.as_ref());
        PeerInfo {
            peer_id: peer.to_string(),
            connected: !conns.is_empty(),
            connection: connection.into(),
            addresses,
            rtt_ms: rec.and_then(|r| r.rtt_us).map(|us| us as f64 / 1000.0),
            path_rtt_ms: rec
                .and_then(|r| r.path_rtt_us())
                .map(|us| us as f64 / 1000.0),
            role: ann.map(|a| a.role.to_string()),
            model_id: ann.and_then(|a| a.model_id).map(|m| m.to_hex()),
            blocks: ann.map(|a| a.blocks.to_string()),
            score: self.peers.table().score(peer),
            gossip_score: self.swarm.behaviour().gossipsub.peer_score(peer),
            rejections: rec.map_or(0, |r| r.rejections),
            last_rejection: rec.and_then(|r| r.last_rejection).map(str::to_owned),
            failures: rec.map_or(0, |r| r.failures),
            banned: self.peers.table().is_banned(peer, now),
            agent: live.and_then(|l| l.agent.clone()),
        }
    }

    pub(super) fn all_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.peers.table().iter().map(|(p, _)| *p).collect();
        for (p, l) in &self.live {
            if !l.connections.is_empty() && !peers.contains(p) {
                peers.push(*p);
            }
        }
        peers.retain(|p| *p != self.local_peer());
        peers.sort();
        peers
    }
}

fn announcement_json(a: &Announcement) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut() {
        let addrs: Vec<String> = a
            .listen_addrs
            .iter()
            .map(|b| {
                Multiaddr::try_from(b.clone()).map_or_else(|_| hex::encode(b), |m| m.to_string())
            })
            .collect();
        obj.insert("listen_addrs".into(), serde_json::json!(addrs));
        obj.insert(
            "peer_id".into(),
            serde_json::json!(a.peer_id().map(|p| p.to_string()).unwrap_or_default()),
        );
    }
    v
}

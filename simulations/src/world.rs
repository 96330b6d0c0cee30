//! The simulated mesh's population: nodes with identities, places, roles, tiers and
//! adversary kinds, and the shared announcement view that gossip converges to (a
//! protocol `PeerTable` fed only through `verify_announcement`), indexed by block for
//! provider lookups.

use std::collections::BTreeMap;

use cocoon_protocol::PeerId;
use cocoon_protocol::identity::NodeIdentity;
use cocoon_protocol::peers::{PeerTable, ScorePolicy};
use cocoon_protocol::units::{BlockRange, SeqNo};
use rand::{Rng, RngCore};

use crate::dist::{self, SimRng};
use crate::net::Placement;
use crate::scenario::Scenario;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Relay,
    Worker,
    Client,
}

/// How a worker misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Adversary {
    Honest,
    /// Returns wrong results.
    Wrong,
    /// Accepts work and never answers.
    Stall,
    /// Drops out in the middle of sessions.
    Vanish,
}

impl Adversary {
    pub fn as_str(&self) -> &'static str {
        match self {
            Adversary::Honest => "honest",
            Adversary::Wrong => "wrong",
            Adversary::Stall => "stall",
            Adversary::Vanish => "vanish",
        }
    }
}

/// Per-worker state and counters.
#[derive(Debug)]
pub struct Worker {
    pub tier: u8,
    pub adversary: Adversary,
    /// Placement rule: a fixed span, or `auto` (choose_span at every join).
    pub fixed_span: Option<BlockRange>,
    pub blocks: BlockRange,
    /// When the worker's compute is next free, µs.
    pub busy_until: u64,
    /// Requests whose current route uses this worker.
    pub active: Vec<u32>,
    pub seqno: Option<SeqNo>,
    /// Bumped at every join and leave, so stale timers are dropped.
    pub epoch: u32,
    pub online_since: u64,
    pub online_us: u64,
    /// Completion tokens this worker computed (for any request), and prompt tokens.
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    pub segments: u64,
    pub faults: u64,
    /// When its current announcement expires / becomes visible to clients, µs.
    pub listed_until: u64,
    pub visible_from: u64,
    /// The span under which the block index lists this worker.
    pub listed_span: BlockRange,
}

/// One simulated node.
pub struct Node {
    pub kind: Kind,
    pub place: Placement,
    pub identity: NodeIdentity,
    /// The same ed25519 key as the identity, as the channel code takes it.
    pub channel_key: ed25519_dalek::SigningKey,
    pub peer: PeerId,
    pub online: bool,
    pub worker: Option<Box<Worker>>,
    /// A client's own view of its peers: RTTs, failures, bans.
    pub table: Option<Box<PeerTable>>,
}

impl Node {
    pub fn worker(&self) -> &Worker {
        self.worker.as_deref().expect("called on a worker")
    }
    pub fn worker_mut(&mut self) -> &mut Worker {
        self.worker.as_deref_mut().expect("called on a worker")
    }
}

/// All nodes plus the gossip-converged announcement view.
pub struct World {
    pub nodes: Vec<Node>,
    pub workers: Vec<u32>,
    pub clients: Vec<u32>,
    pub relays: Vec<u32>,
    pub by_peer: BTreeMap<PeerId, u32>,
    /// Verified announcements, as every node's table converges to them.
    pub directory: PeerTable,
    /// Per block, the workers whose latest accepted announcement covers it.
    pub providers: Vec<Vec<u32>>,
}

fn seed32(rng: &mut SimRng) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

impl World {
    /// Creates the population: relays first, then workers, then clients.
    pub fn build(rng: &mut SimRng, sc: &Scenario) -> World {
        let n = (sc.nodes.relays + sc.nodes.workers + sc.nodes.clients) as usize;
        let mut nodes = Vec::with_capacity(n);
        let (mut workers, mut clients, mut relays) = (Vec::new(), Vec::new(), Vec::new());
        let tier_w: Vec<f64> = sc.workers.tiers.iter().map(|t| t.share).collect();
        let a = &sc.adversary;
        let adv_w = [
            1.0 - a.wrong_share - a.stall_share - a.vanish_share,
            a.wrong_share,
            a.stall_share,
            a.vanish_share,
        ];
        for i in 0..n {
            let kind = if i < sc.nodes.relays as usize {
                Kind::Relay
            } else if i < (sc.nodes.relays + sc.nodes.workers) as usize {
                Kind::Worker
            } else {
                Kind::Client
            };
            // Drawn even when named, so naming regions leaves the stream unchanged.
            let drawn = dist::weighted(rng, &sc.network.region_share) as u8;
            let region = sc
                .network
                .region_of
                .get(i)
                .and_then(|r| sc.network.regions.iter().position(|x| x == r))
                .map_or(drawn, |r| r as u8);
            let nat = kind == Kind::Worker && rng.random::<f64>() < sc.network.nat_share;
            let identity = NodeIdentity::from_secrets(&seed32(rng), &seed32(rng));
            let peer = identity.peer_id();
            let channel_key = ed25519_dalek::SigningKey::from_bytes(&identity.ed25519_secret());
            let worker = (kind == Kind::Worker).then(|| {
                let wi = i - sc.nodes.relays as usize;
                let fixed_span = sc
                    .workers
                    .spans
                    .get(wi)
                    .filter(|s| s.as_str() != "auto")
                    .and_then(|s| s.parse().ok());
                let adversary = match dist::weighted(rng, &adv_w) {
                    1 => Adversary::Wrong,
                    2 => Adversary::Stall,
                    3 => Adversary::Vanish,
                    _ => Adversary::Honest,
                };
                // Drawn even when named, so naming tiers leaves the stream unchanged.
                let drawn = dist::weighted(rng, &tier_w) as u8;
                let named = sc
                    .workers
                    .tier_of
                    .get(wi)
                    .and_then(|t| sc.workers.tiers.iter().position(|x| &x.name == t));
                Box::new(Worker {
                    tier: named.map_or(drawn, |t| t as u8),
                    adversary,
                    fixed_span,
                    blocks: BlockRange::EMPTY,
                    busy_until: 0,
                    active: Vec::new(),
                    seqno: None,
                    epoch: 0,
                    online_since: 0,
                    online_us: 0,
                    completion_tokens: 0,
                    prompt_tokens: 0,
                    segments: 0,
                    faults: 0,
                    listed_until: 0,
                    visible_from: u64::MAX,
                    listed_span: BlockRange::EMPTY,
                })
            });
            let table =
                (kind == Kind::Client).then(|| Box::new(PeerTable::new(ScorePolicy::default())));
            match kind {
                Kind::Relay => relays.push(i as u32),
                Kind::Worker => workers.push(i as u32),
                Kind::Client => clients.push(i as u32),
            }
            nodes.push(Node {
                kind,
                place: Placement { region, nat },
                identity,
                channel_key,
                peer,
                online: kind != Kind::Worker,
                worker,
                table,
            });
        }
        let by_peer = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.peer, i as u32))
            .collect();
        World {
            nodes,
            workers,
            clients,
            relays,
            by_peer,
            directory: PeerTable::new(ScorePolicy::default()),
            providers: vec![Vec::new(); sc.model.n_blocks as usize],
        }
    }

    /// Moves worker `w` in the block index from its old span to `new`.
    pub fn reindex(&mut self, w: u32, old: BlockRange, new: BlockRange) {
        if old == new {
            return;
        }
        for b in old.start()..old.end() {
            if let Some(list) = self.providers.get_mut(b as usize)
                && let Some(pos) = list.iter().position(|&x| x == w)
            {
                list.swap_remove(pos);
            }
        }
        for b in new.start()..new.end() {
            if let Some(list) = self.providers.get_mut(b as usize) {
                list.push(w);
            }
        }
    }

    /// Whether a client at `now` can see worker `w`'s announcement.
    pub fn listed(&self, w: u32, now: u64) -> bool {
        let wk = self.nodes[w as usize].worker();
        wk.visible_from <= now && now < wk.listed_until
    }

    /// Up to `k` distinct listed providers of `block`, drawn at random (a provider
    /// lookup returns about Kademlia's k records).
    pub fn sample_providers(
        &self,
        rng: &mut SimRng,
        block: u32,
        k: usize,
        now: u64,
        out: &mut Vec<u32>,
    ) {
        let Some(list) = self.providers.get(block as usize) else {
            return;
        };
        if list.len() <= k {
            out.extend(list.iter().copied().filter(|&w| self.listed(w, now)));
            return;
        }
        let mut got = 0;
        for _ in 0..3 * k {
            let w = list[rng.random_range(0..list.len())];
            if self.listed(w, now) && !out.contains(&w) {
                out.push(w);
                got += 1;
                if got == k {
                    break;
                }
            }
        }
    }
}

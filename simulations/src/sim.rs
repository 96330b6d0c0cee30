//! The discrete-event loop: a time-ordered queue of events on a simulated clock (µs),
//! and the handlers that feed them to the protocol's logic — announcement signing and
//! verification, the shared view and each client's peer table, block placement, each
//! request's generation (`cocoon_protocol::client::Generation`, the node client's own
//! machine: route planning, failover decisions, replays), and payment channels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use anyhow::Context;
use cocoon_protocol::announce::{
    Announcement, Prices, VerifyPolicy, sign_announcement, verify_announcement,
};
use cocoon_protocol::channel::Usage;
use cocoon_protocol::client::{ClientPolicy, Generation};
use cocoon_protocol::failover::{FailoverPolicy, Fault};
use cocoon_protocol::peers::PeerRecord;
use cocoon_protocol::session::CipherSuite;
use cocoon_protocol::units::{BlockRange, ModelId, NanoTon, Role, SeqNo, UnixMillis};
use rand::{Rng, SeedableRng};

use crate::dist::{self, SimRng};
use crate::gossip::{Mesh, quantile};
use crate::metrics::{HopRecord, Outcome, PropagationRow, Recorder, RequestRow, RouteRecord};
use crate::net::Network;
use crate::payments::{Authorisation, ChannelBook, price_of};
use crate::planner::{Candidate, choose_span};
use crate::scenario::{FaultKind as ScriptedKind, Scenario};
use crate::world::{Adversary, Kind, World};

mod client;

/// Simulated time zero as wall-clock time for the protocol (2027-01-15).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// Time a client needs to notice a dropped connection (keep-alive), µs.
const DISCONNECT_DETECT_US: u64 = 1_000_000;
/// Time a dial to an offline worker takes to fail, µs.
const DIAL_FAIL_US: u64 = 1_000_000;

/// How a worker leaves, and so when its clients notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    /// Orderly: the keep-alive notices.
    Orderly,
    /// Silent: the stall timeout notices.
    Silent,
    /// Killed: its connections are reset, noticed after one round trip.
    Crash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    /// Request `i` of the scenario's fixed list arrives.
    Scripted {
        i: u32,
    },
    /// Fault `i` of the scenario's list strikes; `epoch` of its request for faults
    /// timed by tokens (stale after a re-plan), `u32::MAX` for faults timed in seconds.
    ScriptedFault {
        i: u32,
        epoch: u32,
    },
    Tick,
    Announce {
        w: u32,
        epoch: u32,
    },
    Leave {
        w: u32,
        epoch: u32,
        silent: bool,
    },
    Join {
        w: u32,
        epoch: u32,
    },
    HopFault {
        r: u32,
        epoch: u32,
        hop: u8,
        fault: FaultKind,
    },
    Complete {
        r: u32,
        epoch: u32,
    },
}

/// `Fault` with an order, for the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Disconnected,
    Stalled,
    WrongResult,
}

impl FaultKind {
    fn fault(self) -> Fault {
        match self {
            FaultKind::Disconnected => Fault::Disconnected,
            FaultKind::Stalled => Fault::Stalled,
            FaultKind::WrongResult => Fault::WrongResult,
        }
    }
}

#[derive(Clone, Debug)]
struct ActiveHop {
    worker: u32,
    blocks: BlockRange,
    /// Prompt positions this hop prefills in the current segment.
    prefill: u64,
    /// Generated positions replayed one call each into a replacement hop (the client
    /// replays its recorded calls with their split: the prompt at once, then one token
    /// per call).
    replay_decode: u64,
    /// Prompt positions prefilled and not yet billed.
    unbilled_prompt: u64,
    /// Wrong output not (yet) caught.
    wrong: bool,
    /// The end of the work this segment booked on the worker's queue; a segment cut
    /// short gives back what it did not use (see `detach`).
    booked_until: u64,
}

#[derive(Clone, Debug)]
struct Request {
    client: u32,
    arrival_us: u64,
    prompt: u64,
    output: u64,
    hops: Vec<ActiveHop>,
    epoch: u32,
    replans: u32,
    failovers: u32,
    /// Current segment: tokens generated before it, when its token stream starts, and
    /// the time per token.
    seg_g0: u64,
    seg_stream_us: u64,
    seg_per_token_us: f64,
    first_token_us: Option<u64>,
    done: bool,
    /// The client's generation machine, while the request runs.
    generation: Option<Generation>,
}

impl Request {
    /// Tokens generated (received by the client) by `now`.
    fn generated_at(&self, now: u64) -> u64 {
        if now < self.seg_stream_us {
            return self.seg_g0;
        }
        let n = ((now - self.seg_stream_us) as f64 / self.seg_per_token_us) as u64;
        (self.seg_g0 + n).min(self.output)
    }
}

/// Counters kept during the run and folded into the summary.
#[derive(Default, Debug)]
pub struct Counters {
    pub events: u64,
    pub arrived: u64,
    pub ok: u64,
    pub wrong: u64,
    pub failed: u64,
    pub unfinished: u64,
    pub no_route: u64,
    pub tokens_requested: u64,
    pub tokens_served: u64,
    pub tokens_failed: u64,
    pub failovers: u64,
    pub faults: [u64; 4],
    pub bans: u64,
    pub credit_refusals: u64,
    pub wrong_segments: u64,
    pub wrong_detected: u64,
    pub routed_through_banned: u64,
    /// Plans that needed sub-spans of announced spans.
    pub partial_plans: u64,
    pub ann_signed: u64,
    pub ann_verified: u64,
    pub ann_rejected: u64,
    /// Segments started, and those through adversaries, per quarter of the run.
    pub quarter_segments: [u64; 4],
    pub quarter_adversary_segments: [u64; 4],
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

/// A running simulation.
pub struct Sim {
    pub sc: Scenario,
    pub rng: SimRng,
    pub world: World,
    pub net: Network,
    pub mesh: Mesh,
    pub channels: ChannelBook,
    pub rec: Recorder,
    pub counters: Counters,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    pub now: u64,
    end_us: u64,
    requests: Vec<Request>,
    /// The client's rules with the scenario's knobs; `kv_positions` is set per request.
    policy: ClientPolicy,
    verify_policy: VerifyPolicy,
    model_id: ModelId,
    /// Delay before clients see a fresh announcement: the last sampled median.
    visibility_us: u64,
    online: Vec<bool>,
    /// Simulated request index of each scripted request, once it has arrived.
    scripted: Vec<Option<u32>>,
    /// Scripted faults that have struck.
    fault_struck: Vec<bool>,
    /// Planned routes and failovers of scripted requests, by scripted index.
    route_log: Vec<Option<RouteRecord>>,
}

fn ms(us: u64) -> UnixMillis {
    UnixMillis(EPOCH_MS + us / 1000)
}

impl Sim {
    pub fn new(sc: Scenario, seed: u64) -> anyhow::Result<Sim> {
        let mut rng = SimRng::seed_from_u64(seed);
        let world = World::build(&mut rng, &sc);
        let mesh = Mesh::build(&mut rng, world.nodes.len(), &sc.gossip);
        let net = Network::new(&sc.network);
        let policy = ClientPolicy {
            max_hops: sc.client.max_hops,
            price_cap: sc.client.price_cap.map(NanoTon),
            failover: FailoverPolicy {
                max_replans: sc.client.max_replans,
                stall_timeout_ms: sc.client.stall_timeout_ms,
                ..FailoverPolicy::default()
            },
            ..ClientPolicy::default()
        };
        let online = world.nodes.iter().map(|n| n.online).collect();
        let end_us = (sc.duration_s * 1e6) as u64;
        let channels = ChannelBook::new(sc.payments.clone());
        let mut sim = Sim {
            rng,
            world,
            net,
            mesh,
            channels,
            rec: Recorder::default(),
            counters: Counters::default(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            end_us,
            requests: Vec::new(),
            policy,
            verify_policy: VerifyPolicy::default(),
            model_id: ModelId([0x5a; 32]),
            visibility_us: 0,
            online,
            scripted: Vec::new(),
            fault_struck: Vec::new(),
            route_log: Vec::new(),
            sc,
        };
        sim.start()?;
        Ok(sim)
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Workers join in index order at time zero (staggered by a few ms so placement
    /// sees earlier joiners); under churn a worker starts offline with the stationary
    /// probability.
    fn start(&mut self) -> anyhow::Result<()> {
        let churn = self.sc.churn.clone();
        let p_online = if churn.enabled {
            churn.mean_session_s / (churn.mean_session_s + churn.mean_offline_s)
        } else {
            1.0
        };
        let workers = self.world.workers.clone();
        for (i, &w) in workers.iter().enumerate() {
            let at = i as u64 * 10;
            self.now = at;
            if self.rng.random::<f64>() < p_online {
                self.join(w, at)?;
            } else {
                let off = (dist::exp(&mut self.rng, churn.mean_offline_s) * 1e6) as u64;
                let epoch = self.world.nodes[w as usize].worker().epoch;
                self.push(at + off, Event::Join { w, epoch });
            }
        }
        if self.sc.requests.is_empty() {
            let first = self.next_arrival_gap();
            self.push(first, Event::Arrival);
        } else {
            self.scripted = vec![None; self.sc.requests.len()];
            self.route_log = vec![None; self.sc.requests.len()];
            for (i, q) in self.sc.requests.clone().iter().enumerate() {
                self.push((q.at_s * 1e6) as u64, Event::Scripted { i: i as u32 });
            }
        }
        self.fault_struck = vec![false; self.sc.faults.len()];
        for (i, f) in self.sc.faults.clone().iter().enumerate() {
            if let Some(t) = f.at_s {
                let at = (t * 1e6) as u64;
                let i = i as u32;
                self.push(at, Event::ScriptedFault { i, epoch: u32::MAX });
            }
        }
        self.push((self.sc.bin_s * 1e6) as u64, Event::Tick);
        Ok(())
    }

    fn next_arrival_gap(&mut self) -> u64 {
        let rate = self.sc.demand.as_ref().map_or(0.0, |d| d.requests_per_s);
        (dist::exp(&mut self.rng, 1.0 / rate) * 1e6) as u64
    }

    fn session_us(&mut self) -> u64 {
        let c = &self.sc.churn;
        let s = if c.session_dist == "lognormal" {
            dist::lognormal(&mut self.rng, c.mean_session_s, c.session_sigma)
        } else {
            dist::exp(&mut self.rng, c.mean_session_s)
        };
        (s * 1e6) as u64
    }

    /// Runs until the scenario's end; `progress(now_us)` is called at every tick.
    pub fn run(&mut self, mut progress: impl FnMut(u64)) -> anyhow::Result<()> {
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > self.end_us {
                break;
            }
            self.now = q.at;
            self.counters.events += 1;
            match q.event {
                Event::Arrival => self.on_arrival()?,
                Event::Scripted { i } => self.on_scripted(i)?,
                Event::ScriptedFault { i, epoch } => self.on_scripted_fault(i, epoch)?,
                Event::Tick => {
                    self.on_tick();
                    progress(self.now);
                }
                Event::Announce { w, epoch } => self.on_announce(w, epoch)?,
                Event::Leave { w, epoch, silent } => {
                    let how = if silent {
                        Departure::Silent
                    } else {
                        Departure::Orderly
                    };
                    self.on_leave(w, epoch, how, true)?
                }
                Event::Join { w, epoch } => {
                    if self.world.nodes[w as usize].worker().epoch == epoch {
                        self.join(w, self.now)?;
                    }
                }
                Event::HopFault {
                    r,
                    epoch,
                    hop,
                    fault,
                } => self.on_fault(r, epoch, hop as usize, fault.fault())?,
                Event::Complete { r, epoch } => self.on_complete(r, epoch)?,
            }
        }
        self.now = self.end_us;
        self.finish()
    }

    fn on_tick(&mut self) {
        let now = self.now;
        let online_workers = self
            .world
            .workers
            .iter()
            .filter(|&&w| self.world.nodes[w as usize].online)
            .count() as u64;
        let bin_s = self.sc.bin_s;
        // The tick closes the bin that just ended.
        self.rec.bin(now.saturating_sub(1), bin_s).online_workers = online_workers;
        self.world.directory.expire(ms(now));
        for &c in &self.world.clients {
            if let Some(t) = self.world.nodes[c as usize].table.as_deref_mut() {
                t.expire(ms(now));
            }
        }
        self.push(now + (bin_s * 1e6) as u64, Event::Tick);
    }

    // ---- workers: joining, leaving, announcing ----

    fn join(&mut self, w: u32, at: u64) -> anyhow::Result<()> {
        let n_blocks = self.sc.model.n_blocks;
        let span_len = self.sc.workers.span_blocks;
        let tps = self.tier(w).block_tokens_per_s;
        let fixed = self.world.nodes[w as usize].worker().fixed_span;
        let blocks = match fixed {
            Some(b) => b,
            None => {
                let my_milli_tps = (tps / f64::from(span_len) * 1000.0) as u64;
                let others = self.sample_listed_candidates(w, 256, at);
                choose_span(n_blocks, span_len, &others, my_milli_tps)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("placing a worker's blocks")?
            }
        };
        self.online[w as usize] = true;
        self.mesh.join(&mut self.rng, w as usize, &self.online);
        let node = &mut self.world.nodes[w as usize];
        node.online = true;
        let wk = node.worker_mut();
        wk.epoch += 1;
        wk.online_since = at;
        wk.blocks = blocks;
        let epoch = wk.epoch;
        let adversary = wk.adversary;
        self.on_announce(w, epoch)?;
        if self.sc.churn.enabled {
            let leave = at + self.session_us();
            self.push(
                leave,
                Event::Leave {
                    w,
                    epoch,
                    silent: adversary == Adversary::Vanish,
                },
            );
        }
        Ok(())
    }

    /// Candidates for placement: up to `k` listed workers other than `me`.
    fn sample_listed_candidates(&mut self, me: u32, k: usize, now: u64) -> Vec<Candidate> {
        let workers = &self.world.workers;
        let mut picked = Vec::new();
        if workers.len() <= k {
            picked.extend(workers.iter().copied());
        } else {
            for _ in 0..k {
                picked.push(workers[self.rng.random_range(0..workers.len())]);
            }
            picked.sort_unstable();
            picked.dedup();
        }
        picked
            .into_iter()
            .filter(|&w| w != me && self.world.nodes[w as usize].worker().listed_until > now)
            .filter_map(|w| self.candidate(None, w).map(|(c, _)| c))
            .collect()
    }

    fn tier(&self, w: u32) -> &crate::scenario::TierCfg {
        &self.sc.workers.tiers[self.world.nodes[w as usize].worker().tier as usize]
    }

    fn on_announce(&mut self, w: u32, epoch: u32) -> anyhow::Result<()> {
        let now = self.now;
        let node = &self.world.nodes[w as usize];
        let wk = node.worker();
        if !node.online || wk.epoch != epoch {
            return Ok(());
        }
        let tier = self.tier(w).clone();
        let used_kv: u64 = wk
            .active
            .iter()
            .map(|&r| {
                let q = &self.requests[r as usize];
                q.prompt + q.output
            })
            .sum();
        let span = wk.blocks;
        let seqno = SeqNo::next(wk.seqno, ms(now));
        let ttl_ms = (self.sc.workers.announce_ttl_s * 1000.0) as u64;
        let ann = Announcement {
            node_key: node.identity.public_key(),
            role: Role::Worker,
            model_id: Some(self.model_id),
            n_blocks: self.sc.model.n_blocks,
            blocks: span,
            prices: Prices {
                prompt: NanoTon(tier.price_prompt),
                completion: NanoTon(tier.price_completion),
            },
            throughput_milli_tps: (tier.block_tokens_per_s / f64::from(span.len().max(1)) * 1000.0)
                as u64,
            free_kv_tokens: tier.kv_tokens.saturating_sub(used_kv),
            noise_static_key: node.identity.noise_public_key(),
            ton_wallet: String::new(),
            listen_addrs: Vec::new(),
            seqno,
            issued_at: ms(now),
            expires_at: ms(now).plus_ms(ttl_ms),
            // Simulated workers offer both suites; the announcement's size counts them.
            cipher_suites: CipherSuite::offered(true),
        };
        let bytes = sign_announcement(&node.identity, &ann);
        self.counters.ann_signed += 1;
        let dir = &self.world.directory;
        match verify_announcement(&bytes, ms(now), &self.verify_policy, |p| dir.last_seqno(p)) {
            Ok(ann) => {
                self.counters.ann_verified += 1;
                let old = self.world.nodes[w as usize].worker().listed_span;
                self.world.directory.record_announcement(ann, ms(now));
                self.world.reindex(w, old, span);
                let wk = self.world.nodes[w as usize].worker_mut();
                wk.seqno = Some(seqno);
                wk.listed_until = now + ttl_ms * 1000;
                wk.listed_span = span;
                if wk.visible_from == u64::MAX || old != span {
                    wk.visible_from = now + self.visibility_us;
                }
            }
            Err(why) => {
                self.counters.ann_rejected += 1;
                let peer = self.world.nodes[w as usize].peer;
                self.world.directory.record_rejection(peer, &why, ms(now));
            }
        }
        let bin_s = self.sc.bin_s;
        self.rec.bin(now, bin_s).announcements += 1;
        if self.counters.ann_signed % u64::from(self.sc.gossip.sample_every) == 1
            || self.sc.gossip.sample_every == 1
        {
            self.sample_propagation(w);
        }
        let next = now + (self.sc.workers.announce_interval_s * 1e6) as u64;
        self.push(next, Event::Announce { w, epoch });
        Ok(())
    }

    fn sample_propagation(&mut self, origin: u32) {
        let validate = self.sc.gossip.validate_us;
        let bytes = 400;
        let (nodes, net, rng) = (&self.world.nodes, &self.net, &mut self.rng);
        let p = self.mesh.propagate(origin as usize, &self.online, |a, b| {
            net.one_way_us(rng, nodes[a].place, nodes[b].place, bytes) + validate
        });
        let row = PropagationRow {
            t_s: self.now as f64 / 1e6,
            origin,
            reached: p.delays_us.len(),
            unreached: p.unreached,
            p50_ms: p.quantile_us(0.5) / 1000.0,
            p90_ms: p.quantile_us(0.9) / 1000.0,
            p99_ms: p.quantile_us(0.99) / 1000.0,
            max_ms: p.quantile_us(1.0) / 1000.0,
        };
        self.visibility_us = p.quantile_us(0.5) as u64;
        self.rec.propagation.push(row);
    }

    /// Worker `w` goes offline; its sessions fail over once their clients notice; it
    /// comes back after an offline spell when `rejoin`.
    fn on_leave(&mut self, w: u32, epoch: u32, how: Departure, rejoin: bool) -> anyhow::Result<()> {
        let now = self.now;
        let node = &mut self.world.nodes[w as usize];
        if !node.online || node.worker().epoch != epoch {
            return Ok(());
        }
        node.online = false;
        let wk = node.worker_mut();
        wk.epoch += 1;
        wk.online_us += now - wk.online_since;
        let epoch = wk.epoch;
        let active = std::mem::take(&mut wk.active);
        self.online[w as usize] = false;
        self.mesh.repair(&mut self.rng, w as usize, &self.online);
        let wplace = self.world.nodes[w as usize].place;
        for r in active {
            let req = &self.requests[r as usize];
            if req.done {
                continue;
            }
            let detect = match how {
                Departure::Silent => self.sc.client.stall_timeout_ms * 1000,
                Departure::Orderly => DISCONNECT_DETECT_US,
                Departure::Crash => {
                    let cplace = self.world.nodes[req.client as usize].place;
                    self.net.rtt_us(cplace, wplace) as u64
                }
            };
            if let Some(hop) = req.hops.iter().position(|h| h.worker == w) {
                let e = req.epoch;
                self.push(
                    now + detect,
                    Event::HopFault {
                        r,
                        epoch: e,
                        hop: hop as u8,
                        fault: FaultKind::Disconnected,
                    },
                );
            }
        }
        if rejoin {
            let off_mean = self.sc.churn.mean_offline_s;
            let back = now + (dist::exp(&mut self.rng, off_mean) * 1e6) as u64;
            self.push(back, Event::Join { w, epoch });
        }
        Ok(())
    }

    /// A scripted fault strikes: its worker goes away for good.
    fn on_scripted_fault(&mut self, i: u32, epoch: u32) -> anyhow::Result<()> {
        let f = self.sc.faults[i as usize].clone();
        if self.fault_struck[i as usize] {
            return Ok(());
        }
        if let Some(r) = f.request.and_then(|q| self.scripted[q as usize])
            && self.requests[r as usize].epoch != epoch
        {
            return Ok(());
        }
        self.fault_struck[i as usize] = true;
        let w = self.world.workers[f.worker as usize];
        let node = &self.world.nodes[w as usize];
        if !node.online {
            return Ok(());
        }
        let how = match f.kind {
            ScriptedKind::Crash => Departure::Crash,
            ScriptedKind::Vanish => Departure::Silent,
            ScriptedKind::Leave => Departure::Orderly,
        };
        let epoch = node.worker().epoch;
        self.on_leave(w, epoch, how, false)
    }

    /// Schedules the faults timed by request `r`'s tokens that fall in its current
    /// segment.
    fn schedule_token_faults(&mut self, r: u32) {
        let Some(i) = self.scripted.iter().position(|&x| x == Some(r)) else {
            return;
        };
        let q = &self.requests[r as usize];
        let mut due = Vec::new();
        for (fi, f) in self.sc.faults.iter().enumerate() {
            if self.fault_struck[fi] || f.request != Some(i as u32) {
                continue;
            }
            let Some(k) = f.after_tokens else { continue };
            if k > q.seg_g0 && k <= q.output {
                let at = q.seg_stream_us as f64 + (k - q.seg_g0) as f64 * q.seg_per_token_us;
                due.push((at.ceil() as u64, fi as u32, q.epoch));
            }
        }
        for (at, i, epoch) in due {
            self.push(at, Event::ScriptedFault { i, epoch });
        }
    }

    // ---- clients: requests, routes, failover ----

    fn on_arrival(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        let gap = self.next_arrival_gap();
        self.push(now + gap, Event::Arrival);
        let clients = &self.world.clients;
        let client = clients[self.rng.random_range(0..clients.len())];
        let d = self.sc.demand.clone().expect("arrivals come from [demand]");
        let len = |rng: &mut SimRng, mean, sigma| {
            (dist::lognormal(rng, mean, sigma).round() as u64).clamp(1, d.max_tokens)
        };
        let prompt = len(&mut self.rng, d.prompt_mean, d.prompt_sigma);
        let output = len(&mut self.rng, d.output_mean, d.output_sigma);
        self.admit(client, prompt, output).map(|_| ())
    }

    /// Request `i` of the fixed list arrives.
    fn on_scripted(&mut self, i: u32) -> anyhow::Result<()> {
        let q = self.sc.requests[i as usize].clone();
        let client = self.world.clients[q.client as usize];
        let r = self.requests.len() as u32;
        self.scripted[i as usize] = Some(r);
        self.admit(client, q.prompt_tokens, q.output_tokens)?;
        let planned = self.hop_records(r, 0);
        self.route_log[i as usize] = Some(RouteRecord {
            request: i,
            planned,
            failovers: Vec::new(),
            final_route: Vec::new(),
            served_tokens: 0,
            ttft_ms: f64::NAN,
            per_token_ms: f64::NAN,
            total_ms: f64::NAN,
        });
        Ok(())
    }

    /// Request `r`'s hops from index `from` on, as (worker index, blocks).
    fn hop_records(&self, r: u32, from: usize) -> Vec<HopRecord> {
        self.requests[r as usize].hops[from..]
            .iter()
            .map(|h| HopRecord {
                worker: self.worker_index(h.worker),
                blocks: h.blocks.to_string(),
            })
            .collect()
    }

    /// A worker's index in the order of `workers.spans`.
    fn worker_index(&self, node: u32) -> u32 {
        self.world
            .workers
            .iter()
            .position(|&w| w == node)
            .unwrap_or(0) as u32
    }

    /// The route log of request `r`, if it is a scripted one.
    fn route_log_of(&mut self, r: u32) -> Option<&mut RouteRecord> {
        let i = self.scripted.iter().position(|&x| x == Some(r))?;
        self.route_log[i].as_mut()
    }

    /// The candidate built from worker `w`'s verified announcement, as `client` sees it
    /// (its own score and measured RTT), and whether the client has banned it; `None`
    /// if the view holds no announcement.
    fn candidate(&self, client: Option<u32>, w: u32) -> Option<(Candidate, bool)> {
        let node = &self.world.nodes[w as usize];
        let rec = self.world.directory.get(&node.peer)?;
        let ann = rec.announcement.as_ref()?;
        let (rtt_us, score, banned) = match client {
            Some(c) => {
                let cn = &self.world.nodes[c as usize];
                let table = cn.table.as_deref().expect("clients have tables");
                let mine = table.get(&node.peer);
                let rtt = mine
                    .and_then(PeerRecord::path_rtt_us)
                    .unwrap_or_else(|| self.net.rtt_us(cn.place, node.place) as u64);
                let score = mine.map_or(0.0, |r| table.score_of(r));
                let banned = mine
                    .and_then(|r| r.banned_until)
                    .is_some_and(|u| u > ms(self.now));
                (rtt, score, banned)
            }
            None => (0, 0.0, false),
        };
        Some((
            Candidate {
                peer: node.peer,
                blocks: ann.blocks,
                throughput_milli_tps: ann.throughput_milli_tps,
                prices: ann.prices,
                free_kv_tokens: ann.free_kv_tokens,
                rtt_us,
                queued_requests: node.worker().active.len() as u32,
                score,
            },
            banned,
        ))
    }

    fn quarter(&self) -> usize {
        ((self.now as f64 / self.end_us.max(1) as f64 * 4.0) as usize).min(3)
    }

    /// Starts generating on the request's current route from where it stands: queueing
    /// at each worker, handshakes with new hops, prefill or replay, then the token
    /// stream; schedules its completion or its first fault.
    ///
    /// As in the real client, the first token comes out of the prefill (the logits of
    /// the last prompt position), and every token costs the client's head once; after a
    /// failover the token in flight resumes once the replay is done.
    fn start_segment(&mut self, r: u32) -> anyhow::Result<()> {
        let now = self.now;
        let hidden = self.sc.model.hidden_bytes;
        let prefill_factor = self.sc.workers.prefill_factor;
        let head_us = self.sc.client.head_ms_per_token * 1000.0;
        let open_us = self.sc.client.open_ms_per_hop * 1000.0;
        let (client, g0, output) = {
            let q = &self.requests[r as usize];
            (q.client, q.generated_at(now).max(q.seg_g0), q.output)
        };
        let remaining = output - g0;
        let cplace = self.world.nodes[client as usize].place;
        let hops = self.requests[r as usize].hops.clone();
        let mut wait = 0u64;
        let mut handshake = 0.0f64;
        let mut prefill_us = 0.0;
        let mut per_token = 0.0;
        let mut rtt_sum = 0.0;
        let mut prev = cplace;
        let quarter = self.quarter();
        let mut through_adversary = false;
        let mut fault: Option<(u64, usize, FaultKind)> = None;
        let mut caught: Option<usize> = None;
        let earliest = |f: &mut Option<(u64, usize, FaultKind)>, at: u64, i, k| {
            if f.is_none_or(|(t, _, _)| at < t) {
                *f = Some((at, i, k));
            }
        };
        for (i, h) in hops.iter().enumerate() {
            let node = &self.world.nodes[h.worker as usize];
            let place = node.place;
            let online = node.online;
            let rtt = self.net.rtt_us(cplace, place);
            if h.prefill > 0 {
                // A new hop: opened after the previous one, as the real client does.
                handshake += 2.0 * rtt + open_us;
            }
            let cost_per_block = 1e6 / self.tier(h.worker).block_tokens_per_s;
            let hop_token = cost_per_block * f64::from(h.blocks.len());
            let link = self.net.one_way_us(&mut self.rng, prev, place, hidden);
            let link_prefill =
                self.net
                    .one_way_us(&mut self.rng, prev, place, hidden * h.prefill.max(1));
            let replay = h.replay_decode as f64 * (hop_token + 2.0 * link);
            prefill_us += h.prefill as f64 * hop_token * prefill_factor + link_prefill + replay;
            per_token += hop_token + link;
            rtt_sum += rtt;
            prev = place;
            let wk = self.world.nodes[h.worker as usize].worker_mut();
            let work =
                ((h.prefill as f64 * prefill_factor + h.replay_decode as f64 + remaining as f64)
                    * hop_token) as u64;
            let start = wk.busy_until.max(now);
            wait = wait.max(start - now);
            wk.busy_until = start + work;
            let booked_until = wk.busy_until;
            wk.segments += 1;
            let adversary = wk.adversary;
            self.requests[r as usize].hops[i].booked_until = booked_until;
            if !online {
                earliest(&mut fault, now + DIAL_FAIL_US, i, FaultKind::Disconnected);
                continue;
            }
            if !wk.active.contains(&r) {
                wk.active.push(r);
            }
            if adversary != Adversary::Honest {
                through_adversary = true;
            }
            match adversary {
                Adversary::Stall => earliest(
                    &mut fault,
                    now + self.sc.client.stall_timeout_ms * 1000,
                    i,
                    FaultKind::Stalled,
                ),
                Adversary::Wrong => {
                    self.counters.wrong_segments += 1;
                    if self.rng.random::<f64>() < self.sc.client.spot_check {
                        self.counters.wrong_detected += 1;
                        // The spot-check of the first token disagrees: known once the
                        // first token is back.
                        caught = caught.or(Some(i));
                    } else {
                        self.requests[r as usize].hops[i].wrong = true;
                    }
                }
                _ => {}
            }
        }
        let last = self.net.one_way_us(&mut self.rng, prev, cplace, hidden);
        per_token += last + head_us;
        let n_links = hops.len() as u64 + 1;
        let loss =
            self.net
                .loss_delay_us(&mut self.rng, remaining * n_links, rtt_sum / n_links as f64);
        let ready = now + wait + (handshake + prefill_us) as u64;
        // A fresh request's first token is the prefill's output, back at the client
        // through its head; a resumed one waits one token step.
        let first = if g0 == 0 {
            let back = self.net.one_way_us(&mut self.rng, prev, cplace, hidden);
            ready + (back + head_us) as u64
        } else {
            ready + per_token as u64
        };
        // Token g0 + n (n >= 1) arrives at stream + n × per_token.
        let stream = first.saturating_sub(per_token as u64);
        let end = first + ((remaining.saturating_sub(1)) as f64 * per_token + loss) as u64;
        if let Some(i) = caught {
            earliest(&mut fault, first, i, FaultKind::WrongResult);
        }
        self.counters.quarter_segments[quarter] += 1;
        if through_adversary {
            self.counters.quarter_adversary_segments[quarter] += 1;
        }
        // Vanishers drop out somewhere inside the segment.
        for h in &hops {
            let wk = self.world.nodes[h.worker as usize].worker();
            if wk.adversary == Adversary::Vanish
                && self.world.nodes[h.worker as usize].online
                && self.rng.random::<f64>() < self.sc.adversary.vanish_per_request
            {
                let at = now + self.rng.random_range(0..=(end - now).max(1));
                let epoch = wk.epoch;
                self.push(
                    at,
                    Event::Leave {
                        w: h.worker,
                        epoch,
                        silent: true,
                    },
                );
            }
        }
        let q = &mut self.requests[r as usize];
        q.epoch += 1;
        q.seg_g0 = g0;
        q.seg_stream_us = stream;
        q.seg_per_token_us = per_token.max(1.0);
        if q.first_token_us.is_none() && fault.is_none_or(|(t, _, _)| t > first) {
            q.first_token_us = Some(first);
        }
        for h in &mut q.hops {
            h.unbilled_prompt += h.prefill;
            h.prefill = 0;
            h.replay_decode = 0;
        }
        let epoch = q.epoch;
        match fault {
            Some((at, hop, kind)) => {
                self.push(
                    at,
                    Event::HopFault {
                        r,
                        epoch,
                        hop: hop as u8,
                        fault: kind,
                    },
                );
            }
            None => self.push(end, Event::Complete { r, epoch }),
        }
        self.schedule_token_faults(r);
        Ok(())
    }

    /// Pays for what each hop computed in the segment that just ended (up to `g` tokens)
    /// and counts it; a hop caught returning wrong results is not paid.
    fn settle_segment(&mut self, r: u32, g: u64, unpaid_hop: Option<usize>) -> anyhow::Result<()> {
        let q = &self.requests[r as usize];
        let client = q.client;
        let completion = g.saturating_sub(q.seg_g0);
        let hops: Vec<(u32, u64)> = q
            .hops
            .iter()
            .map(|h| (h.worker, h.unbilled_prompt))
            .collect();
        for (i, (w, unbilled)) in hops.iter().enumerate() {
            if completion == 0 {
                break;
            }
            self.requests[r as usize].hops[i].unbilled_prompt = 0;
            let usage = Usage {
                prompt_tokens: *unbilled,
                completion_tokens: completion,
            };
            let tier = self.tier(*w).clone();
            let price = price_of(tier.price_prompt, tier.price_completion);
            let wk = self.world.nodes[*w as usize].worker_mut();
            wk.completion_tokens += completion;
            wk.prompt_tokens += usage.prompt_tokens;
            let keys = || {
                (
                    self.world.nodes[client as usize].channel_key.clone(),
                    self.world.nodes[*w as usize].channel_key.clone(),
                )
            };
            let auth = self.channels.authorise(client, *w, keys, price, usage)?;
            if auth == Authorisation::Refused {
                self.counters.credit_refusals += 1;
            }
            if unpaid_hop != Some(i) {
                self.channels.record_served(client, *w, usage)?;
            }
        }
        Ok(())
    }

    /// The request leaves its hops' workers (done, or its segment cut short by a fault).
    /// A worker whose queue ends with this segment's booking stops computing for it now,
    /// so that a replan onto the same worker (the hops after a failed one are re-opened)
    /// does not wait for tokens that will never be computed. A booking with others
    /// queued behind it is left as it is.
    fn detach(&mut self, r: u32) {
        let now = self.now;
        let hops: Vec<(u32, u64)> = self.requests[r as usize]
            .hops
            .iter()
            .map(|h| (h.worker, h.booked_until))
            .collect();
        for (w, booked_until) in hops {
            let wk = self.world.nodes[w as usize].worker_mut();
            if let Some(p) = wk.active.iter().position(|&x| x == r) {
                wk.active.swap_remove(p);
            }
            if wk.busy_until == booked_until {
                wk.busy_until = booked_until.min(now);
            }
        }
    }

    /// Files a request's row, and its route log when it is a scripted one.
    fn push_row(&mut self, r: u32, row: RequestRow) {
        let final_route = self.hop_records(r, 0);
        if let Some(log) = self.route_log_of(r) {
            log.final_route = final_route;
            log.served_tokens = row.served_tokens;
            log.ttft_ms = row.ttft_ms;
            log.per_token_ms = row.per_token_ms;
            log.total_ms = row.total_ms;
        }
        self.rec.requests.push(row);
    }

    fn fail(&mut self, r: u32, served: u64) {
        self.end_request(r, served, Outcome::Failed);
    }

    /// Records a request that did not complete: failed, or unfinished at the end.
    fn end_request(&mut self, r: u32, served: u64, outcome: Outcome) {
        let now = self.now;
        let q = &mut self.requests[r as usize];
        q.done = true;
        q.generation = None;
        if outcome == Outcome::Failed {
            self.counters.failed += 1;
        } else {
            self.counters.unfinished += 1;
        }
        self.counters.tokens_served += served;
        self.counters.tokens_failed += q.output - served;
        let bin_s = self.sc.bin_s;
        let row = self.row(r, outcome, served);
        self.push_row(r, row);
        let b = self.rec.bin(now.min(self.end_us.saturating_sub(1)), bin_s);
        if outcome == Outcome::Failed {
            b.failed += 1;
        }
        b.tokens += served;
    }

    fn row(&self, r: u32, outcome: Outcome, served: u64) -> RequestRow {
        let q = &self.requests[r as usize];
        let total = (self.now - q.arrival_us) as f64 / 1000.0;
        let ttft = q
            .first_token_us
            .filter(|&t| t <= self.now)
            .map_or(f64::NAN, |t| (t - q.arrival_us) as f64 / 1000.0);
        let per_token = if served > 1 && ttft.is_finite() {
            (total - ttft) / (served - 1) as f64
        } else {
            f64::NAN
        };
        RequestRow {
            id: r,
            client: q.client,
            arrival_s: q.arrival_us as f64 / 1e6,
            outcome,
            prompt_tokens: q.prompt,
            output_tokens: q.output,
            served_tokens: served,
            hops: q.hops.len(),
            failovers: q.failovers,
            ttft_ms: ttft,
            per_token_ms: per_token,
            total_ms: total,
        }
    }

    fn on_complete(&mut self, r: u32, epoch: u32) -> anyhow::Result<()> {
        let now = self.now;
        let q = &self.requests[r as usize];
        if q.done || q.epoch != epoch {
            return Ok(());
        }
        let output = q.output;
        let wrong = q.hops.iter().any(|h| h.wrong);
        // The client measured each hop's RTT during the session.
        let client = q.client;
        let hop_workers: Vec<u32> = q.hops.iter().map(|h| h.worker).collect();
        self.settle_segment(r, output, None)?;
        self.detach(r);
        let cplace = self.world.nodes[client as usize].place;
        for w in hop_workers {
            let node = &self.world.nodes[w as usize];
            let rtt = self.net.rtt_us(cplace, node.place) as u64;
            let peer = node.peer;
            if let Some(t) = self.world.nodes[client as usize].table.as_deref_mut() {
                t.record_rtt(peer, rtt, ms(now));
            }
        }
        let outcome = if wrong { Outcome::Wrong } else { Outcome::Ok };
        let row = self.row(r, outcome, output);
        self.push_row(r, row);
        self.requests[r as usize].done = true;
        self.requests[r as usize].generation = None;
        if wrong {
            self.counters.wrong += 1;
        } else {
            self.counters.ok += 1;
        }
        self.counters.tokens_served += output;
        let bin_s = self.sc.bin_s;
        let b = self.rec.bin(now, bin_s);
        b.completed += 1;
        b.tokens += output;
        Ok(())
    }

    /// Ends the run: requests still in flight fail with what they generated, channels
    /// are settled, online time is closed.
    fn finish(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        for r in 0..self.requests.len() as u32 {
            if self.requests[r as usize].done {
                continue;
            }
            let g = self.requests[r as usize].generated_at(now);
            if !self.requests[r as usize].hops.is_empty() {
                self.settle_segment(r, g, None)?;
            }
            self.detach(r);
            self.end_request(r, g, Outcome::Unfinished);
        }
        self.channels.settle_all()?;
        self.rec.routes = self.route_log.iter().flatten().cloned().collect();
        for &w in &self.world.workers {
            let node = &mut self.world.nodes[w as usize];
            if node.online {
                let wk = node.worker_mut();
                wk.online_us += now - wk.online_since;
            }
        }
        // Close the last bin's online count.
        let online = self
            .world
            .workers
            .iter()
            .filter(|&&w| self.world.nodes[w as usize].online)
            .count() as u64;
        let bin_s = self.sc.bin_s;
        self.rec.bin(now.saturating_sub(1), bin_s).online_workers = online;
        Ok(())
    }

    /// Share of requests' completion-token latencies, for the summary.
    pub fn latencies(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut ttft = Vec::new();
        let mut per = Vec::new();
        let mut total = Vec::new();
        for r in &self.rec.requests {
            if matches!(r.outcome, Outcome::Failed | Outcome::Unfinished) {
                continue;
            }
            if r.ttft_ms.is_finite() {
                ttft.push(r.ttft_ms);
            }
            if r.per_token_ms.is_finite() {
                per.push(r.per_token_ms);
            }
            total.push(r.total_ms);
        }
        for v in [&mut ttft, &mut per, &mut total] {
            v.sort_by(f64::total_cmp);
        }
        (ttft, per, total)
    }

    pub fn kind_count(&self, k: Kind) -> u64 {
        self.world.nodes.iter().filter(|n| n.kind == k).count() as u64
    }

    pub fn end_us(&self) -> u64 {
        self.end_us
    }
}

/// Median and 99th percentile of sorted values.
pub fn p50_p99(v: &[f64]) -> (f64, f64) {
    (quantile(v, 0.5), quantile(v, 0.99))
}

fn fault_name(f: Fault) -> &'static str {
    match f {
        Fault::Disconnected => "disconnected",
        Fault::Stalled => "stalled",
        Fault::WrongResult => "wrong_result",
        Fault::Refused => "refused",
    }
}

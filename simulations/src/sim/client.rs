//! The simulated clients' side of a request: each request's
//! `cocoon_protocol::client::Generation` (the node client's own machine) driven on the
//! simulated clock: candidates sampled from the provider records, faults charged to the
//! client's peer table, the route it plans turned into hops to queue and time, and the
//! calls it records for replays counted from the tokens streamed.

use anyhow::Context;
use cocoon_protocol::client::{Action, Call, ClientPolicy, Generation};
use cocoon_protocol::failover::{self, Fault};
use cocoon_protocol::peers::BanAction;
use cocoon_protocol::units::BlockRange;

use super::{ActiveHop, Request, Sim, fault_name, ms};
use crate::metrics::FailoverRecord;
use crate::planner::Candidate;

/// Where driving a request's generation ended.
pub(super) enum Driven {
    /// Its route is open: hops from `from_hop` on are new, each fed the prompt and
    /// `replay_decode` single-token calls.
    Routed { from_hop: usize, replay_decode: u64 },
    /// It gave up: no route, or the re-plan budget spent.
    GaveUp,
}

impl Sim {
    /// A request arrives at `client`: plans its route and starts it.
    pub(super) fn admit(&mut self, client: u32, prompt: u64, output: u64) -> anyhow::Result<u32> {
        let now = self.now;
        let r = self.requests.len() as u32;
        self.requests.push(Request {
            client,
            arrival_us: now,
            prompt,
            output,
            hops: Vec::new(),
            epoch: 0,
            replans: 0,
            failovers: 0,
            seg_g0: 0,
            seg_stream_us: now,
            seg_per_token_us: 1.0,
            first_token_us: None,
            done: false,
            generation: None,
        });
        self.counters.arrived += 1;
        self.counters.tokens_requested += output;
        let whole = BlockRange::new(0, self.sc.model.n_blocks).expect("0 <= n");
        let policy = ClientPolicy {
            kv_positions: prompt + output,
            ..self.policy
        };
        self.requests[r as usize].generation = Some(Generation::new(policy, whole));
        match self.drive(r)? {
            Driven::Routed { .. } => {
                // The prompt's call is in flight for the first segment.
                let prompt_call = Call {
                    start_pos: 0,
                    rows: u32::try_from(prompt).context("prompt length")?,
                };
                let generation = self.generation(r)?;
                generation.forward(prompt_call)?;
                // The call streams through the whole route in the segment.
                while generation.poll_action().is_some() {}
                self.requests[r as usize].hops = self.new_hops(r, 0, 0);
                self.start_segment(r)?;
            }
            Driven::GaveUp => {
                self.counters.no_route += 1;
                self.fail(r, 0);
            }
        }
        Ok(r)
    }

    pub(super) fn generation(&mut self, r: u32) -> anyhow::Result<&mut Generation> {
        self.requests[r as usize]
            .generation
            .as_mut()
            .context("a running request has its generation")
    }

    /// Request `r`'s generation's hops from index `from` on, as new hops of the
    /// request (each prefills the prompt and replays `replay_decode` single-token calls).
    pub(super) fn new_hops(&self, r: u32, from: usize, replay_decode: u64) -> Vec<ActiveHop> {
        let q = &self.requests[r as usize];
        let route = q.generation.as_ref().map_or(&[][..], |g| g.route());
        route[from.min(route.len())..]
            .iter()
            .map(|h| ActiveHop {
                worker: self.world.by_peer[&h.peer],
                blocks: h.blocks,
                prefill: q.prompt,
                replay_decode,
                unbilled_prompt: 0,
                wrong: false,
                booked_until: 0,
            })
            .collect()
    }

    /// Carries out request `r`'s generation's actions until its route is open or it
    /// gives up: candidates sampled from the provider records, faults charged to the
    /// client's table, hops opened at once (a dial to an offline worker fails later, in
    /// `start_segment`) and replays done (their cost is the segment's).
    pub(super) fn drive(&mut self, r: u32) -> anyhow::Result<Driven> {
        let client = self.requests[r as usize].client;
        let mut generation = self.requests[r as usize]
            .generation
            .take()
            .context("a running request has its generation")?;
        let mut from_hop = 0;
        let mut rerouted = false;
        let mut replay_decode = 0;
        let driven = loop {
            let Some(action) = generation.poll_action() else {
                anyhow::bail!("request {r}'s generation stopped without an answer");
            };
            match action {
                Action::NeedCandidates { blocks } => {
                    let cands = self.candidates_for(client, blocks);
                    generation.candidates(&cands)?;
                }
                Action::Planned { hops, partial, .. } => {
                    if partial {
                        self.counters.partial_plans += 1;
                    }
                    let table = self.world.nodes[client as usize]
                        .table
                        .as_deref()
                        .expect("clients have tables");
                    let now = ms(self.now);
                    let banned = hops.iter().filter(|h| table.is_banned(&h.peer, now));
                    self.counters.routed_through_banned += banned.count() as u64;
                }
                Action::Charge { peer, fault, at } => {
                    let table = self.world.nodes[client as usize]
                        .table
                        .as_deref_mut()
                        .expect("clients have tables");
                    let ban = failover::charge(&self.policy.failover, table, peer, fault, at);
                    if matches!(ban, Some(BanAction::Ban { .. })) {
                        self.counters.bans += 1;
                        let bin_s = self.sc.bin_s;
                        self.rec.bin(self.now, bin_s).bans += 1;
                    }
                }
                Action::Open { hop, .. } => generation.hop_opened(hop)?,
                Action::Replay { hop, calls, .. } => {
                    // The prompt's call, then single tokens.
                    replay_decode = calls.len().saturating_sub(1) as u64;
                    generation.hop_answered(hop)?;
                }
                Action::Rerouted { from_hop: f } => {
                    from_hop = f;
                    rerouted = true;
                }
                Action::Ready => {
                    break Driven::Routed {
                        from_hop,
                        replay_decode,
                    };
                }
                // The call in flight streams through the whole route in the segment. After
                // a reroute the new hops start at the reroute's hop, whichever hop the
                // machine resumes the call at (the simulator never reports a call
                // answered hop by hop, so that is the route's first).
                Action::Forward { hop, .. } => {
                    break Driven::Routed {
                        from_hop: if rerouted { from_hop } else { hop },
                        replay_decode,
                    };
                }
                Action::Close { .. } | Action::CallDone { .. } => {}
                Action::GiveUp { .. } => break Driven::GaveUp,
            }
        };
        self.requests[r as usize].generation = Some(generation);
        Ok(driven)
    }

    /// Looks up providers of `blocks` and builds the candidates `client` sees (its own
    /// RTT and score), leaving out the workers it has banned.
    pub(super) fn candidates_for(&mut self, client: u32, blocks: BlockRange) -> Vec<Candidate> {
        let now = self.now;
        let k = self.sc.client.providers_per_block;
        let stride = self.sc.client.lookup_stride;
        let mut ws = Vec::new();
        let mut b = blocks.start();
        while b < blocks.end() {
            self.world
                .sample_providers(&mut self.rng, b, k, now, &mut ws);
            b += stride;
        }
        if !blocks.is_empty() {
            self.world
                .sample_providers(&mut self.rng, blocks.end() - 1, k, now, &mut ws);
        }
        ws.sort_unstable();
        ws.dedup();
        ws.iter()
            .filter_map(|&w| self.candidate(Some(client), w))
            .filter(|(_, banned)| !banned)
            .map(|(c, _)| c)
            .collect()
    }

    pub(super) fn on_fault(
        &mut self,
        r: u32,
        epoch: u32,
        hop: usize,
        fault: Fault,
    ) -> anyhow::Result<()> {
        let now = self.now;
        let q = &self.requests[r as usize];
        if q.done || q.epoch != epoch || hop >= q.hops.len() {
            return Ok(());
        }
        let g = match fault {
            Fault::Stalled => q.seg_g0,
            _ => q.generated_at(now),
        };
        let failed = q.hops[hop].clone();
        let unpaid = (fault == Fault::WrongResult).then_some(hop);
        self.settle_segment(r, g, unpaid)?;
        self.detach(r);
        let fi = match fault {
            Fault::Disconnected => 0,
            Fault::Stalled => 1,
            Fault::WrongResult => 2,
            Fault::Refused => 3,
        };
        self.counters.faults[fi] += 1;
        self.world.nodes[failed.worker as usize].worker_mut().faults += 1;
        self.requests[r as usize].seg_g0 = g;
        self.requests[r as usize].seg_stream_us = now;
        // The client's record: the prompt's call, then one call per token, the one
        // feeding token `g` in flight when the hop failed.
        self.record_calls(r, g)?;
        self.generation(r)?.hop_failed(hop, fault, ms(now))?;
        match self.drive(r)? {
            Driven::Routed {
                from_hop,
                replay_decode,
            } => {
                let bin_s = self.sc.bin_s;
                self.counters.failovers += 1;
                self.rec.bin(now, bin_s).failovers += 1;
                let replacement = self.new_hops(r, from_hop, replay_decode);
                let q = &mut self.requests[r as usize];
                q.replans += 1;
                q.failovers += 1;
                q.hops.splice(from_hop.., replacement);
                let replaced_by = self.hop_records(r, from_hop);
                let record = FailoverRecord {
                    worker: self.worker_index(failed.worker),
                    blocks: failed.blocks.to_string(),
                    fault: fault_name(fault),
                    at_token: g,
                    replaced_by,
                };
                if let Some(log) = self.route_log_of(r) {
                    log.failovers.push(record);
                }
                self.start_segment(r)
            }
            Driven::GaveUp => {
                self.fail(r, g);
                Ok(())
            }
        }
    }

    /// Brings request `r`'s recorded calls up to `g` tokens received: one single-token
    /// call per token (the last in flight), after the prompt's.
    pub(super) fn record_calls(&mut self, r: u32, g: u64) -> anyhow::Result<()> {
        let prompt = self.requests[r as usize].prompt;
        let generation = self.generation(r)?;
        while let Some(last) = generation.calls().last().copied() {
            let next = u64::from(last.start_pos) + u64::from(last.rows);
            if g == 0 || next >= prompt + g {
                break;
            }
            generation.call_done()?;
            let start_pos = u32::try_from(next).context("position")?;
            generation.forward(Call { start_pos, rows: 1 })?;
        }
        // Nothing to do for the streamed calls' per-hop actions.
        while generation.poll_action().is_some() {}
        Ok(())
    }
}

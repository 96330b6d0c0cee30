//! [`Generation`]: one request's route, failovers and recorded calls, as inputs in and
//! [`Action`]s out (see the module above for the re-plan rule).

use std::collections::VecDeque;

use crate::PeerId;
use crate::failover::{self, FailedHop, FailoverDecision, Fault};
use crate::route::{Candidate, Hop, RouteError};
use crate::units::{BlockRange, UnixMillis};

use super::policy::ClientPolicy;

/// One forward call of the generation: `rows` positions from `start_pos` (the prompt in
/// one call, then one token per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub start_pos: u32,
    pub rows: u32,
}

/// What the driver must do next, in the order polled.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Give route candidates for `blocks` ([`Generation::candidates`]); excluded and
    /// low-scored peers may be among them, the planner skips them.
    NeedCandidates { blocks: BlockRange },
    /// A route was planned for hops from index `from_hop` (opened next, in order).
    Planned {
        from_hop: usize,
        hops: Vec<Hop>,
        partial: bool,
    },
    /// Charge `fault` to `peer` in the driver's peer table at `at` (`failover::charge`
    /// with the policy's `failover`), applying any ban.
    Charge {
        peer: PeerId,
        fault: Fault,
        at: UnixMillis,
    },
    /// End the sessions of hops from index `from_hop` on (live or being opened): they
    /// are replaced.
    Close { from_hop: usize },
    /// Open a session to `peer` for `blocks`, as hop `hop`; answer with
    /// [`Generation::hop_opened`] or [`Generation::hop_failed`].
    Open {
        hop: usize,
        peer: PeerId,
        blocks: BlockRange,
    },
    /// Feed hop `hop` the recorded `calls` in order, with the hidden states recorded at
    /// block `boundary` (its first); its outputs are what its last block's boundary saw.
    /// Answer with [`Generation::hop_answered`] once all are back.
    Replay {
        hop: usize,
        boundary: u32,
        calls: Vec<Call>,
    },
    /// Send `call` (the hidden states entering hop `hop`) to hop `hop`; answer with
    /// [`Generation::hop_answered`] or [`Generation::hop_failed`].
    Forward { hop: usize, call: Call },
    /// After a fault: the hops from `from_hop` on are new, open and replayed.
    Rerouted { from_hop: usize },
    /// The route is open and no call is in flight: the next call may go
    /// ([`Generation::forward`]).
    Ready,
    /// `call` came out of the last hop.
    CallDone { call: Call },
    /// The generation stops; every later input is refused.
    GiveUp { reason: GiveUp },
}

/// Why a generation was given up.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GiveUp {
    #[error("{faults} workers failed; the re-plan budget is spent")]
    TooManyReplans { faults: u32 },
    #[error("no route for blocks {blocks}: {error}")]
    NoRoute {
        blocks: BlockRange,
        error: RouteError,
    },
}

/// An input the machine cannot take in its state; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the generation was given up")]
    GivenUp,
    #[error("{input} (hop {hop}) is not expected while {state}")]
    Unexpected {
        input: &'static str,
        hop: usize,
        state: &'static str,
    },
}

/// One hop that failed, and what replaced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Failover {
    pub peer: PeerId,
    pub blocks: BlockRange,
    pub fault: Fault,
    pub at: UnixMillis,
    /// Calls recorded when it failed (the one in flight included).
    pub calls: usize,
    /// The new hops, once the route is rebuilt (the last failure of a rebuild only).
    pub replaced_by: Vec<Hop>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Waiting for candidates to plan `[from_block, end)` as hops from `from_hop`.
    Planning {
        from_hop: usize,
        from_block: u32,
    },
    /// Opening hop `route.len()` (the first of `planned`); `replaying` once it is open
    /// and fed the recorded calls.
    Opening {
        from_hop: usize,
        from_block: u32,
        replaying: bool,
    },
    /// The route is open; `in_flight` is the hop the last call stands at.
    Open,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Planning { .. } => "planning",
            State::Opening {
                replaying: false, ..
            } => "opening a hop",
            State::Opening { .. } => "replaying into a hop",
            State::Open => "the route is open",
            State::Failed => "given up",
        }
    }
}

/// One request's generation through a route of workers covering `blocks`.
#[derive(Clone, Debug)]
pub struct Generation {
    policy: ClientPolicy,
    blocks: BlockRange,
    state: State,
    /// Hops open (and replayed), in order.
    route: Vec<Hop>,
    /// Hops planned and not yet open, in order; the first is hop `route.len()`.
    planned: Vec<Hop>,
    calls: Vec<Call>,
    /// The hop the last call stands at, while it is in flight.
    in_flight: Option<usize>,
    excluded: Vec<PeerId>,
    faults: u32,
    /// A rebuild follows a fault (reported with [`Action::Rerouted`] when done).
    rebuilding: bool,
    failovers: Vec<Failover>,
    actions: VecDeque<Action>,
}

impl Generation {
    /// A generation through workers covering `blocks`; the first action asks for
    /// candidates.
    pub fn new(policy: ClientPolicy, blocks: BlockRange) -> Self {
        let mut actions = VecDeque::new();
        actions.push_back(Action::NeedCandidates { blocks });
        Generation {
            policy,
            blocks,
            state: State::Planning {
                from_hop: 0,
                from_block: blocks.start(),
            },
            route: Vec::new(),
            planned: Vec::new(),
            calls: Vec::new(),
            in_flight: None,
            excluded: Vec::new(),
            faults: 0,
            rebuilding: false,
            failovers: Vec::new(),
            actions,
        }
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn policy(&self) -> &ClientPolicy {
        &self.policy
    }

    /// The hops open now, in order.
    pub fn route(&self) -> &[Hop] {
        &self.route
    }

    /// Every call recorded, in order (the one in flight last).
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }

    /// Peers excluded after failing in this generation.
    pub fn excluded(&self) -> &[PeerId] {
        &self.excluded
    }

    pub fn failovers(&self) -> &[Failover] {
        &self.failovers
    }

    pub fn is_given_up(&self) -> bool {
        self.state == State::Failed
    }

    fn unexpected(&self, input: &'static str, hop: usize) -> ClientError {
        if self.state == State::Failed {
            return ClientError::GivenUp;
        }
        ClientError::Unexpected {
            input,
            hop,
            state: self.state.name(),
        }
    }

    /// Route candidates, answering [`Action::NeedCandidates`]: plans and opens the
    /// route's first new hop, or gives up when no route exists.
    pub fn candidates(&mut self, cands: &[Candidate]) -> Result<(), ClientError> {
        let State::Planning {
            from_hop,
            from_block,
        } = self.state
        else {
            return Err(self.unexpected("candidates", 0));
        };
        let blocks = BlockRange::new(from_block, self.blocks.end())
            .expect("a re-plan starts inside the route's blocks");
        match self.policy.plan(cands, blocks, &self.excluded) {
            Err(error) => self.give_up(GiveUp::NoRoute { blocks, error }),
            Ok(planned) => {
                self.planned = planned.route.hops;
                self.actions.push_back(Action::Planned {
                    from_hop,
                    hops: self.planned.clone(),
                    partial: planned.partial,
                });
                self.state = State::Opening {
                    from_hop,
                    from_block,
                    replaying: false,
                };
                self.open_next();
            }
        }
        Ok(())
    }

    /// Hop `hop` is open: it is fed the recorded calls, or (none yet) is ready.
    pub fn hop_opened(&mut self, hop: usize) -> Result<(), ClientError> {
        let State::Opening {
            replaying: false, ..
        } = self.state
        else {
            return Err(self.unexpected("hop opened", hop));
        };
        if hop != self.route.len() {
            return Err(self.unexpected("hop opened", hop));
        }
        let replay = self.replay_calls().to_vec();
        if replay.is_empty() {
            self.hop_ready();
        } else {
            if let State::Opening { replaying, .. } = &mut self.state {
                *replaying = true;
            }
            let boundary = self.planned[0].blocks.start();
            self.actions.push_back(Action::Replay {
                hop,
                boundary,
                calls: replay,
            });
        }
        Ok(())
    }

    /// Hop `hop` answered: its replay is done, or the call in flight passed it.
    pub fn hop_answered(&mut self, hop: usize) -> Result<(), ClientError> {
        match self.state {
            State::Opening {
                replaying: true, ..
            } if hop == self.route.len() => self.hop_ready(),
            State::Open if self.in_flight == Some(hop) => {
                let call = self.last_call();
                if hop + 1 == self.route.len() {
                    self.in_flight = None;
                    self.actions.push_back(Action::CallDone { call });
                } else {
                    self.in_flight = Some(hop + 1);
                    self.actions
                        .push_back(Action::Forward { hop: hop + 1, call });
                }
            }
            _ => return Err(self.unexpected("hop answered", hop)),
        }
        Ok(())
    }

    /// Sends `call` through the route, recording it for replays. A call at an earlier
    /// position than a recorded one replaces the recorded calls from there on (a
    /// rewind); the same call again is recorded once.
    pub fn forward(&mut self, call: Call) -> Result<(), ClientError> {
        if self.state != State::Open || self.in_flight.is_some() {
            return Err(self.unexpected("forward", 0));
        }
        if self.calls.last() != Some(&call) {
            self.calls.retain(|c| c.start_pos < call.start_pos);
            self.calls.push(call);
        }
        self.in_flight = Some(0);
        self.actions.push_back(Action::Forward { hop: 0, call });
        Ok(())
    }

    /// The call in flight came out of the last hop, for a driver that does not report
    /// each hop (the simulator streams tokens through the whole route at once).
    pub fn call_done(&mut self) -> Result<(), ClientError> {
        if self.state != State::Open || self.in_flight.is_none() {
            return Err(self.unexpected("call done", 0));
        }
        self.in_flight = None;
        let call = self.last_call();
        self.actions.push_back(Action::CallDone { call });
        Ok(())
    }

    /// Hop `hop` failed with `fault` at `now` (a spot-check that disagrees is
    /// [`Fault::WrongResult`]): the peer is excluded and charged, and the route is
    /// re-planned from the failed span on, or the generation given up.
    pub fn hop_failed(
        &mut self,
        hop: usize,
        fault: Fault,
        now: UnixMillis,
    ) -> Result<(), ClientError> {
        let (failed, from_hop, from_block) = match self.state {
            State::Open if hop < self.route.len() => {
                let failed = self.route[hop].clone();
                let start = failed.blocks.start();
                (failed, hop, start)
            }
            State::Opening {
                from_hop,
                from_block,
                ..
            } if hop == self.route.len() => (self.planned[0].clone(), from_hop, from_block),
            _ => return Err(self.unexpected("hop failed", hop)),
        };
        self.excluded.push(failed.peer);
        self.actions.push_back(Action::Charge {
            peer: failed.peer,
            fault,
            at: now,
        });
        self.failovers.push(Failover {
            peer: failed.peer,
            blocks: failed.blocks,
            fault,
            at: now,
            calls: self.calls.len(),
            replaced_by: Vec::new(),
        });
        let prompt_tokens = self
            .calls
            .first()
            .filter(|c| c.start_pos == 0)
            .map_or(0, |c| u64::from(c.rows));
        let positions: u64 = self.calls.iter().map(|c| u64::from(c.rows)).sum();
        let decision = failover::decide(
            &self.policy.failover,
            &FailedHop {
                peer: failed.peer,
                blocks: failed.blocks,
                prompt_tokens,
                generated_tokens: positions.saturating_sub(prompt_tokens),
                replans_so_far: self.faults,
            },
        );
        self.faults += 1;
        match decision {
            FailoverDecision::GiveUp { .. } => {
                let faults = self.faults;
                self.give_up(GiveUp::TooManyReplans { faults });
            }
            FailoverDecision::Replan { blocks, .. } => {
                // The lost span, widened to the end of the route (see the module docs).
                let start = blocks.start().min(from_block);
                let span = BlockRange::new(start, self.blocks.end())
                    .expect("a failed span lies inside the route's blocks");
                self.route.truncate(from_hop);
                self.planned.clear();
                self.in_flight = self.in_flight.map(|at| at.min(from_hop));
                self.rebuilding = true;
                self.state = State::Planning {
                    from_hop,
                    from_block: start,
                };
                self.actions.push_back(Action::Close { from_hop });
                self.actions
                    .push_back(Action::NeedCandidates { blocks: span });
            }
        }
        Ok(())
    }

    /// The recorded calls a new hop is fed: all but the one in flight.
    fn replay_calls(&self) -> &[Call] {
        let n = self.calls.len() - usize::from(self.in_flight.is_some());
        &self.calls[..n]
    }

    fn last_call(&self) -> Call {
        *self
            .calls
            .last()
            .expect("a call in flight is the last one recorded")
    }

    /// The hop being opened is ready: open the next, or the route is complete.
    fn hop_ready(&mut self) {
        let hop = self.planned.remove(0);
        self.route.push(hop);
        self.open_next();
    }

    fn open_next(&mut self) {
        if let Some(next) = self.planned.first() {
            if let State::Opening { replaying, .. } = &mut self.state {
                *replaying = false;
            }
            self.actions.push_back(Action::Open {
                hop: self.route.len(),
                peer: next.peer,
                blocks: next.blocks,
            });
            return;
        }
        let State::Opening { from_hop, .. } = self.state else {
            return;
        };
        self.state = State::Open;
        if std::mem::take(&mut self.rebuilding) {
            if let Some(f) = self.failovers.last_mut() {
                f.replaced_by = self.route[from_hop..].to_vec();
            }
            self.actions.push_back(Action::Rerouted { from_hop });
        }
        match self.in_flight {
            Some(hop) => {
                let call = self.last_call();
                self.actions.push_back(Action::Forward { hop, call });
            }
            None => self.actions.push_back(Action::Ready),
        }
    }

    fn give_up(&mut self, reason: GiveUp) {
        self.state = State::Failed;
        self.planned.clear();
        self.actions.push_back(Action::GiveUp { reason });
    }
}

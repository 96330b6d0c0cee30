//! The generation machine driven by hand: a fake mesh of candidates, a fake clock.

use super::*;
use crate::PeerId;
use crate::announce::Prices;
use crate::announce::tests::identity;
use crate::failover::Fault;
use crate::route::{Candidate, Hop, RouteError};
use crate::units::{BlockRange, NanoTon, UnixMillis};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn span(a: u32, b: u32) -> BlockRange {
    BlockRange::new(a, b).expect("ordered")
}

fn peer(n: u8) -> PeerId {
    identity(n).peer_id()
}

/// Worker `n` on `[a, b)`; a higher `tps` plans first.
fn worker(n: u8, a: u32, b: u32, tps: u64) -> Candidate {
    Candidate {
        peer: peer(n),
        blocks: span(a, b),
        throughput_milli_tps: tps,
        prices: Prices {
            prompt: NanoTon(0),
            completion: NanoTon(0),
        },
        free_kv_tokens: 4096,
        rtt_us: 1_000,
        queued_requests: 0,
        score: 0.0,
    }
}

/// w1 0..10, w2 10..20 (fast), w3 20..30, and a slower spare on 10..20.
fn mesh() -> Vec<Candidate> {
    vec![
        worker(1, 0, 10, 50_000),
        worker(2, 10, 20, 50_000),
        worker(3, 20, 30, 50_000),
        worker(4, 10, 20, 20_000),
    ]
}

fn drain(g: &mut Generation) -> Vec<Action> {
    std::iter::from_fn(|| g.poll_action()).collect()
}

fn hop(n: u8, a: u32, b: u32) -> Hop {
    Hop {
        peer: peer(n),
        blocks: span(a, b),
    }
}

fn call(start_pos: u32, rows: u32) -> Call {
    Call { start_pos, rows }
}

/// Opens the whole route of [`mesh`] with no calls recorded yet.
fn opened() -> Generation {
    let mut g = Generation::new(ClientPolicy::default(), span(0, 30));
    assert_eq!(
        drain(&mut g),
        [Action::NeedCandidates {
            blocks: span(0, 30)
        }]
    );
    g.candidates(&mesh()).expect("planning");
    let a = drain(&mut g);
    assert!(
        matches!(&a[0], Action::Planned { from_hop: 0, hops, partial: false } if hops.len() == 3)
    );
    for i in 0..3 {
        g.hop_opened(i).expect("open");
        let next = g.poll_action();
        if i < 2 {
            assert!(matches!(next, Some(Action::Open { hop, .. }) if hop == i + 1));
        } else {
            assert_eq!(next, Some(Action::Ready));
        }
    }
    g
}

/// Forwards `c` through every hop.
fn through(g: &mut Generation, c: Call) {
    g.forward(c).expect("forward");
    for i in 0..3 {
        assert_eq!(g.poll_action(), Some(Action::Forward { hop: i, call: c }));
        g.hop_answered(i).expect("answer");
    }
    assert_eq!(drain(g), [Action::CallDone { call: c }]);
}

#[test]
fn the_happy_path_opens_each_hop_then_forwards_calls_through_them_in_order() {
    let mut g = Generation::new(ClientPolicy::default(), span(0, 30));
    drain(&mut g);
    g.candidates(&mesh()).expect("planning");
    assert_eq!(
        drain(&mut g),
        [
            Action::Planned {
                from_hop: 0,
                hops: vec![hop(1, 0, 10), hop(2, 10, 20), hop(3, 20, 30)],
                partial: false,
            },
            Action::Open {
                hop: 0,
                peer: peer(1),
                blocks: span(0, 10)
            },
        ]
    );
    g.hop_opened(0).expect("open");
    g.hop_opened(2).expect_err("hop 2 is not being opened yet");
    assert!(matches!(g.poll_action(), Some(Action::Open { hop: 1, .. })));
    g.hop_opened(1).expect("open");
    assert!(matches!(g.poll_action(), Some(Action::Open { hop: 2, .. })));
    g.hop_opened(2).expect("open");
    assert_eq!(drain(&mut g), [Action::Ready]);
    through(&mut g, call(0, 5));
    through(&mut g, call(5, 1));
    through(&mut g, call(6, 1));
    assert_eq!(g.calls(), [call(0, 5), call(5, 1), call(6, 1)]);
    // A rewind replaces the recorded calls from its position on.
    through(&mut g, call(5, 1));
    assert_eq!(g.calls(), [call(0, 5), call(5, 1)]);
    assert!(g.failovers().is_empty());
}

#[test]
fn a_fault_mid_generation_replans_to_the_end_and_replays_the_recorded_calls() {
    let mut g = opened();
    through(&mut g, call(0, 5));
    through(&mut g, call(5, 1));
    through(&mut g, call(6, 1));
    g.forward(call(7, 1)).expect("forward");
    g.hop_answered(0).expect("hop 0");
    drain(&mut g);
    g.hop_failed(1, Fault::Disconnected, NOW).expect("fault");
    assert_eq!(
        drain(&mut g),
        [
            Action::Charge {
                peer: peer(2),
                fault: Fault::Disconnected,
                at: NOW
            },
            Action::Close { from_hop: 1 },
            Action::NeedCandidates {
                blocks: span(10, 30)
            },
        ]
    );
    assert_eq!(g.route(), [hop(1, 0, 10)]);
    // The failed worker is still announced: the plan leaves it out.
    g.candidates(&mesh()).expect("re-plan");
    let recorded = vec![call(0, 5), call(5, 1), call(6, 1)];
    assert_eq!(
        drain(&mut g),
        [
            Action::Planned {
                from_hop: 1,
                hops: vec![hop(4, 10, 20), hop(3, 20, 30)],
                partial: false
            },
            Action::Open {
                hop: 1,
                peer: peer(4),
                blocks: span(10, 20)
            },
        ]
    );
    g.hop_opened(1).expect("open");
    assert_eq!(
        drain(&mut g),
        [Action::Replay {
            hop: 1,
            boundary: 10,
            calls: recorded.clone()
        }]
    );
    g.hop_answered(1).expect("replayed");
    assert!(matches!(drain(&mut g)[..], [Action::Open { hop: 2, .. }]));
    g.hop_opened(2).expect("open");
    assert_eq!(
        drain(&mut g),
        [Action::Replay {
            hop: 2,
            boundary: 20,
            calls: recorded
        }]
    );
    g.hop_answered(2).expect("replayed");
    // The call in flight carries on from the first new hop.
    assert_eq!(
        drain(&mut g),
        [
            Action::Rerouted { from_hop: 1 },
            Action::Forward {
                hop: 1,
                call: call(7, 1)
            }
        ]
    );
    g.hop_answered(1).expect("hop 1");
    g.hop_answered(2).expect("hop 2");
    assert_eq!(
        drain(&mut g)[..],
        [
            Action::Forward {
                hop: 2,
                call: call(7, 1)
            },
            Action::CallDone { call: call(7, 1) }
        ]
    );
    assert_eq!(g.excluded(), [peer(2)]);
    let f = &g.failovers()[0];
    assert_eq!((f.peer, f.blocks, f.calls), (peer(2), span(10, 20), 4));
    assert_eq!(f.replaced_by, [hop(4, 10, 20), hop(3, 20, 30)]);
}

#[test]
fn a_hop_failing_during_a_rebuild_restarts_it_from_the_same_block() {
    let mut g = opened();
    through(&mut g, call(0, 3));
    g.forward(call(3, 1)).expect("forward");
    g.hop_answered(0).expect("hop 0");
    g.hop_failed(1, Fault::Stalled, NOW).expect("fault");
    g.candidates(&mesh()).expect("re-plan");
    drain(&mut g);
    g.hop_opened(1).expect("spare opens");
    g.hop_answered(1).expect("spare replayed");
    drain(&mut g);
    // w3 refuses: everything from block 10 is planned again, without w2 and w3.
    g.hop_failed(2, Fault::Refused, NOW).expect("fault");
    assert_eq!(
        drain(&mut g)[1..],
        [
            Action::Close { from_hop: 1 },
            Action::NeedCandidates {
                blocks: span(10, 30)
            }
        ]
    );
    let mut cands = mesh();
    cands.push(worker(5, 20, 30, 10_000));
    g.candidates(&cands).expect("re-plan");
    assert!(matches!(
        &drain(&mut g)[0],
        Action::Planned { from_hop: 1, hops, .. } if *hops == [hop(4, 10, 20), hop(5, 20, 30)]
    ));
}

#[test]
fn the_replan_budget_spent_gives_up() {
    let mut policy = ClientPolicy::default();
    policy.failover.max_replans = 1;
    let mut g = Generation::new(policy, span(0, 30));
    g.candidates(&mesh()).expect("plan");
    drain(&mut g);
    g.hop_failed(0, Fault::Refused, NOW).expect("first fault");
    g.candidates(&[
        worker(6, 0, 10, 1_000),
        worker(2, 10, 20, 1),
        worker(3, 20, 30, 1),
    ])
    .expect("re-plan");
    drain(&mut g);
    g.hop_failed(0, Fault::Disconnected, NOW)
        .expect("second fault");
    let a = drain(&mut g);
    assert_eq!(
        a.last(),
        Some(&Action::GiveUp {
            reason: GiveUp::TooManyReplans { faults: 2 }
        })
    );
    assert!(g.is_given_up());
    assert_eq!(g.hop_opened(0), Err(ClientError::GivenUp));
    assert_eq!(g.forward(call(0, 1)), Err(ClientError::GivenUp));
}

#[test]
fn excluded_and_low_scored_peers_are_never_chosen() {
    // A banned-grade score keeps the fastest 10..20 worker out from the start.
    let mut cands = mesh();
    cands[1].score = -60.0;
    let mut g = Generation::new(ClientPolicy::default(), span(0, 30));
    drain(&mut g);
    g.candidates(&cands).expect("plan");
    assert!(matches!(
        &drain(&mut g)[0],
        Action::Planned { hops, .. } if hops[1] == hop(4, 10, 20)
    ));
    // A peer that failed once is not re-chosen in the same generation, even when it is
    // the only one left for its blocks.
    let mut g = opened();
    g.hop_failed(2, Fault::Disconnected, NOW).expect("w3 fails");
    g.candidates(&mesh()).expect("re-plan");
    assert_eq!(
        drain(&mut g).last(),
        Some(&Action::GiveUp {
            reason: GiveUp::NoRoute {
                blocks: span(20, 30),
                error: RouteError::Uncovered { block: 20 }
            }
        })
    );
}

#[test]
fn no_route_is_a_clear_give_up() {
    let mut g = Generation::new(ClientPolicy::default(), span(0, 30));
    g.candidates(&mesh()[..2]).expect("plan");
    let a = drain(&mut g);
    let Some(Action::GiveUp { reason }) = a.last() else {
        panic!("gave up: {a:?}");
    };
    assert_eq!(
        reason.to_string(),
        "no route for blocks 0..30: no usable chain of workers reaches block 20"
    );
    assert_eq!(g.candidates(&mesh()), Err(ClientError::GivenUp));
}

#[test]
fn sub_spans_only_when_whole_spans_cannot_tile() {
    // A client running blocks 0 and 29 itself: no whole span fits 1..29.
    let mut g = Generation::new(ClientPolicy::default(), span(1, 29));
    drain(&mut g);
    g.candidates(&mesh()).expect("plan");
    assert_eq!(
        drain(&mut g)[0],
        Action::Planned {
            from_hop: 0,
            hops: vec![hop(1, 1, 10), hop(2, 10, 20), hop(3, 20, 29)],
            partial: true
        }
    );
    let never = ClientPolicy {
        partial_spans: PartialSpans::Never,
        ..ClientPolicy::default()
    };
    let mut g = Generation::new(never, span(1, 29));
    g.candidates(&mesh()).expect("plan");
    assert!(matches!(
        drain(&mut g).last(),
        Some(Action::GiveUp {
            reason: GiveUp::NoRoute { .. }
        })
    ));
}

#[test]
fn inputs_out_of_turn_change_nothing() {
    let mut g = Generation::new(ClientPolicy::default(), span(0, 30));
    assert!(matches!(
        g.forward(call(0, 4)),
        Err(ClientError::Unexpected {
            input: "forward",
            ..
        })
    ));
    assert!(g.hop_answered(0).is_err());
    assert!(g.hop_failed(0, Fault::Stalled, NOW).is_err());
    let mut g = opened();
    g.forward(call(0, 4)).expect("forward");
    assert!(g.forward(call(4, 1)).is_err(), "one call at a time");
    assert!(g.hop_answered(1).is_err(), "the call stands at hop 0");
    g.call_done().expect("the simulator's shortcut");
    assert_eq!(
        drain(&mut g).last(),
        Some(&Action::CallDone { call: call(0, 4) })
    );
    assert!(g.excluded().is_empty());
}

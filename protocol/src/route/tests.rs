//! Tests of the planner and of placement: exhaustive enumeration on small random swarms
//! as the oracle, plus the situations a node meets (full workers, failures, caps).

use proptest::prelude::*;

use super::cost::HopTime;
use super::*;
use crate::announce::Prices;

/// A distinct peer id per `i`, ordered as `i` (identity multihash of `i` big-endian).
pub(crate) fn peer(i: u32) -> PeerId {
    let b = i.to_be_bytes();
    PeerId::from_bytes(&[0, 4, b[0], b[1], b[2], b[3]]).expect("identity multihash of 4 bytes")
}

pub(crate) fn request(start: u32, end: u32) -> RouteRequest {
    RouteRequest {
        blocks: BlockRange::new(start, end).expect("ordered"),
        kv_tokens_needed: 0,
        price_cap: None,
        exclude: Vec::new(),
        allow_partial: false,
        max_hops: 64,
        min_score: f64::NEG_INFINITY,
    }
}

fn worker(i: u32, start: u32, end: u32, tps: u64, completion: u64) -> Candidate {
    Candidate {
        peer: peer(i),
        blocks: BlockRange::new(start, end).expect("ordered"),
        throughput_milli_tps: tps * 1000,
        prices: Prices {
            prompt: NanoTon(completion / 2),
            completion: NanoTon(completion),
        },
        free_kv_tokens: 100_000,
        rtt_us: 1_000,
        queued_requests: 0,
        score: 0.0,
    }
}

fn spans(route: &Route) -> Vec<(PeerId, u32, u32)> {
    route
        .hops
        .iter()
        .map(|h| (h.peer, h.blocks.start(), h.blocks.end()))
        .collect()
}

// ---------------------------------------------------------------- brute force oracle

type Key = (u128, u128, usize, Vec<(PeerId, u32)>);

/// Every feasible route by exhaustive enumeration of chains of distinct peers.
struct Oracle<'a> {
    cands: &'a [Candidate],
    req: &'a RouteRequest,
    model: &'a CostModel,
}

impl Oracle<'_> {
    fn usable(&self, c: &Candidate) -> bool {
        c.score >= self.req.min_score
            && !self.req.exclude.contains(&c.peer)
            && HopTime::of(c, self.req, self.model).is_some()
    }

    /// Hops candidate `c` can run starting at block `at`.
    fn ends(&self, c: &Candidate, at: u32) -> Vec<u32> {
        let (rs, re) = (self.req.blocks.start(), self.req.blocks.end());
        let (cs, ce) = (c.blocks.start(), c.blocks.end());
        if self.req.allow_partial {
            if cs <= at && at < ce && at < re {
                (at + 1..=ce.min(re)).collect()
            } else {
                Vec::new()
            }
        } else if cs == at && rs <= cs && ce <= re {
            vec![ce]
        } else {
            Vec::new()
        }
    }

    /// All chains from the request's start to its end, with no limit on hops or price.
    fn all_chains(&self) -> Vec<(Key, Vec<Hop>)> {
        let mut out = Vec::new();
        let mut used = vec![false; self.cands.len()];
        self.walk(
            self.req.blocks.start(),
            &mut used,
            &mut Vec::new(),
            &mut out,
        );
        out
    }

    fn walk(
        &self,
        at: u32,
        used: &mut [bool],
        path: &mut Vec<(usize, u32, u32)>,
        out: &mut Vec<(Key, Vec<Hop>)>,
    ) {
        if at == self.req.blocks.end() {
            out.push(self.keyed(path));
            return;
        }
        for (i, c) in self.cands.iter().enumerate() {
            if used[i] || !self.usable(c) {
                continue;
            }
            for end in self.ends(c, at) {
                used[i] = true;
                path.push((i, at, end));
                self.walk(end, used, path, out);
                path.pop();
                used[i] = false;
            }
        }
    }

    fn keyed(&self, path: &[(usize, u32, u32)]) -> (Key, Vec<Hop>) {
        let mut time = 0u128;
        let mut price = 0u128;
        let mut seq = Vec::new();
        let mut hops = Vec::new();
        for &(i, s, e) in path {
            let c = &self.cands[i];
            let t = HopTime::of(c, self.req, self.model).expect("usable");
            time += t.for_len(e - s);
            price += u128::from(c.prices.completion.0);
            seq.push((c.peer, e));
            hops.push(Hop {
                peer: c.peer,
                blocks: BlockRange::new(s, e).expect("ordered"),
            });
        }
        ((time, price, path.len(), seq), hops)
    }

    /// The feasible routes (cap and hop limit applied), best first.
    fn ranked(&self) -> Vec<(Key, Vec<Hop>)> {
        let cap = self.req.price_cap.map(|c| u128::from(c.0));
        let mut routes: Vec<_> = self
            .all_chains()
            .into_iter()
            .filter(|(k, _)| k.2 <= self.req.max_hops && cap.is_none_or(|cap| k.1 <= cap))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }

    /// The first block no chain reaches, peers reusable (the planner's definition).
    fn furthest_reachable(&self) -> u32 {
        let (rs, re) = (self.req.blocks.start(), self.req.blocks.end());
        let mut reach = vec![false; (re - rs + 1) as usize];
        reach[0] = true;
        for at in rs..re {
            if !reach[(at - rs) as usize] {
                continue;
            }
            for c in self.cands.iter().filter(|c| self.usable(c)) {
                for e in self.ends(c, at) {
                    reach[(e - rs) as usize] = true;
                }
            }
        }
        rs + reach
            .iter()
            .rposition(|&r| r)
            .expect("the start is reachable") as u32
    }
}

/// Checks the planner against the oracle on one case: the best route, the k best, and
/// the error when there is none.
fn check_against_oracle(
    cands: &[Candidate],
    req: &RouteRequest,
    model: &CostModel,
    k: usize,
) -> Result<(), TestCaseError> {
    let oracle = Oracle { cands, req, model };
    let ranked = oracle.ranked();
    match plan(cands, req, model) {
        Ok(route) => {
            prop_assert!(
                !ranked.is_empty(),
                "planner found a route the oracle says is infeasible"
            );
            check_route_rules(cands, req, &route)?;
            prop_assert_eq!(&route.hops, &ranked[0].1);
            let (time, price, _, _) = &ranked[0].0;
            prop_assert_eq!(route.cost.expected_us_per_token, *time as f64 / 1e6);
            prop_assert_eq!(u128::from(route.cost.price_per_token.0), *price);
        }
        Err(e) => {
            prop_assert!(
                ranked.is_empty(),
                "planner failed with {e} but the oracle has {:?}",
                ranked[0].1
            );
            let chains = oracle.all_chains();
            match e {
                RouteError::Uncovered { block } => {
                    prop_assert!(chains.is_empty());
                    prop_assert_eq!(block, oracle.furthest_reachable());
                }
                RouteError::TooManyHops { needed, max_hops } => {
                    let fewest = chains.iter().map(|c| c.0.2).min();
                    prop_assert_eq!(fewest, Some(needed));
                    prop_assert!(needed > max_hops);
                }
                RouteError::OverPriceCap { cheapest, cap } => {
                    let least = chains
                        .iter()
                        .filter(|c| c.0.2 <= req.max_hops)
                        .map(|c| c.0.1)
                        .min();
                    prop_assert_eq!(least, Some(u128::from(cheapest.0)));
                    prop_assert!(cheapest > cap);
                }
                other => return Err(TestCaseError::fail(format!("unexpected error {other}"))),
            }
        }
    }
    let best_k = plan_k(cands, req, model, k);
    prop_assert_eq!(best_k.len(), ranked.len().min(k));
    for (route, (_, hops)) in best_k.iter().zip(&ranked) {
        check_route_rules(cands, req, route)?;
        prop_assert_eq!(&route.hops, hops);
    }
    Ok(())
}

/// The rules every returned route obeys, checked without the oracle.
fn check_route_rules(
    cands: &[Candidate],
    req: &RouteRequest,
    route: &Route,
) -> Result<(), TestCaseError> {
    prop_assert!(!route.hops.is_empty());
    prop_assert!(route.hops.len() <= req.max_hops);
    prop_assert_eq!(route.hops[0].blocks.start(), req.blocks.start());
    prop_assert_eq!(
        route.hops[route.hops.len() - 1].blocks.end(),
        req.blocks.end()
    );
    for pair in route.hops.windows(2) {
        prop_assert_eq!(pair[0].blocks.end(), pair[1].blocks.start());
    }
    let mut price = 0u64;
    let mut peers = Vec::new();
    for hop in &route.hops {
        prop_assert!(!hop.blocks.is_empty());
        prop_assert!(!peers.contains(&hop.peer), "peer used twice");
        peers.push(hop.peer);
        prop_assert!(!req.exclude.contains(&hop.peer));
        let c = cands
            .iter()
            .find(|c| c.peer == hop.peer)
            .expect("route names a candidate");
        prop_assert!(c.score >= req.min_score);
        if req.allow_partial {
            prop_assert!(
                c.blocks.start() <= hop.blocks.start() && hop.blocks.end() <= c.blocks.end()
            );
        } else {
            prop_assert_eq!(c.blocks, hop.blocks);
        }
        price += c.prices.completion.0;
    }
    prop_assert_eq!(route.cost.price_per_token, NanoTon(price));
    if let Some(cap) = req.price_cap {
        prop_assert!(route.cost.price_per_token <= cap);
    }
    Ok(())
}

// ---------------------------------------------------------------- random swarms

/// Cost weights on the scale of the random swarms below (µs-sized hops), so that RTT,
/// compute, queueing and KV penalty all matter and ties happen.
fn small_model() -> CostModel {
    CostModel {
        kv_penalty_us: 4.0,
        queue_us_per_request: 1.0,
    }
}

prop_compose! {
    fn arb_candidate(n: u32, max_len: u32)(
        start in 0..n,
        len in 1..=max_len,
        tps in prop::sample::select(vec![1_000_000_000u64, 2_000_000_000, 4_000_000_000, 1_000_000_000, 3_000_000_000, 0]),
        completion in 0u64..6,
        prompt in 0u64..3,
        free_kv in 0u64..3,
        rtt in 0u64..4,
        queued in 0u32..2,
        score in prop::sample::select(vec![0.0, 1.0, 0.0, 1.0, 2.0, -1.0, f64::NAN]),
    ) -> Candidate {
        let end = (start + len).min(n);
        Candidate {
            peer: peer(0),
            blocks: BlockRange::new(start, end).expect("ordered"),
            throughput_milli_tps: tps,
            prices: Prices { prompt: NanoTon(prompt), completion: NanoTon(completion) },
            free_kv_tokens: free_kv,
            rtt_us: rtt,
            queued_requests: queued,
            score,
        }
    }
}

/// A random swarm of up to `max_cands` workers on `n <= max_blocks` blocks, and a
/// request on it.
fn arb_case(
    max_cands: usize,
    max_blocks: u32,
    max_len: u32,
    partial: bool,
) -> impl Strategy<Value = (Vec<Candidate>, RouteRequest, usize)> {
    (1..=max_blocks)
        .prop_flat_map(move |n| {
            (
                Just(n),
                prop::collection::vec(arb_candidate(n, max_len), max_cands / 2..=max_cands),
                prop_oneof![Just(0), 0..n],
                prop_oneof![Just(n), 1..=n],
                0u64..3,
                prop::option::of(0u64..12),
                prop::collection::vec(prop::bool::weighted(0.15), max_cands),
                prop_oneof![Just(n as usize), 0..=(n as usize + 1)],
                1usize..5,
                prop::collection::vec(1..=max_len, 8),
            )
        })
        .prop_map(
            move |(n, mut cands, a, len, kv, cap, excluded, max_hops, k, tiles)| {
                for (i, c) in cands.iter_mut().enumerate() {
                    c.peer = peer(i as u32 * 7 % 11 + i as u32 * 16);
                }
                // Half the workers (at most) tile the model, so that most requests are
                // covered and routes have several hops; the rest overlap them at random.
                let mut at = 0;
                let tilers = cands.len().div_ceil(2);
                for (i, (c, &l)) in cands.iter_mut().zip(&tiles).take(tilers).enumerate() {
                    let end = if i + 1 == tilers { n } else { (at + l).min(n) };
                    if at < end {
                        c.blocks = BlockRange::new(at, end).expect("ordered");
                        c.throughput_milli_tps = c.throughput_milli_tps.max(1_000_000_000);
                        c.score = 1.0;
                    }
                    at = end;
                }
                let mut req = request(a, (a + len).min(n));
                req.kv_tokens_needed = kv;
                req.price_cap = cap.map(NanoTon);
                req.exclude = cands
                    .iter()
                    .zip(&excluded)
                    .filter(|&(_, &x)| x)
                    .map(|(c, _)| c.peer)
                    .collect();
                req.allow_partial = partial;
                req.max_hops = max_hops;
                req.min_score = 0.0;
                (cands, req, k)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn whole_spans_match_the_oracle((cands, req, k) in arb_case(8, 8, 3, false)) {
        check_against_oracle(&cands, &req, &small_model(), k)?;
    }

    #[test]
    fn partial_spans_match_the_oracle((cands, req, k) in arb_case(8, 8, 3, true)) {
        check_against_oracle(&cands, &req, &small_model(), k)?;
    }

    /// Many workers on few spans: exercises the pruning of dominated candidates.
    #[test]
    fn crowded_whole_spans_match_the_oracle((cands, req, k) in arb_case(24, 6, 3, false)) {
        check_against_oracle(&cands, &req, &small_model(), k)?;
    }

    #[test]
    fn crowded_partial_spans_match_the_oracle((cands, req, k) in arb_case(12, 4, 2, true)) {
        check_against_oracle(&cands, &req, &small_model(), k)?;
    }
}

// ---------------------------------------------------------------- situations

#[test]
fn uncovered_names_the_first_block_no_chain_reaches() {
    let model = CostModel::default();
    let cands = vec![
        worker(1, 0, 10, 10, 5),
        worker(2, 12, 30, 10, 5),
        worker(3, 9, 14, 10, 5),
    ];
    let req = request(0, 30);
    // Worker 3 starts at 9, which no chain reaches, so nothing runs block 10.
    assert_eq!(
        plan(&cands, &req, &model),
        Err(RouteError::Uncovered { block: 10 })
    );
    // Running part of a span, worker 3 bridges 10..12 and worker 2 finishes.
    let partial = RouteRequest {
        allow_partial: true,
        ..req.clone()
    };
    let route = plan(&cands, &partial, &model).expect("covered with sub-spans");
    assert_eq!(route.hops.last().map(|h| h.blocks.end()), Some(30));
    // Without worker 3 the gap is at block 10 either way.
    let partial_gap = plan(&cands[..2], &partial, &model);
    assert_eq!(partial_gap, Err(RouteError::Uncovered { block: 10 }));
    // An excluded or low-scored worker does not count as coverage.
    let mut low = cands.clone();
    low[0].score = -100.0;
    let scored = RouteRequest {
        min_score: -10.0,
        ..req.clone()
    };
    assert_eq!(
        plan(&low, &scored, &model),
        Err(RouteError::Uncovered { block: 0 })
    );
}

#[test]
fn kv_penalty_steers_around_a_full_worker() {
    let model = CostModel::default();
    let mut fast = worker(1, 0, 30, 40, 5);
    fast.free_kv_tokens = 100;
    let slow = worker(2, 0, 30, 20, 5);
    let cands = vec![fast, slow];
    let mut req = request(0, 30);
    req.kv_tokens_needed = 50;
    assert_eq!(
        plan(&cands, &req, &model).expect("route").hops[0].peer,
        peer(1)
    );
    req.kv_tokens_needed = 4096;
    let route = plan(&cands, &req, &model).expect("route");
    assert_eq!(route.hops[0].peer, peer(2), "the full worker is avoided");
    // 20 tokens/s: 50 ms per token, plus 1 ms RTT.
    assert_eq!(route.cost.expected_us_per_token, 51_000.0);
}

#[test]
fn a_replan_after_a_failure_picks_the_spare() {
    let model = CostModel::default();
    let cands = vec![
        worker(1, 0, 10, 30, 5),
        worker(2, 10, 20, 30, 5),
        worker(3, 20, 30, 30, 5),
        worker(4, 10, 20, 10, 5),
    ];
    let route = plan(&cands, &request(0, 30), &model).expect("route");
    assert_eq!(
        spans(&route),
        vec![(peer(1), 0, 10), (peer(2), 10, 20), (peer(3), 20, 30)]
    );
    // Worker 2 fails while generating: re-plan blocks 10.. without it.
    let mut req = request(10, 30);
    req.exclude = vec![peer(2)];
    let route = plan(&cands, &req, &model).expect("the spare covers 10..20");
    assert_eq!(spans(&route), vec![(peer(4), 10, 20), (peer(3), 20, 30)]);
}

#[test]
fn the_cap_buys_a_slower_cheaper_route_and_says_when_none_fits() {
    let model = CostModel::default();
    let cands = vec![
        worker(1, 0, 30, 50, 100),
        worker(2, 0, 15, 20, 10),
        worker(3, 15, 30, 20, 10),
    ];
    let mut req = request(0, 30);
    assert_eq!(
        plan(&cands, &req, &model).expect("route").hops[0].peer,
        peer(1)
    );
    req.price_cap = Some(NanoTon(20));
    let route = plan(&cands, &req, &model).expect("the cheap pair fits");
    assert_eq!(route.cost.price_per_token, NanoTon(20));
    assert_eq!(route.cost.prompt_price_per_token, NanoTon(10));
    req.price_cap = Some(NanoTon(19));
    assert_eq!(
        plan(&cands, &req, &model),
        Err(RouteError::OverPriceCap {
            cheapest: NanoTon(20),
            cap: NanoTon(19)
        })
    );
    // With one hop allowed only the dear worker remains, so that is the cheapest.
    req.max_hops = 1;
    assert_eq!(
        plan(&cands, &req, &model),
        Err(RouteError::OverPriceCap {
            cheapest: NanoTon(100),
            cap: NanoTon(19)
        })
    );
    let pair = &cands[1..];
    assert_eq!(
        plan(pair, &req, &model),
        Err(RouteError::TooManyHops {
            needed: 2,
            max_hops: 1
        })
    );
}

#[test]
fn bad_requests_are_errors() {
    let model = CostModel::default();
    let cands = vec![worker(1, 0, 30, 50, 100), worker(2, 0, 15, 20, 10)];
    assert_eq!(
        plan(&cands, &request(5, 5), &model),
        Err(RouteError::EmptyRequest)
    );
    assert_eq!(
        plan(&cands, &request(0, MAX_BLOCKS + 1), &model),
        Err(RouteError::TooManyBlocks {
            blocks: MAX_BLOCKS + 1,
            max: MAX_BLOCKS
        })
    );
    assert!(plan_k(&cands, &request(0, 30), &model, 0).is_empty());
    assert!(plan_k(&cands, &request(5, 5), &model, 3).is_empty());
}

#[test]
fn a_peer_listed_twice_is_used_at_most_once() {
    let model = CostModel::default();
    let mut cands = vec![worker(1, 0, 15, 50, 5), worker(1, 15, 30, 50, 5)];
    assert_eq!(
        plan(&cands, &request(0, 30), &model),
        Err(RouteError::NoFeasibleRoute)
    );
    cands.push(worker(2, 15, 30, 5, 5));
    let route = plan(&cands, &request(0, 30), &model).expect("the slow worker finishes");
    assert_eq!(spans(&route), vec![(peer(1), 0, 15), (peer(2), 15, 30)]);
    // With sub-spans the relaxation would reuse a fast peer; the planner must not.
    let mut req = request(0, 30);
    req.allow_partial = true;
    let cands = vec![
        worker(1, 0, 30, 10, 5),
        worker(2, 10, 20, 100, 5),
        worker(3, 20, 30, 20, 5),
    ];
    let route = plan(&cands, &req, &model).expect("route");
    assert_eq!(
        spans(&route),
        vec![(peer(1), 0, 10), (peer(2), 10, 20), (peer(3), 20, 30)]
    );
}

#[test]
fn when_the_relaxation_keeps_reusing_a_peer_the_exact_fallback_answers() {
    // Worker 0 spans 16 blocks at 1 ms per block with no RTT; workers 1..=8 each serve
    // one odd block at 10 µs. Every route that uses worker 0 around two or more of them
    // (247 of them) beats every valid one, so the relaxation gives up and the search
    // tracks used peers itself.
    let model = CostModel::default();
    let mut cands = vec![Candidate {
        rtt_us: 0,
        ..worker(0, 0, 16, 0, 5)
    }];
    cands[0].throughput_milli_tps = 62_500;
    for i in 1..=8u32 {
        let b = 2 * i - 1;
        cands.push(Candidate {
            rtt_us: 10,
            throughput_milli_tps: 100_000_000,
            ..worker(i, b, b + 1, 0, 5)
        });
    }
    let mut req = request(0, 16);
    req.allow_partial = true;
    let route = plan(&cands, &req, &model).expect("route");
    assert_eq!(spans(&route), vec![(peer(0), 0, 15), (peer(8), 15, 16)]);
    assert_eq!(route.cost.expected_us_per_token, 15_000.0 + 20.0);
    let two = plan_k(&cands, &req, &model, 2);
    assert_eq!(two.len(), 2);
    assert_eq!(spans(&two[1]), vec![(peer(0), 0, 16)]);
}

#[test]
fn plan_k_lists_distinct_routes_best_first() {
    let model = CostModel::default();
    let cands: Vec<Candidate> = (0..6)
        .map(|i| worker(i, (i % 2) * 15, (i % 2) * 15 + 15, 10 + u64::from(i), 5))
        .collect();
    let routes = plan_k(&cands, &request(0, 30), &model, 20);
    assert_eq!(routes.len(), 9, "3 workers on each half");
    for pair in routes.windows(2) {
        assert!(pair[0].cost.expected_us_per_token <= pair[1].cost.expected_us_per_token);
        assert_ne!(pair[0].hops, pair[1].hops);
    }
    assert_eq!(
        plan(&cands, &request(0, 30), &model).as_ref(),
        Ok(&routes[0])
    );
    assert_eq!(spans(&routes[0]), vec![(peer(4), 0, 15), (peer(5), 15, 30)]);
}

// ---------------------------------------------------------------- placement

#[test]
fn coverage_and_throughput_count_each_block() {
    let cands = vec![worker(1, 0, 10, 5, 0), worker(2, 5, 40, 2, 0)];
    let cov = coverage(&cands, 30);
    assert_eq!(cov.len(), 30);
    assert_eq!((cov[0], cov[5], cov[9], cov[10], cov[29]), (1, 2, 2, 1, 1));
    let tps = per_block_throughput(30, &cands);
    assert_eq!((tps[0], tps[7], tps[20]), (5.0, 7.0, 2.0));
}

#[test]
fn new_workers_fill_the_weakest_region() {
    let mut swarm = Vec::new();
    let mut placed = Vec::new();
    for i in 0..6 {
        let span = choose_span(30, 10, &swarm, 10_000).expect("valid span");
        placed.push((span.start(), span.end()));
        swarm.push(worker(i, span.start(), span.end(), 10, 0));
    }
    // Three disjoint workers cover the model, then the next three double it evenly.
    assert_eq!(
        placed,
        vec![(0, 10), (10, 20), (20, 30), (0, 10), (10, 20), (20, 30)]
    );
    assert_eq!(
        choose_span(30, 0, &swarm, 1),
        Err(RouteError::InvalidSpan {
            span_len: 0,
            n_blocks: 30
        })
    );
    assert_eq!(
        choose_span(30, 31, &swarm, 1),
        Err(RouteError::InvalidSpan {
            span_len: 31,
            n_blocks: 30
        })
    );
    assert_eq!(
        choose_span(0, 0, &swarm, 1),
        Err(RouteError::InvalidSpan {
            span_len: 0,
            n_blocks: 0
        })
    );
}

proptest! {
    #[test]
    fn choose_span_matches_brute_force(
        n in 1u32..16,
        raw in prop::collection::vec((0u32..16, 1u32..8, 0u64..5), 0..8),
        span_frac in 0.0f64..1.0,
        mine in 0u64..5,
    ) {
        let others: Vec<Candidate> = raw
            .iter()
            .enumerate()
            .map(|(i, &(s, l, t))| worker(i as u32, s.min(n), (s + l).min(n + 3), t, 0))
            .collect();
        let span_len = 1 + ((n - 1) as f64 * span_frac) as u32;
        let chosen = choose_span(n, span_len, &others, mine * 1000).expect("valid");
        prop_assert_eq!(chosen.len(), span_len);
        prop_assert!(chosen.fits_in(n));
        // Brute force: each start's per-block throughput, then its minimum and the
        // sorted vector, in whole tokens per second (the workers' throughputs are whole).
        let base: Vec<u64> = (0..n)
            .map(|b| others.iter().filter(|c| c.blocks.contains(b)).map(|c| c.throughput_milli_tps / 1000).sum())
            .collect();
        let with = |start: u32| -> Vec<u64> {
            let mut v = base.clone();
            for b in start..start + span_len {
                v[b as usize] += mine;
            }
            v.sort();
            v
        };
        let best_min = (0..=n - span_len).map(|s| with(s)[0]).max().expect("a start");
        prop_assert_eq!(with(chosen.start())[0], best_min, "the minimum is raised as far as it can be");
        let best = (0..=n - span_len).fold(None::<(u32, Vec<u64>)>, |acc, s| match acc {
            Some((bs, bv)) if bv >= with(s) => Some((bs, bv)),
            _ => Some((s, with(s))),
        });
        prop_assert_eq!(Some(chosen.start()), best.map(|b| b.0));
        // A unique weakest block is always inside the chosen span.
        let weakest = *base.iter().min().expect("n >= 1");
        if mine > 0 && base.iter().filter(|&&t| t == weakest).count() == 1 {
            let w = base.iter().position(|&t| t == weakest).expect("present") as u32;
            prop_assert!(chosen.contains(w));
        }
    }
}

/// A worker that has not measured its speed still counts as covering its blocks once it
/// goes through `placement_candidate`: the new worker takes the blocks nobody serves.
#[test]
fn unmeasured_workers_still_cover_their_blocks_in_placement() {
    let others: Vec<Candidate> = [(0, 10), (20, 30)]
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| Candidate {
            throughput_milli_tps: 0,
            ..worker(i as u32, s, e, 0, 0)
        })
        .map(placement_candidate)
        .collect();
    assert_eq!(
        choose_span(30, 10, &others, 1000).expect("span"),
        BlockRange::new(10, 20).expect("range")
    );
}

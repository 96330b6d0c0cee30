//! Route planning time against swarm size: `plan()` on 100 to 100k random workers of a
//! 30-block model (spans of 5–15 blocks, random prices, RTTs, throughputs, KV room), in
//! µs per plan on one core. Baseline measured in the same run: one linear pass that
//! computes every candidate's hop cost (the least any planner must do).

use std::hint::black_box;
use std::time::{Duration, Instant};

use cocoon_protocol::PeerId;
use cocoon_protocol::announce::Prices;
use cocoon_protocol::route::{Candidate, CostModel, RouteRequest, hop_cost_us, plan};
use cocoon_protocol::units::{BlockRange, NanoTon};

const N_BLOCKS: u32 = 30;

/// splitmix64: a deterministic generator, so every run plans the same swarms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn peer(i: u32) -> PeerId {
    let b = i.to_be_bytes();
    PeerId::from_bytes(&[0, 4, b[0], b[1], b[2], b[3]]).expect("identity multihash")
}

fn swarm(n: usize, seed: u64) -> Vec<Candidate> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let len = rng.range(5, 15) as u32;
            let start = rng.range(0, u64::from(N_BLOCKS - len)) as u32;
            Candidate {
                peer: peer(i as u32),
                blocks: BlockRange::new(start, start + len).expect("ordered"),
                throughput_milli_tps: rng.range(5_000, 50_000),
                prices: Prices {
                    prompt: NanoTon(rng.range(1, 50)),
                    completion: NanoTon(rng.range(1, 100)),
                },
                free_kv_tokens: rng.range(0, 16_384),
                rtt_us: rng.range(1_000, 100_000),
                queued_requests: rng.range(0, 4) as u32,
                score: 0.0,
            }
        })
        .collect()
}

/// Mean µs per call of `f`, run for about `budget`.
fn micros_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 3 || start.elapsed() < budget {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
}

fn main() {
    let model = CostModel::default();
    let base = RouteRequest {
        blocks: BlockRange::new(0, N_BLOCKS).expect("ordered"),
        kv_tokens_needed: 2048,
        price_cap: None,
        exclude: Vec::new(),
        allow_partial: false,
        max_hops: 8,
        min_score: 0.0,
    };
    let capped = RouteRequest {
        price_cap: Some(NanoTon(60)),
        ..base.clone()
    };
    let partial = RouteRequest {
        allow_partial: true,
        ..capped.clone()
    };
    let configs = [
        ("whole spans, no cap", &base),
        ("whole spans, cap 60", &capped),
        ("sub-spans, cap 60", &partial),
    ];
    println!(
        "plan() on a 30-block model, single thread; baseline = one hop_cost_us pass over all candidates"
    );
    println!(
        "{:>8} | {:<20} | {:>12} | {:>12} | {:>8} | {:>5} | {:>10} | {:>6}",
        "workers", "request", "µs/plan", "µs/baseline", "ratio", "hops", "µs/token", "price"
    );
    for n in [100usize, 1_000, 10_000, 100_000] {
        let cands = swarm(n, 0x5eed ^ n as u64);
        let baseline = micros_per_call(Duration::from_millis(200), || {
            let total: f64 = cands
                .iter()
                .map(|c| hop_cost_us(c, c.blocks, &base, &model))
                .sum();
            black_box(total);
        });
        for (name, req) in configs {
            let route = plan(&cands, req, &model);
            let us = micros_per_call(Duration::from_millis(700), || {
                black_box(plan(black_box(&cands), req, &model)).ok();
            });
            let (hops, per_token, price) = match &route {
                Ok(r) => (
                    r.hops.len().to_string(),
                    format!("{:.0}", r.cost.expected_us_per_token),
                    r.cost.price_per_token.0.to_string(),
                ),
                Err(e) => (format!("{e}"), String::new(), String::new()),
            };
            println!(
                "{n:>8} | {name:<20} | {us:>12.1} | {baseline:>12.1} | {:>8.1} | {hops:>5} | {per_token:>10} | {price:>6}",
                us / baseline
            );
        }
    }
}

//! The cost model: the expected microseconds one hop adds to each generated token, and
//! its exact integer form (picoseconds) that the planner sums and compares.

use super::{Candidate, RouteRequest};
use crate::units::BlockRange;

/// Picoseconds per microsecond.
const PS_PER_US: f64 = 1e6;
/// Picoseconds per second, the numerator of per-block compute time.
const PS_PER_S: u128 = 1_000_000_000_000;

/// Weights of the parts of a hop's cost that are not measured directly.
#[derive(Clone, Copy, Debug)]
pub struct CostModel {
    /// Added to a hop whose worker has fewer free KV tokens than the request needs: it
    /// would have to evict another session or queue ours. Default 1 s, so that a worker
    /// with room wins unless it is slower by about a second per token.
    pub kv_penalty_us: f64,
    /// Added per request queued ahead of ours on the worker. Default 10 ms, about one
    /// decoding step of a batch on a consumer GPU.
    pub queue_us_per_request: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            kv_penalty_us: 1_000_000.0,
            queue_us_per_request: 10_000.0,
        }
    }
}

/// Expected microseconds per token that worker `c` adds when it runs `span`: its RTT,
/// plus `span.len()` times its per-block compute time (its measured throughput spread
/// evenly over its announced span), plus `queued_requests × queue_us_per_request`, plus
/// `kv_penalty_us` when `free_kv_tokens < req.kv_tokens_needed`. Negative or NaN model
/// weights count as zero. A worker with zero throughput or an empty announced span
/// cannot serve: its cost is `f64::INFINITY`. The value is rounded to whole
/// picoseconds, the unit the planner sums in.
pub fn hop_cost_us(c: &Candidate, span: BlockRange, req: &RouteRequest, model: &CostModel) -> f64 {
    match HopTime::of(c, req, model) {
        Some(t) => ps_to_us(t.for_len(span.len())),
        None => f64::INFINITY,
    }
}

/// A hop's cost split into the part paid once (picoseconds) and the worker's speed, so
/// that every time the planner sums and compares is an exact integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HopTime {
    /// RTT, queueing and KV penalty, in picoseconds.
    pub fixed_ps: u128,
    /// Blocks per second × 1000: throughput (milli-tokens/s) × announced span length.
    /// Higher is faster on every span.
    pub block_rate: u128,
}

impl HopTime {
    /// `None` when the worker cannot serve (zero throughput or empty span).
    pub fn of(c: &Candidate, req: &RouteRequest, model: &CostModel) -> Option<HopTime> {
        let span = u128::from(c.blocks.len());
        if c.throughput_milli_tps == 0 || span == 0 {
            return None;
        }
        let mut fixed_ps = u128::from(c.rtt_us) * 1_000_000;
        fixed_ps += us_to_ps(f64::from(c.queued_requests) * model.queue_us_per_request);
        if c.free_kv_tokens < req.kv_tokens_needed {
            fixed_ps += us_to_ps(model.kv_penalty_us);
        }
        Some(HopTime {
            fixed_ps,
            block_rate: u128::from(c.throughput_milli_tps) * span,
        })
    }

    /// The hop's time in picoseconds when it runs `len` blocks: the fixed part plus
    /// `len` blocks at the worker's rate, rounded once to the nearest picosecond.
    pub fn for_len(&self, len: u32) -> u128 {
        // len / (block_rate / 1000) seconds = len × 1000 × 1e12 / block_rate ps.
        let num = u128::from(len) * PS_PER_S * 1000;
        let half = self.block_rate / 2;
        // The same quotient in u64 when it fits: u128 division is several times slower,
        // and this runs for every hop option.
        let compute = match (u64::try_from(num + half), u64::try_from(self.block_rate)) {
            (Ok(n), Ok(d)) => u128::from(n / d),
            _ => (num + half) / self.block_rate,
        };
        self.fixed_ps + compute
    }
}

/// Microseconds to whole picoseconds; negative and NaN become 0, huge values saturate
/// at `u64::MAX` ps so that sums of many hops cannot overflow a `u128`.
fn us_to_ps(us: f64) -> u128 {
    if us.is_nan() || us <= 0.0 {
        return 0;
    }
    u128::from((us * PS_PER_US).round() as u64)
}

pub(crate) fn ps_to_us(ps: u128) -> f64 {
    ps as f64 / PS_PER_US
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Prices;
    use crate::route::tests::{peer, request};

    fn worker(milli_tps: u64, blocks: (u32, u32)) -> Candidate {
        Candidate {
            peer: peer(1),
            blocks: BlockRange::new(blocks.0, blocks.1).expect("ordered"),
            throughput_milli_tps: milli_tps,
            prices: Prices::default(),
            free_kv_tokens: 1000,
            rtt_us: 2000,
            queued_requests: 3,
            score: 0.0,
        }
    }

    #[test]
    fn cost_is_rtt_plus_compute_plus_queue_plus_kv_penalty() {
        // 10 tokens/s over 10 blocks: 100 ms per token, 10 ms per block.
        let c = worker(10_000, (0, 10));
        let mut req = request(0, 10);
        let model = CostModel {
            kv_penalty_us: 500_000.0,
            queue_us_per_request: 1_000.0,
        };
        let span = BlockRange::new(2, 6).expect("ordered");
        assert_eq!(
            hop_cost_us(&c, span, &req, &model),
            2000.0 + 40_000.0 + 3000.0
        );
        req.kv_tokens_needed = 1001;
        assert_eq!(
            hop_cost_us(&c, span, &req, &model),
            2000.0 + 40_000.0 + 3000.0 + 500_000.0
        );
        req.kv_tokens_needed = 1000;
        assert_eq!(
            hop_cost_us(&c, c.blocks, &req, &model),
            2000.0 + 100_000.0 + 3000.0
        );
    }

    #[test]
    fn a_worker_that_cannot_serve_costs_infinity_and_bad_weights_count_as_zero() {
        let req = request(0, 10);
        let model = CostModel {
            kv_penalty_us: f64::NAN,
            queue_us_per_request: -5.0,
        };
        let c = worker(0, (0, 10));
        assert_eq!(hop_cost_us(&c, c.blocks, &req, &model), f64::INFINITY);
        let c = worker(1_000, (3, 3));
        assert_eq!(hop_cost_us(&c, c.blocks, &req, &model), f64::INFINITY);
        let c = worker(1_000_000, (0, 10));
        assert_eq!(hop_cost_us(&c, c.blocks, &req, &model), 2000.0 + 1000.0);
    }
}

//! Stand-in for `cocoon_protocol::route` (route planning and `--blocks auto` placement),
//! which is being written on another branch. Same names and signatures as that API, so
//! the simulator switches to the protocol's own planner by changing one `use` in
//! `planner.rs`; this module is deleted then. Until that merge the simulator's routes
//! come from this simple planner, and its figures say so.

use cocoon_protocol::PeerId;
use cocoon_protocol::announce::Prices;
use cocoon_protocol::units::{BlockRange, NanoTon};

/// A worker the planner may use, built from its verified announcement and what the
/// client measured of it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub peer: PeerId,
    pub blocks: BlockRange,
    pub throughput_milli_tps: u64,
    pub prices: Prices,
    pub free_kv_tokens: u64,
    pub rtt_us: u64,
    pub queued_requests: u32,
    pub score: f64,
}

/// What the client asks for.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    pub blocks: BlockRange,
    pub kv_tokens_needed: u64,
    pub price_cap: Option<NanoTon>,
    pub exclude: Vec<PeerId>,
    pub allow_partial: bool,
    pub max_hops: usize,
    pub min_score: f64,
}

/// One hop: a worker and the blocks it computes for this route.
#[derive(Clone, Debug, PartialEq)]
pub struct Hop {
    pub peer: PeerId,
    pub blocks: BlockRange,
}

/// A planned route and its expected cost.
#[derive(Clone, Debug)]
pub struct Route {
    pub hops: Vec<Hop>,
    pub cost: RouteCost,
}

#[derive(Clone, Debug, Default)]
pub struct RouteCost {
    pub expected_us_per_token: f64,
    pub price_per_token: NanoTon,
    pub prompt_price_per_token: NanoTon,
}

/// Weights of the expected-latency objective.
#[derive(Clone, Debug)]
pub struct CostModel {
    /// Expected microseconds added per request already queued at a worker, per token.
    pub queue_us_per_request: f64,
    /// Penalty (µs per token) for a worker without KV room for the request.
    pub no_kv_penalty_us: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            queue_us_per_request: 20_000.0,
            no_kv_penalty_us: 1_000_000.0,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RouteError {
    #[error("no usable candidate covers block {block}")]
    Uncovered { block: u32 },
    #[error("no route within {max_hops} hops")]
    TooManyHops { max_hops: usize },
    #[error("no route under the price cap")]
    OverPriceCap,
    #[error("span of {span_len} blocks does not fit a model of {n_blocks}")]
    SpanTooLong { span_len: u32, n_blocks: u32 },
}

fn hop_us_per_token(c: &Candidate, n: u32, req: &RouteRequest, model: &CostModel) -> f64 {
    let tps = (c.throughput_milli_tps.max(1)) as f64 / 1000.0;
    let per_block = 1e6 / tps / f64::from(c.blocks.len().max(1));
    let kv = if c.free_kv_tokens < req.kv_tokens_needed {
        model.no_kv_penalty_us
    } else {
        0.0
    };
    per_block * f64::from(n)
        + c.rtt_us as f64 / 2.0
        + f64::from(c.queued_requests) * model.queue_us_per_request
        + kv
}

/// Plans a chain of hops covering `req.blocks` in order, minimising expected µs per token
/// within `max_hops`, skipping excluded peers, low scores and prices over the cap.
pub fn plan(
    cands: &[Candidate],
    req: &RouteRequest,
    model: &CostModel,
) -> Result<Route, RouteError> {
    let (s, e) = (req.blocks.start(), req.blocks.end());
    let usable: Vec<&Candidate> = cands
        .iter()
        .filter(|c| !req.exclude.contains(&c.peer) && c.score >= req.min_score)
        .filter(|c| {
            req.price_cap
                .is_none_or(|cap| c.prices.completion.0 <= cap.0)
        })
        .filter(|c| c.blocks.start() < e && c.blocks.end() > s)
        .collect();
    let width = (e - s) as usize + 1;
    let hops_max = req.max_hops.max(1);
    // best[h][p]: least cost covering [s, s+p) with h hops; back-pointer to the candidate.
    let mut best = vec![vec![f64::INFINITY; width]; hops_max + 1];
    let mut back: Vec<Vec<Option<(usize, usize)>>> = vec![vec![None; width]; hops_max + 1];
    best[0][0] = 0.0;
    for h in 0..hops_max {
        for p in 0..width - 1 {
            if !best[h][p].is_finite() {
                continue;
            }
            let at = s + p as u32;
            for (ci, c) in usable.iter().enumerate() {
                if !c.blocks.contains(at) {
                    continue;
                }
                let end = c.blocks.end().min(e);
                let q = (end - s) as usize;
                let cost = best[h][p] + hop_us_per_token(c, end - at, req, model);
                if cost < best[h + 1][q] {
                    best[h + 1][q] = cost;
                    back[h + 1][q] = Some((ci, p));
                }
            }
        }
    }
    let full = width - 1;
    let Some(h) = (1..=hops_max)
        .filter(|&h| best[h][full].is_finite())
        .min_by(|&a, &b| best[a][full].total_cmp(&best[b][full]))
    else {
        let uncovered = (s..e).find(|&b| !usable.iter().any(|c| c.blocks.contains(b)));
        return Err(match uncovered {
            Some(block) => RouteError::Uncovered { block },
            None if req.price_cap.is_some() => RouteError::OverPriceCap,
            None => RouteError::TooManyHops { max_hops: hops_max },
        });
    };
    let mut hops = Vec::new();
    let (mut hh, mut q) = (h, full);
    while hh > 0 {
        let (ci, p) = back[hh][q].expect("a finite cost has a back-pointer");
        let c = usable[ci];
        hops.push(Hop {
            peer: c.peer,
            blocks: BlockRange::new(s + p as u32, s + q as u32).expect("p < q"),
        });
        hh -= 1;
        q = p;
    }
    hops.reverse();
    let mut price = 0u64;
    let mut prompt_price = 0u64;
    for hop in &hops {
        if let Some(c) = usable.iter().find(|c| c.peer == hop.peer) {
            price = price.saturating_add(c.prices.completion.0);
            prompt_price = prompt_price.saturating_add(c.prices.prompt.0);
        }
    }
    Ok(Route {
        hops,
        cost: RouteCost {
            expected_us_per_token: best[h][full],
            price_per_token: NanoTon(price),
            prompt_price_per_token: NanoTon(prompt_price),
        },
    })
}

/// The span of `span_len` blocks that most raises the swarm's minimum per-block
/// throughput, given the spans others announce; ties go to the lowest start.
pub fn choose_span(
    n_blocks: u32,
    span_len: u32,
    others: &[Candidate],
    my_milli_tps: u64,
) -> Result<BlockRange, RouteError> {
    if span_len == 0 || span_len > n_blocks {
        return Err(RouteError::SpanTooLong { span_len, n_blocks });
    }
    let mut cover = vec![0u64; n_blocks as usize];
    for c in others {
        for b in c.blocks.start()..c.blocks.end().min(n_blocks) {
            cover[b as usize] += c.throughput_milli_tps;
        }
    }
    let mut best: Option<(u64, u64, u32)> = None;
    for start in 0..=n_blocks - span_len {
        let mut after = cover.clone();
        for v in &mut after[start as usize..(start + span_len) as usize] {
            *v += my_milli_tps;
        }
        let min = after.iter().copied().min().unwrap_or(0);
        let window: u64 = cover[start as usize..(start + span_len) as usize]
            .iter()
            .sum();
        let better = match best {
            None => true,
            Some((bm, bw, _)) => min > bm || (min == bm && window < bw),
        };
        if better {
            best = Some((min, window, start));
        }
    }
    let (_, _, start) = best.expect("at least one start fits");
    Ok(BlockRange::new(start, start + span_len).expect("ordered"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::identity::NodeIdentity;

    fn cand(n: u8, s: u32, e: u32, tps: u64) -> Candidate {
        Candidate {
            peer: NodeIdentity::from_secrets(&[n; 32], &[n; 32]).peer_id(),
            blocks: BlockRange::new(s, e).expect("ordered"),
            throughput_milli_tps: tps,
            prices: Prices::default(),
            free_kv_tokens: 10_000,
            rtt_us: 10_000,
            queued_requests: 0,
            score: 0.0,
        }
    }

    fn req(s: u32, e: u32) -> RouteRequest {
        RouteRequest {
            blocks: BlockRange::new(s, e).expect("ordered"),
            kv_tokens_needed: 100,
            price_cap: None,
            exclude: vec![],
            allow_partial: false,
            max_hops: 4,
            min_score: -1e9,
        }
    }

    #[test]
    fn covers_in_order_and_avoids_excluded() {
        let c = vec![
            cand(1, 0, 10, 42_000),
            cand(2, 10, 30, 21_000),
            cand(3, 5, 30, 10_000),
        ];
        let r = plan(&c, &req(0, 30), &CostModel::default()).expect("route");
        assert_eq!(r.hops.len(), 2);
        assert_eq!(r.hops[0].blocks, BlockRange::new(0, 10).expect("o"));
        assert_eq!(r.hops[1].peer, c[1].peer);
        let mut q = req(0, 30);
        q.exclude = vec![c[1].peer];
        let r = plan(&c, &q, &CostModel::default()).expect("route");
        assert_eq!(r.hops[1].peer, c[2].peer);
        assert_eq!(r.hops[1].blocks, BlockRange::new(10, 30).expect("o"));
        q.exclude = vec![c[1].peer, c[2].peer];
        assert_eq!(
            plan(&c, &q, &CostModel::default()).unwrap_err(),
            RouteError::Uncovered { block: 10 }
        );
    }

    #[test]
    fn auto_span_fills_the_weakest_blocks() {
        let c = vec![cand(1, 0, 10, 1000), cand(2, 10, 20, 1000)];
        assert_eq!(
            choose_span(30, 10, &c, 1000),
            Ok(BlockRange::new(20, 30).expect("o"))
        );
        assert!(choose_span(30, 31, &c, 1000).is_err());
    }
}

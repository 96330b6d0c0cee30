//! Why no route exists: the first block no chain reaches, too few hops allowed, or a
//! price cap below the cheapest route. Checked on the relaxation (peers reusable), which
//! is exact when each peer is listed once: merging the hops of a peer used twice (only
//! possible with `allow_partial`) into one hop over the blocks between never adds hops or
//! price, so the relaxed answer also holds with one hop per peer. A peer listed twice can
//! leave no valid route although the relaxation has one: `NoFeasibleRoute`.

use super::graph::HopGraph;
use super::{RouteError, RouteRequest};
use crate::units::NanoTon;

pub(crate) fn why_no_route(graph: &HopGraph, req: &RouteRequest) -> RouteError {
    let n = graph.len as usize;
    // Fewest hops from the request's start to each boundary; u32::MAX = unreachable.
    let mut hops = vec![u32::MAX; n + 1];
    hops[0] = 0;
    for o in 0..n {
        if hops[o] == u32::MAX {
            continue;
        }
        for opt in &graph.from[o] {
            let e = opt.end as usize;
            hops[e] = hops[e].min(hops[o] + 1);
        }
    }
    if hops[n] == u32::MAX {
        // No hop from a reachable boundary passes the furthest one, so its block is the
        // first that no chain can run.
        let furthest = (0..=n).rev().find(|&o| hops[o] != u32::MAX).unwrap_or(0);
        return RouteError::Uncovered {
            block: req.blocks.start() + furthest as u32,
        };
    }
    if hops[n] as usize > req.max_hops {
        return RouteError::TooManyHops {
            needed: hops[n] as usize,
            max_hops: req.max_hops,
        };
    }
    if let Some(cap) = req.price_cap {
        let cheapest = cheapest_within(graph, req.max_hops.min(n));
        if cheapest > u128::from(cap.0) {
            return RouteError::OverPriceCap {
                cheapest: NanoTon(u64::try_from(cheapest).unwrap_or(u64::MAX)),
                cap,
            };
        }
    }
    RouteError::NoFeasibleRoute
}

/// The least summed price of a chain to the end with at most `max_hops` hops
/// (`u128::MAX` if none).
fn cheapest_within(graph: &HopGraph, max_hops: usize) -> u128 {
    let n = graph.len as usize;
    // price[o] after round h: least price to reach o in at most h hops.
    let mut price = vec![u128::MAX; n + 1];
    price[0] = 0;
    for _ in 0..max_hops {
        let mut next = price.clone();
        for (&here, options) in price.iter().zip(&graph.from) {
            if here == u128::MAX {
                continue;
            }
            for opt in options {
                let e = opt.end as usize;
                next[e] = next[e].min(here + u128::from(opt.price));
            }
        }
        price = next;
    }
    price[n]
}

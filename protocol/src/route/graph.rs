//! The hop graph over block boundaries: every way a usable candidate can serve a hop,
//! grouped by the boundary it starts at, pruned to the options worth searching.

use super::Candidate;
use super::prune::{self, HopOption, Usable};

/// Every hop option, grouped by the boundary it starts at (offsets `0..len`).
pub(crate) struct HopGraph {
    pub len: u32,
    pub from: Vec<Vec<HopOption>>,
}

impl HopGraph {
    /// The hops of the usable candidates (each whole usable span, or with `allow_partial`
    /// every sub-span of it), pruned per (start, end) to those fewer than `k` others beat
    /// (not pruned when `k` is `usize::MAX`).
    pub(super) fn build(
        usable: &[Usable],
        cands: &[Candidate],
        len: u32,
        partial: bool,
        k: usize,
    ) -> HopGraph {
        let mut from: Vec<Vec<HopOption>> = vec![Vec::new(); len as usize];
        let beaten = if partial || k != 1 {
            Vec::new()
        } else {
            strictly_beaten(usable, len)
        };
        for (i, u) in usable.iter().enumerate() {
            if beaten.get(i).copied().unwrap_or(false) {
                continue;
            }
            let usable = i as u32;
            let starts = if partial {
                u.start..u.end
            } else {
                u.start..u.start + 1
            };
            for a in starts {
                let ends = if partial {
                    a + 1..=u.end
                } else {
                    u.end..=u.end
                };
                for end in ends {
                    from[a as usize].push(HopOption {
                        end,
                        usable,
                        time: u.time.for_len(end - a),
                        price: u.price,
                    });
                }
            }
        }
        if k != usize::MAX {
            for options in &mut from {
                prune::prune_options(options, usable, cands, k);
            }
        }
        HopGraph { len, from }
    }

    /// Per boundary, the fewest hops and the least price (each on its own) of any way to
    /// the end: lower bounds that prune the search.
    pub(super) fn bounds_to_end(&self) -> (Vec<u32>, Vec<u128>) {
        let n = self.len as usize;
        let mut hops = vec![u32::MAX; n + 1];
        let mut price = vec![u128::MAX; n + 1];
        hops[n] = 0;
        price[n] = 0;
        for o in (0..n).rev() {
            for opt in &self.from[o] {
                let e = opt.end as usize;
                if hops[e] != u32::MAX {
                    hops[o] = hops[o].min(hops[e] + 1);
                    price[o] = price[o].min(price[e] + u128::from(opt.price));
                }
            }
        }
        (hops, price)
    }
}

/// Without `allow_partial` and for the single best route: which candidates are strictly
/// beaten on (time, price) by the fastest or the cheapest candidate of their own span.
/// One linear pass that spares the sort of `prune_options` most of a large swarm; empty
/// (nothing marked) when the request is too long for the per-span table.
fn strictly_beaten(usable: &[Usable], len: u32) -> Vec<bool> {
    let w = len as usize + 1;
    if w * w > 1 << 16 {
        return Vec::new();
    }
    let times: Vec<u128> = usable
        .iter()
        .map(|u| u.time.for_len(u.end - u.start))
        .collect();
    // Per (start, end): the fastest (time, price) and the cheapest (price, time).
    let mut fastest = vec![(u128::MAX, u64::MAX); w * w];
    let mut cheapest = vec![(u64::MAX, u128::MAX); w * w];
    for (u, &t) in usable.iter().zip(&times) {
        let span = u.start as usize * w + u.end as usize;
        fastest[span] = fastest[span].min((t, u.price));
        cheapest[span] = cheapest[span].min((u.price, t));
    }
    let beats = |(bt, bp): (u128, u64), t: u128, p: u64| bt <= t && bp <= p && (bt < t || bp < p);
    usable
        .iter()
        .zip(&times)
        .map(|(u, &t)| {
            let span = u.start as usize * w + u.end as usize;
            let (cp, ct) = cheapest[span];
            beats(fastest[span], t, u.price) || beats((ct, cp), t, u.price)
        })
        .collect()
}

//! Gossip dissemination of announcements on a gossipsub-shaped mesh: each node keeps
//! between `D_lo` and `D_hi` mesh peers (aiming at `D`), re-grafts at heartbeats when
//! peers leave, and a message spreads by eager push along mesh links. The first arrival
//! at each node is the shortest path over online nodes (link one-way latency plus
//! validation per hop), computed with Dijkstra for sampled announcements.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::Rng;

use crate::dist::SimRng;
use crate::scenario::GossipCfg;

/// The mesh: undirected adjacency lists over node indices.
#[derive(Clone, Debug)]
pub struct Mesh {
    adj: Vec<Vec<u32>>,
    d: u32,
    d_lo: u32,
    d_hi: u32,
}

/// Where one announcement reached, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Propagation {
    /// Arrival delay at each reached node other than the origin, µs, sorted.
    pub delays_us: Vec<f64>,
    /// Online nodes (origin excluded) that it did not reach.
    pub unreached: usize,
}

impl Propagation {
    pub fn quantile_us(&self, q: f64) -> f64 {
        quantile(&self.delays_us, q)
    }
}

/// The `q`-quantile of sorted values (nearest rank); 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

impl Mesh {
    /// Each node grafts `D` random peers; degrees are then trimmed to `D_hi`.
    pub fn build(rng: &mut SimRng, n: usize, cfg: &GossipCfg) -> Mesh {
        let mut mesh = Mesh {
            adj: vec![Vec::new(); n],
            d: cfg.d,
            d_lo: cfg.d_lo,
            d_hi: cfg.d_hi,
        };
        if n < 2 {
            return mesh;
        }
        let want = (cfg.d as usize).min(n - 1);
        for a in 0..n {
            let mut tries = 0;
            while mesh.adj[a].len() < want && tries < 8 * want {
                tries += 1;
                let b = rng.random_range(0..n);
                mesh.link(a, b);
            }
        }
        mesh
    }

    fn link(&mut self, a: usize, b: usize) -> bool {
        if a == b
            || self.adj[a].len() >= self.d_hi as usize
            || self.adj[b].len() >= self.d_hi as usize
            || self.adj[a].contains(&(b as u32))
        {
            return false;
        }
        self.adj[a].push(b as u32);
        self.adj[b].push(a as u32);
        true
    }

    pub fn neighbours(&self, a: usize) -> &[u32] {
        &self.adj[a]
    }

    /// Heartbeat repair after `gone` left: its mesh links are pruned, and each former
    /// peer whose degree fell below `D_lo` grafts random online peers back up to `D`.
    pub fn repair(&mut self, rng: &mut SimRng, gone: usize, online: &[bool]) -> u32 {
        let peers = std::mem::take(&mut self.adj[gone]);
        let n = self.adj.len();
        let mut grafts = 0;
        for p in peers {
            let p = p as usize;
            self.adj[p].retain(|&x| x as usize != gone);
            if self.adj[p].len() >= self.d_lo as usize {
                continue;
            }
            let mut tries = 0;
            while self.adj[p].len() < self.d as usize && tries < 32 {
                tries += 1;
                let b = rng.random_range(0..n);
                if online[b] && self.link(p, b) {
                    grafts += 1;
                }
            }
        }
        grafts
    }

    /// A node that comes online grafts `D` online peers.
    pub fn join(&mut self, rng: &mut SimRng, node: usize, online: &[bool]) {
        let n = self.adj.len();
        let mut tries = 0;
        while self.adj[node].len() < self.d as usize && tries < 32 {
            tries += 1;
            let b = rng.random_range(0..n);
            if online[b] {
                self.link(node, b);
            }
        }
    }

    /// First-arrival delays from `origin` over online nodes; `hop_us(a, b)` is the delay
    /// of one mesh hop (latency plus validation).
    pub fn propagate(
        &self,
        origin: usize,
        online: &[bool],
        mut hop_us: impl FnMut(usize, usize) -> f64,
    ) -> Propagation {
        let n = self.adj.len();
        let mut dist = vec![f64::INFINITY; n];
        let mut heap = BinaryHeap::new();
        dist[origin] = 0.0;
        heap.push(Reverse((OrdF64(0.0), origin as u32)));
        while let Some(Reverse((OrdF64(d), a))) = heap.pop() {
            let a = a as usize;
            if d > dist[a] {
                continue;
            }
            for &b in &self.adj[a] {
                let b = b as usize;
                if !online[b] {
                    continue;
                }
                let nd = d + hop_us(a, b);
                if nd < dist[b] {
                    dist[b] = nd;
                    heap.push(Reverse((OrdF64(nd), b as u32)));
                }
            }
        }
        let mut delays_us = Vec::new();
        let mut unreached = 0;
        for (i, d) in dist.iter().enumerate() {
            if i == origin || !online[i] {
                continue;
            }
            if d.is_finite() {
                delays_us.push(*d);
            } else {
                unreached += 1;
            }
        }
        delays_us.sort_by(f64::total_cmp);
        Propagation {
            delays_us,
            unreached,
        }
    }
}

/// An `f64` ordered by `total_cmp`, for the heap.
#[derive(Clone, Copy, Debug, PartialEq)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mesh_degrees_stay_in_bounds_and_reach_everyone() {
        let mut rng = SimRng::seed_from_u64(3);
        let cfg = GossipCfg::default();
        let mut m = Mesh::build(&mut rng, 2000, &cfg);
        assert!(m.adj.iter().all(|a| a.len() <= cfg.d_hi as usize));
        let mut online = vec![true; 2000];
        let p = m.propagate(0, &online, |_, _| 1000.0);
        assert_eq!(p.unreached, 0);
        assert_eq!(p.delays_us.len(), 1999);
        // log_6(2000) ≈ 4.2 hops: the farthest node is a handful of hops away.
        assert!(p.quantile_us(1.0) <= 8000.0, "{}", p.quantile_us(1.0));
        for gone in 1..500 {
            online[gone] = false;
            m.repair(&mut rng, gone, &online);
        }
        let p = m.propagate(0, &online, |_, _| 1000.0);
        assert_eq!(p.delays_us.len() + p.unreached, 2000 - 499 - 1);
        assert!(p.unreached < 10, "{}", p.unreached);
    }
}

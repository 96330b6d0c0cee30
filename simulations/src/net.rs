//! The network model: per-region round-trip times with jitter, link bandwidth, message
//! loss, and the relay detour of nodes behind NAT.

use crate::dist::{self, SimRng};
use crate::scenario::NetworkCfg;

/// Where a node sits on the network.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub region: u8,
    /// Behind NAT: reached through a relay.
    pub nat: bool,
}

/// Link latencies and transfer times, in microseconds.
#[derive(Clone, Debug)]
pub struct Network {
    rtt_us: Vec<Vec<f64>>,
    bytes_per_us: f64,
    loss: f64,
    relay_us: f64,
    jitter: f64,
}

impl Network {
    pub fn new(cfg: &NetworkCfg) -> Self {
        Network {
            rtt_us: cfg
                .rtt_ms
                .iter()
                .map(|row| row.iter().map(|ms| ms * 1000.0).collect())
                .collect(),
            bytes_per_us: cfg.bandwidth_mbps / 8.0,
            loss: cfg.loss,
            relay_us: cfg.relay_overhead_ms * 1000.0,
            jitter: cfg.jitter,
        }
    }

    /// The expected round-trip time between two nodes (no jitter), in µs; a NAT'd end
    /// adds the relay detour both ways.
    pub fn rtt_us(&self, a: Placement, b: Placement) -> f64 {
        let base = self.rtt_us[a.region as usize][b.region as usize];
        let relays = u8::from(a.nat) + u8::from(b.nat);
        base + 2.0 * self.relay_us * f64::from(relays)
    }

    /// One-way latency of a message of `bytes` from `a` to `b` (half an RTT with jitter,
    /// plus serialisation), in µs.
    pub fn one_way_us(&self, rng: &mut SimRng, a: Placement, b: Placement, bytes: u64) -> f64 {
        let j = if self.jitter > 0.0 {
            1.0 + self.jitter * (2.0 * dist::unit(rng) - 1.0)
        } else {
            1.0
        };
        self.rtt_us(a, b) / 2.0 * j + bytes as f64 / self.bytes_per_us
    }

    /// Extra delay from lost messages among `messages` sent over links with mean RTT
    /// `rtt_us`: each loss costs one RTT to recover.
    pub fn loss_delay_us(&self, rng: &mut SimRng, messages: u64, rtt_us: f64) -> f64 {
        dist::poisson(rng, messages as f64 * self.loss) as f64 * rtt_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetworkCfg {
        NetworkCfg {
            regions: vec!["eu".into(), "us".into()],
            region_share: vec![1.0, 1.0],
            rtt_ms: vec![vec![20.0, 90.0], vec![90.0, 30.0]],
            bandwidth_mbps: 80.0,
            loss: 0.0,
            nat_share: 0.5,
            relay_overhead_ms: 5.0,
            jitter: 0.0,
            region_of: Vec::new(),
        }
    }

    #[test]
    fn rtt_and_transfer() {
        let n = Network::new(&cfg());
        let eu = Placement {
            region: 0,
            nat: false,
        };
        let us_nat = Placement {
            region: 1,
            nat: true,
        };
        assert_eq!(n.rtt_us(eu, eu), 20_000.0);
        assert_eq!(n.rtt_us(eu, us_nat), 90_000.0 + 10_000.0);
        let mut rng = <SimRng as rand::SeedableRng>::seed_from_u64(1);
        // 10 Mbyte/s: 10_000 bytes take 1000 µs.
        assert_eq!(n.one_way_us(&mut rng, eu, eu, 10_000), 10_000.0 + 1000.0);
    }
}

//! Token choice from logits: greedy argmax, or temperature / top-k / top-p sampling
//! driven by a seeded generator so that a seed reproduces a generation.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplingParams {
    /// 0 (or less) is greedy: argmax, lowest id on ties.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let uniform: f32 = self.rng.random();
        pick(logits, &self.params, uniform)
    }
}

/// Index of the largest logit; the lowest index among equals. NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Temperature, top-k and top-p sampling with a given uniform number in `[0, 1)`, so
/// that a GPU kernel fed the same number can be checked against it.
pub fn pick(logits: &[f32], params: &SamplingParams, uniform: f32) -> u32 {
    if params.is_greedy() || logits.is_empty() {
        return argmax(logits);
    }
    let mut order: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| !logits[i as usize].is_nan())
        .collect();
    // Most likely first; ties by lower id, so the choice never depends on sort stability.
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let Some(&first) = order.first() else {
        return 0;
    };
    let max = logits[first as usize];
    let inv_t = 1.0 / params.temperature;
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&i| ((logits[i as usize] - max) * inv_t).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut keep = probs.len();
    if params.top_p < 1.0 {
        let mut cumulative = 0.0;
        for (n, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= params.top_p {
                keep = n + 1;
                break;
            }
        }
    }
    let kept: f32 = probs[..keep].iter().sum();
    let target = uniform.clamp(0.0, 1.0) * kept;
    let mut cumulative = 0.0;
    for (n, p) in probs[..keep].iter().enumerate() {
        cumulative += p;
        if target < cumulative {
            return order[n];
        }
    }
    order[keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_lowest_id_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
    }

    #[test]
    fn greedy_params_ignore_the_random_number() {
        let p = SamplingParams::default();
        assert_eq!(pick(&[0.0, 5.0, 1.0], &p, 0.99), 1);
    }

    #[test]
    fn top_k_one_is_argmax_at_any_temperature() {
        let p = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        };
        for u in [0.0, 0.3, 0.999] {
            assert_eq!(pick(&[0.5, 0.1, 0.7, 0.7], &p, u), 2);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // Probabilities ~ [0.665, 0.245, 0.09]: top_p 0.5 keeps only the first.
        let logits = [2.0, 1.0, 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        assert_eq!(pick(&logits, &p, 0.99), 0);
        let p = SamplingParams { top_p: 0.8, ..p };
        assert_eq!(pick(&logits, &p, 0.99), 1);
        let p = SamplingParams { top_p: 1.0, ..p };
        assert_eq!(pick(&logits, &p, 0.99), 2);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0, (3.0f32).ln()]; // probabilities 1/4, 3/4
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        });
        let ones = (0..4000).filter(|_| s.sample(&logits) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones} of 4000");
    }

    #[test]
    fn a_seed_reproduces_the_choices() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams {
            temperature: 0.8,
            top_k: 20,
            top_p: 0.9,
            seed: 42,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
    }
}

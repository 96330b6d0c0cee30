//! Token choice from logits: greedy argmax, or temperature / top-k / top-p sampling
//! driven by a seeded generator so that a seed reproduces a generation.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplingParams {
    /// 0 (or less) is greedy: argmax, lowest id on ties.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0, or more than 64: the 64 most likely).
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
    crate::ops::argmax::reference(logits)
}

/// Temperature, top-k and top-p sampling with a given uniform number in `[0, 1)`: the
/// rule of the GPU sampling kernel (`ops::sample`), so either side picks the same id.
/// At most [`crate::ops::sample::MAX_TOP_K`] candidates are considered.
pub fn pick(logits: &[f32], params: &SamplingParams, uniform: f32) -> u32 {
    let top_k = u32::try_from(params.top_k).unwrap_or(u32::MAX);
    let kernel_params = crate::ops::sample::SamplingParams {
        temperature: params.temperature,
        top_k,
        top_p: params.top_p,
    };
    crate::ops::sample::reference(logits, &kernel_params, uniform)
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

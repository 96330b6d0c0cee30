//! Random draws for the models (exponential, lognormal, Poisson, weighted choice) from the
//! run's single seeded ChaCha stream, so a seed fixes every draw.

use rand::Rng;
use rand_chacha::ChaCha12Rng;

/// The run's random stream.
pub type SimRng = ChaCha12Rng;

/// A uniform draw in (0, 1], never zero (safe under `ln`).
pub fn unit(rng: &mut SimRng) -> f64 {
    1.0 - rng.random::<f64>()
}

/// Exponential with the given mean.
pub fn exp(rng: &mut SimRng, mean: f64) -> f64 {
    -mean * unit(rng).ln()
}

/// Standard normal (Box–Muller).
pub fn normal(rng: &mut SimRng) -> f64 {
    let (u1, u2) = (unit(rng), rng.random::<f64>());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Lognormal with the given mean and shape σ.
pub fn lognormal(rng: &mut SimRng, mean: f64, sigma: f64) -> f64 {
    let mu = mean.ln() - sigma * sigma / 2.0;
    (mu + sigma * normal(rng)).exp()
}

/// Poisson with mean `lambda` (Knuth below 30, a rounded normal above).
pub fn poisson(rng: &mut SimRng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u64;
    }
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

/// An index drawn with probability proportional to `weights` (not all zero).
pub fn weighted(rng: &mut SimRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn means_come_out_right() {
        let mut rng = SimRng::seed_from_u64(7);
        let n = 200_000;
        let m_exp: f64 = (0..n).map(|_| exp(&mut rng, 3.0)).sum::<f64>() / n as f64;
        let m_ln: f64 = (0..n).map(|_| lognormal(&mut rng, 50.0, 0.5)).sum::<f64>() / n as f64;
        let m_p: f64 = (0..n).map(|_| poisson(&mut rng, 4.0) as f64).sum::<f64>() / n as f64;
        assert!((m_exp - 3.0).abs() < 0.05, "{m_exp}");
        assert!((m_ln - 50.0).abs() < 0.5, "{m_ln}");
        assert!((m_p - 4.0).abs() < 0.05, "{m_p}");
        let hits = (0..n)
            .filter(|_| weighted(&mut rng, &[1.0, 3.0]) == 1)
            .count();
        assert!((hits as f64 / n as f64 - 0.75).abs() < 0.01);
    }
}

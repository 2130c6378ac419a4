//! Exact discrete noise (Canonne, Kamath, Steinke 2020): discrete Laplace and discrete
//! Gaussian drawn with integer arithmetic only, so there are no floating-point holes to
//! attack (Mironov 2012). Every random bit comes from the caller's RNG, which in
//! production is ChaCha20 seeded from the operating system.
//!
//! Scales are rationals `num/den`; callers build them from ε in millionths.

use rand::{Rng, RngCore};

/// Uniform integer in `[0, n)`, unbiased (rejection sampling).
fn uniform(rng: &mut dyn RngCore, n: u128) -> u128 {
    debug_assert!(n > 0);
    if n == 1 {
        return 0;
    }
    let zone = u128::MAX - (u128::MAX % n) - 1;
    loop {
        let x = ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128;
        if x <= zone {
            return x % n;
        }
    }
}

/// Bernoulli(num/den).
fn bernoulli(rng: &mut dyn RngCore, num: u128, den: u128) -> bool {
    uniform(rng, den) < num
}

/// Bernoulli(exp(-num/den)) for num/den ≥ 0 (CKS Algorithm 1).
fn bernoulli_exp(rng: &mut dyn RngCore, num: u128, den: u128) -> bool {
    if num <= den {
        let mut k: u128 = 1;
        loop {
            // A ~ Bernoulli(γ / k)
            if !bernoulli(rng, num, den * k) {
                return k % 2 == 1;
            }
            k += 1;
        }
    } else {
        for _ in 0..(num / den) {
            if !bernoulli_exp(rng, 1, 1) {
                return false;
            }
        }
        bernoulli_exp(rng, num % den, den)
    }
}

/// Discrete Laplace with scale `t/s`: P(x) ∝ exp(-|x|·s/t) (CKS Algorithm 2).
pub fn discrete_laplace(rng: &mut dyn RngCore, t: u128, s: u128) -> i128 {
    assert!(t > 0 && s > 0, "scale must be positive");
    loop {
        let u = uniform(rng, t);
        if !bernoulli_exp(rng, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(rng, 1, 1) {
            v += 1;
        }
        let x = u + t * v;
        let y = (x / s) as i128;
        let b = rng.gen::<bool>();
        if b && y == 0 {
            continue;
        }
        return if b { -y } else { y };
    }
}

/// Discrete Gaussian with variance parameter σ² = num/den (CKS Algorithm 3).
pub fn discrete_gaussian(rng: &mut dyn RngCore, num: u128, den: u128) -> i128 {
    assert!(num > 0 && den > 0, "variance must be positive");
    // t = floor(σ) + 1, computed exactly: largest t0 with t0² ≤ σ².
    let mut t0 = ((num as f64 / den as f64).sqrt()) as u128;
    while t0 * t0 * den > num {
        t0 -= 1;
    }
    while (t0 + 1) * (t0 + 1) * den <= num {
        t0 += 1;
    }
    let t = t0 + 1;
    loop {
        let y = discrete_laplace(rng, t, 1);
        let a = y.unsigned_abs();
        // γ = (|y| − σ²/t)² / (2σ²) = (|y|·den·t − num)² / (2·num·den·t²)
        let diff = (a * den * t).abs_diff(num);
        if bernoulli_exp(rng, diff * diff, 2 * num * den * t * t) {
            return y;
        }
    }
}

/// q = e^(-1/b) for a discrete Laplace of scale b.
pub fn laplace_q(b: f64) -> f64 {
    (-1.0 / b).exp()
}

/// Half-width m of the central interval: P(|Z| ≤ m) ≥ `level` for discrete Laplace(b).
pub fn laplace_half_width(b: f64, level: f64) -> i64 {
    // P(|Z| > m) = 2 q^(m+1) / (1 + q)
    let q = laplace_q(b);
    let m = ((1.0 - level) * (1.0 + q) / 2.0).ln() / q.ln() - 1.0;
    m.ceil().max(0.0) as i64
}

/// Half-width of the central `level` interval for a discrete Gaussian with σ (normal approximation, rounded up).
pub fn gaussian_half_width(sigma: f64, level: f64) -> i64 {
    let z = if level >= 0.99 { 2.5758 } else { 1.96 };
    (z * sigma).ceil() as i64
}

/// Exact pmf of the discrete Laplace of scale b at x.
pub fn laplace_pmf(b: f64, x: i64) -> f64 {
    let q = laplace_q(b);
    (1.0 - q) / (1.0 + q) * q.powi(x.unsigned_abs() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn bernoulli_exp_matches_its_probability() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for (num, den) in [(1u128, 2u128), (3, 1), (7, 4)] {
            let n = 100_000;
            let hits =
                (0..n).filter(|_| bernoulli_exp(&mut rng, num, den)).count() as f64 / n as f64;
            let p = (-(num as f64) / den as f64).exp();
            assert!(
                (hits - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3,
                "{num}/{den}: {hits} vs {p}"
            );
        }
    }

    #[test]
    fn half_width_covers_95_percent() {
        for b in [0.5, 2.0, 10.0, 400.0] {
            let m = laplace_half_width(b, 0.95);
            let mass: f64 = (-m..=m).map(|x| laplace_pmf(b, x)).sum();
            assert!(mass >= 0.95, "b={b} m={m} mass={mass}");
            if m > 0 {
                let less: f64 = (-(m - 1)..=(m - 1)).map(|x| laplace_pmf(b, x)).sum();
                assert!(less < 0.95, "m is the smallest such width");
            }
        }
    }
}

//! Acceptance: the exact samplers match their closed forms, and a test that a wrong
//! implementation fails — rounded continuous noise is rejected by the same chi-square.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use veil_release::noise::{discrete_gaussian, discrete_laplace};

const N: usize = 200_000;

/// Chi-square statistic of `samples` against `pmf`, pooling bins with expected < 5.
fn chi_square(samples: &[i64], pmf: &dyn Fn(i64) -> f64) -> (f64, usize) {
    let max = samples.iter().map(|x| x.abs()).max().unwrap();
    let n = samples.len() as f64;
    let mut counts = std::collections::HashMap::new();
    for &x in samples {
        *counts.entry(x).or_insert(0usize) += 1;
    }
    let (mut stat, mut bins) = (0.0, 0);
    let (mut pool_obs, mut pool_exp) = (0.0, 0.0);
    let mut covered = 0.0;
    for x in -max - 1..=max + 1 {
        let e = pmf(x) * n;
        covered += pmf(x);
        let o = *counts.get(&x).unwrap_or(&0) as f64;
        if e >= 5.0 {
            stat += (o - e).powi(2) / e;
            bins += 1;
        } else {
            pool_obs += o;
            pool_exp += e;
        }
    }
    pool_exp += (1.0 - covered).max(0.0) * n;
    if pool_exp > 0.0 {
        stat += (pool_obs - pool_exp).powi(2) / pool_exp;
        bins += 1;
    }
    (stat, bins - 1)
}

/// Upper 0.1% point of chi-square (Wilson–Hilferty).
fn critical(df: usize) -> f64 {
    let d = df as f64;
    let z = 3.09;
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

fn laplace_pmf(b: f64) -> impl Fn(i64) -> f64 {
    let q = (-1.0 / b).exp();
    move |x| (1.0 - q) / (1.0 + q) * q.powf(x.unsigned_abs() as f64)
}

fn moments(s: &[i64]) -> (f64, f64) {
    let n = s.len() as f64;
    let mean = s.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = s.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

#[test]
fn discrete_laplace_matches_mean_variance_and_pmf() {
    // scale b = t/s
    for (i, (t, s)) in [(1u128, 2u128), (2, 1), (15, 2), (30, 1)]
        .into_iter()
        .enumerate()
    {
        let b = t as f64 / s as f64;
        let mut rng = ChaCha20Rng::seed_from_u64(100 + i as u64);
        let samples: Vec<i64> = (0..N)
            .map(|_| discrete_laplace(&mut rng, t, s) as i64)
            .collect();
        let q = (-1.0 / b).exp();
        let var = 2.0 * q / (1.0 - q).powi(2);
        let (m, v) = moments(&samples);
        assert!(m.abs() < 4.0 * (var / N as f64).sqrt(), "b={b}: mean {m}");
        assert!((v - var).abs() / var < 0.03, "b={b}: variance {v} vs {var}");
        let (stat, df) = chi_square(&samples, &laplace_pmf(b));
        assert!(
            stat < critical(df),
            "b={b}: chi2 {stat} df {df} crit {}",
            critical(df)
        );
    }
}

#[test]
fn rounded_continuous_laplace_fails_the_same_test() {
    for (i, b) in [0.5f64, 2.0].into_iter().enumerate() {
        let mut rng = ChaCha20Rng::seed_from_u64(200 + i as u64);
        let samples: Vec<i64> = (0..N)
            .map(|_| {
                let u: f64 = rng.gen::<f64>() - 0.5;
                (-b * u.signum() * (1.0 - 2.0 * u.abs()).ln()).round() as i64
            })
            .collect();
        let (stat, df) = chi_square(&samples, &laplace_pmf(b));
        assert!(
            stat > critical(df),
            "b={b}: the wrong sampler must fail (chi2 {stat}, crit {})",
            critical(df)
        );
    }
}

fn gaussian_pmf(sigma2: f64) -> impl Fn(i64) -> f64 {
    let r = (20.0 * sigma2.sqrt()).ceil() as i64 + 5;
    let z: f64 = (-r..=r)
        .map(|x| (-(x as f64).powi(2) / (2.0 * sigma2)).exp())
        .sum();
    move |x| (-(x as f64).powi(2) / (2.0 * sigma2)).exp() / z
}

#[test]
fn discrete_gaussian_matches_mean_variance_and_pmf() {
    for (i, (num, den)) in [(1u128, 1u128), (4, 1), (25, 1), (100, 3)]
        .into_iter()
        .enumerate()
    {
        let s2 = num as f64 / den as f64;
        let mut rng = ChaCha20Rng::seed_from_u64(300 + i as u64);
        let samples: Vec<i64> = (0..N)
            .map(|_| discrete_gaussian(&mut rng, num, den) as i64)
            .collect();
        let pmf = gaussian_pmf(s2);
        let r = (20.0 * s2.sqrt()).ceil() as i64;
        let var: f64 = (-r..=r).map(|x| (x as f64).powi(2) * pmf(x)).sum();
        let (m, v) = moments(&samples);
        assert!(m.abs() < 4.0 * (var / N as f64).sqrt(), "σ²={s2}: mean {m}");
        assert!(
            (v - var).abs() / var < 0.03,
            "σ²={s2}: variance {v} vs {var}"
        );
        let (stat, df) = chi_square(&samples, &pmf);
        assert!(stat < critical(df), "σ²={s2}: chi2 {stat} df {df}");
    }
    // A rounded continuous Gaussian fails the same test at σ = 1.
    let mut rng = ChaCha20Rng::seed_from_u64(399);
    let samples: Vec<i64> = (0..N)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-300), rng.gen());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).round() as i64
        })
        .collect();
    let (stat, df) = chi_square(&samples, &gaussian_pmf(1.0));
    assert!(stat > critical(df), "rounded normal must fail: chi2 {stat}");
}

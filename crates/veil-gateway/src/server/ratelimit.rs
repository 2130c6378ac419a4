//! Per-source rate limits: a token bucket of events per second with a burst allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets for every source, created on first use.
pub struct RateLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimits {
    /// `rate` events per second, up to `burst` at once; a rate of 0 disables limiting.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimits {
            rate,
            burst: burst.max(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` events from `source`'s bucket, or says how many whole seconds to wait.
    /// A request larger than the burst is let through when the bucket is full, so a
    /// legitimately large batch is slowed down, never refused forever.
    pub fn take(&self, source: &str, n: usize, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut b = self.buckets.lock().expect("rate limit lock");
        let (tokens, at) = b.entry(source.to_owned()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *at = now;
        let need = (n as f64).min(self.burst);
        if *tokens >= need {
            *tokens -= n as f64;
            Ok(())
        } else {
            Err(((need - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_the_rate() {
        let r = RateLimits::new(100.0, 200.0);
        let t0 = Instant::now();
        assert!(r.take("a", 150, t0).is_ok());
        assert_eq!(r.take("a", 100, t0), Err(1)); // 50 left, 50 more take 0.5 s → 1 s
        assert!(r.take("b", 200, t0).is_ok(), "buckets are per source");
        assert!(r.take("a", 100, t0 + Duration::from_millis(500)).is_ok());
        // A batch above the burst passes once the bucket is full, and leaves it in debt.
        assert!(r.take("c", 1_000, t0).is_ok());
        assert!(r.take("c", 1, t0 + Duration::from_secs(1)).is_err());
        assert!(r.take("c", 1, t0 + Duration::from_secs(9)).is_ok());
        assert!(RateLimits::new(0.0, 0.0).take("x", 1 << 30, t0).is_ok());
    }
}

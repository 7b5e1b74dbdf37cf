//! The `max_rate` cap of a spare's link (DESIGN.md §8): a token bucket in bytes, pure. Tokens
//! refill at `rate` per second up to a burst of [`BURST_SECONDS`] worth; taking more than is
//! there is allowed (a frame is never split) and the debt is the wait before sending. Over
//! any interval T the link therefore carries at most `rate × T + burst + one frame`.

/// Seconds of traffic the bucket may hold (how bursty the cap is).
pub const BURST_SECONDS: f64 = 0.25;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second, at `now_ms`.
    pub fn new(rate: u64, now_ms: u64) -> Self {
        assert!(
            rate > 0,
            "a rate cap is positive (checked by the configuration)"
        );
        let capacity = rate as f64 * BURST_SECONDS;
        TokenBucket {
            rate: rate as f64,
            capacity,
            tokens: capacity,
            last_ms: now_ms,
        }
    }

    /// Takes `bytes` at `now_ms`; returns how many ms to wait before sending them.
    pub fn take(&mut self, bytes: u64, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            0
        } else {
            (-self.tokens / self.rate * 1000.0).ceil() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut b = TokenBucket::new(1000, 0);
        assert_eq!(b.take(250, 0), 0, "the burst");
        assert_eq!(b.take(500, 0), 500, "then 500 bytes at 1000 B/s");
        // Sending as soon as allowed, 10 000 bytes take 10 s more.
        let mut now = 500;
        let mut sent = 0;
        while sent < 10_000 {
            now += b.take(100, now);
            sent += 100;
        }
        assert!((10_000..=10_600).contains(&now), "{now}");
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let mut b = TokenBucket::new(1000, 0);
        b.take(250, 0);
        assert_eq!(b.take(250, 60_000), 0);
        assert_eq!(b.take(250, 60_000), 250, "no more than one burst saved up");
    }
}

//! A per-peer frame budget checked before any signature is verified: a peer that sends
//! more than its budget has the excess dropped (counted as `rate_limited`) for the cost of
//! a map lookup, so a flood of junk cannot spend this node's CPU on Ed25519.
//!
//! Pure: time is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Token buckets per key (the transport peer a frame came from).
#[derive(Debug)]
pub struct FrameRateLimiter<K> {
    per_second: f64,
    burst: f64,
    keys_max: usize,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl<K: Eq + Hash + Clone> FrameRateLimiter<K> {
    /// `per_second` frames per key on average, bursts of `burst_seconds` worth, budgets for
    /// at most `keys_max` keys at once.
    pub fn new(per_second: u32, burst_seconds: u32, keys_max: usize) -> Self {
        let per_second = f64::from(per_second.max(1));
        FrameRateLimiter {
            per_second,
            burst: per_second * f64::from(burst_seconds.max(1)),
            keys_max: keys_max.max(1),
            buckets: HashMap::new(),
        }
    }

    /// True when `key` may send one more frame at `now` (and takes it from its budget).
    /// When budgets for `keys_max` keys are held, idle ones (full again) are forgotten;
    /// if none is idle, a new key is refused.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.keys_max {
                let (rate, burst) = (self.per_second, self.burst);
                self.buckets
                    .retain(|_, bucket| refill(bucket, now, rate, burst) < burst);
                if self.buckets.len() >= self.keys_max {
                    return false;
                }
            }
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: self.burst,
                    refilled_at: now,
                },
            );
        }
        let (rate, burst) = (self.per_second, self.burst);
        let Some(bucket) = self.buckets.get_mut(key) else {
            return false;
        };
        if refill(bucket, now, rate, burst) >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forget `key`'s budget (it disconnected).
    pub fn forget(&mut self, key: &K) {
        self.buckets.remove(key);
    }
}

/// Add what `rate` earned since the last refill, up to `burst`; the tokens now.
fn refill(bucket: &mut Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let earned = now
        .saturating_duration_since(bucket.refilled_at)
        .as_secs_f64()
        * rate;
    bucket.tokens = (bucket.tokens + earned).min(burst);
    bucket.refilled_at = now;
    bucket.tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let mut limiter = FrameRateLimiter::new(10, 2, 8);
        let start = Instant::now();
        let allowed = (0..50).filter(|_| limiter.allow(&"a", start)).count();
        assert_eq!(allowed, 20, "a burst of two seconds' worth");
        assert!(!limiter.allow(&"a", start));
        // Another key has its own budget.
        assert!(limiter.allow(&"b", start));
        // Half a second later, five more.
        let later = start + Duration::from_millis(500);
        let allowed = (0..50).filter(|_| limiter.allow(&"a", later)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn the_key_table_is_bounded_and_idle_keys_make_room() {
        let mut limiter = FrameRateLimiter::new(10, 1, 2);
        let start = Instant::now();
        assert!(limiter.allow(&1, start));
        assert!(limiter.allow(&2, start));
        // Both are busy: a third key is refused.
        assert!(!limiter.allow(&3, start));
        // Once they are idle (full again), the third gets a budget.
        assert!(limiter.allow(&3, start + Duration::from_secs(2)));
        limiter.forget(&3);
        assert!(limiter.allow(&4, start + Duration::from_secs(2)));
    }
}

//! Sign-in throttling: failures are counted per key (an account, an address) over a
//! sliding window; past the limit the key waits until its oldest failure leaves the
//! window. Kept in memory per node.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dashmap::DashMap;

#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    window: Duration,
    failures: DashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    pub fn new(limit: usize, window: Duration) -> Throttle {
        Throttle {
            limit,
            window,
            failures: DashMap::new(),
        }
    }

    /// How long `key` must wait before trying again, if it must.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut entry = self.failures.get_mut(key)?;
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            entry.pop_front();
        }
        (entry.len() >= self.limit)
            .then(|| self.window - now.duration_since(*entry.front().expect("limit > 0")))
    }

    pub fn fail(&self, key: &str, now: Instant) {
        let mut entry = self.failures.entry(key.to_string()).or_default();
        entry.push_back(now);
        while entry.len() > self.limit {
            entry.pop_front();
        }
    }

    pub fn clear(&self, key: &str) {
        self.failures.remove(key);
    }

    /// Drops keys with no failure in the window (bounded memory under a spray of
    /// addresses).
    pub fn prune(&self, now: Instant) {
        self.failures.retain(|_, f| {
            f.back()
                .is_some_and(|t| now.duration_since(*t) < self.window)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_a_key_waits_for_its_oldest_failure_to_age_out() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(t.wait("ann", start + Duration::from_secs(i)), None);
            t.fail("ann", start + Duration::from_secs(i));
        }
        let wait = t.wait("ann", start + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(t.wait("bob", start), None, "other keys are not affected");
        assert_eq!(t.wait("ann", start + Duration::from_secs(60)), None);
        t.fail("ann", start + Duration::from_secs(61));
        t.clear("ann");
        assert_eq!(t.wait("ann", start + Duration::from_secs(62)), None);
        t.fail("bob", start);
        t.prune(start + Duration::from_secs(120));
        assert!(t.failures.is_empty());
    }
}

//! Sign-in throttling: attempts are counted per key (an account, an address) over a
//! sliding window; past the limit the key waits until its oldest attempt leaves the
//! window. An attempt is reserved before the password is checked (check and count are one
//! step, so parallel attempts cannot all pass the check) and given back when it succeeds.
//! Kept in memory per node, with a bounded number of keys.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

#[derive(Debug)]
pub struct Throttle {
    limit: usize,
    window: Duration,
    max_keys: usize,
    attempts: DashMap<String, VecDeque<Instant>>,
    last_prune: Mutex<Option<Instant>>,
}

impl Throttle {
    /// `limit` attempts per key within `window`; at most `max_keys` keys are tracked.
    pub fn new(limit: usize, window: Duration, max_keys: usize) -> Throttle {
        Throttle {
            limit: limit.max(1),
            window,
            max_keys,
            attempts: DashMap::new(),
            last_prune: Mutex::new(None),
        }
    }

    /// Counts an attempt of `key` at `now`, or answers how long it must wait. A full
    /// table (every tracked key still within the window) refuses new keys for a window.
    pub fn reserve(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.prune_now_and_then(now);
        if !self.attempts.contains_key(key) && self.attempts.len() >= self.max_keys {
            self.prune(now);
            if self.attempts.len() >= self.max_keys {
                return Err(self.window);
            }
        }
        let mut entry = self.attempts.entry(key.to_string()).or_default();
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            entry.pop_front();
        }
        match entry.front() {
            Some(oldest) if entry.len() >= self.limit => {
                Err(self.window - now.duration_since(*oldest))
            }
            _ => {
                entry.push_back(now);
                Ok(())
            }
        }
    }

    /// Gives back the attempt reserved at `at` (it succeeded, or was never made).
    pub fn release(&self, key: &str, at: Instant) {
        if let Some(mut entry) = self.attempts.get_mut(key) {
            if let Some(i) = entry.iter().rposition(|t| *t == at) {
                entry.remove(i);
            }
        }
        self.attempts.remove_if(key, |_, a| a.is_empty());
    }

    /// Forgets every attempt of `key`.
    pub fn clear(&self, key: &str) {
        self.attempts.remove(key);
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.attempts.len()
    }

    /// Drops keys with no attempt in the window.
    pub fn prune(&self, now: Instant) {
        self.attempts.retain(|_, a| {
            a.back()
                .is_some_and(|t| now.duration_since(*t) < self.window)
        });
        *self.last_prune.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    }

    /// Prunes at most once a minute, so keys whose window passed do not pile up.
    fn prune_now_and_then(&self, now: Instant) {
        let due = self
            .last_prune
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60));
        if due {
            self.prune(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_a_key_waits_for_its_oldest_attempt_to_age_out() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(t.reserve("ann", start + Duration::from_secs(i)), Ok(()));
        }
        let at = start + Duration::from_secs(10);
        assert_eq!(t.reserve("ann", at), Err(Duration::from_secs(50)));
        assert_eq!(
            t.reserve("bob", start),
            Ok(()),
            "other keys are not affected"
        );
        assert_eq!(t.reserve("ann", start + Duration::from_secs(60)), Ok(()));
        t.clear("ann");
        assert_eq!(t.reserve("ann", start + Duration::from_secs(62)), Ok(()));
    }

    #[test]
    fn a_released_attempt_does_not_count() {
        let t = Throttle::new(2, Duration::from_secs(60), 100);
        let start = Instant::now();
        for i in 0..10 {
            let at = start + Duration::from_secs(i);
            assert_eq!(t.reserve("ann", at), Ok(()));
            t.release("ann", at);
        }
        assert_eq!(t.keys(), 0, "an empty key is dropped");
        assert_eq!(t.reserve("ann", start), Ok(()));
        assert_eq!(t.reserve("ann", start), Ok(()));
        assert!(t.reserve("ann", start).is_err());
    }

    #[test]
    fn keys_are_pruned_and_bounded() {
        let t = Throttle::new(5, Duration::from_secs(60), 3);
        let start = Instant::now();
        for key in ["a", "b", "c"] {
            assert_eq!(t.reserve(key, start), Ok(()));
        }
        // Full, all within the window: a new key waits; known keys still count.
        assert_eq!(t.reserve("d", start), Err(Duration::from_secs(60)));
        assert_eq!(t.reserve("a", start), Ok(()));
        // Past the window the old keys go, without anyone calling prune.
        let later = start + Duration::from_secs(61);
        assert_eq!(t.reserve("d", later), Ok(()));
        assert_eq!(t.keys(), 1);
        // And a minute on, a key whose window passed is dropped by the next attempt.
        assert_eq!(t.reserve("e", later + Duration::from_secs(120)), Ok(()));
        assert_eq!(t.keys(), 1);
    }
}

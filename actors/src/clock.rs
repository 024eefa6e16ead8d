//! The time campaigns run on: the system clock, or a manual one that tests set and move
//! (windows, time zones, due dates and expiry then play out without waiting).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// Cheap to clone; clones share the time.
#[derive(Clone, Debug)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<watch::Sender<DateTime<Utc>>>>,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `at` until it is set or advanced.
    pub fn manual(at: DateTime<Utc>) -> Clock {
        Clock {
            manual: Some(Arc::new(watch::Sender::new(at))),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            Some(tx) => *tx.borrow(),
            None => Utc::now(),
        }
    }

    /// Moves a manual clock to `at` (a system clock ignores it).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(tx) = &self.manual {
            tx.send_replace(at);
        }
    }

    pub fn advance(&self, by: TimeDelta) {
        if let Some(tx) = &self.manual {
            tx.send_modify(|t| *t += by);
        }
    }

    /// Waits until the clock reads `at` or later.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        match &self.manual {
            None => {
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
            }
            Some(tx) => {
                let mut rx = tx.subscribe();
                // Only fails if the clock is dropped, and `self` holds it.
                let _ = rx.wait_for(|now| *now >= at).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved() {
        let start = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap();
        let clock = Clock::manual(start);
        let at = start + TimeDelta::hours(1);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at).await }
        });
        tokio::task::yield_now().await;
        clock.advance(TimeDelta::minutes(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "half way there");
        clock.advance(TimeDelta::minutes(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken when the clock reached the time")
            .unwrap();
        assert_eq!(clock.now(), at);
    }
}

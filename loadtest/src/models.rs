//! Load models. Closed: a fixed number of customers, each waiting for its answer before
//! the next message, so the offered load falls when the server slows down. Open: sessions
//! arrive on a schedule whatever the server does, which shows queueing a closed model
//! hides.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::Model;
use crate::client::{run_session, Chat, Script};
use crate::stats::Recorder;

#[derive(Debug, Clone)]
pub struct Plan {
    pub model: Model,
    /// Closed: concurrent customers. Open: arrivals in all (None: until the deadline).
    pub sessions: Option<usize>,
    /// Open: arrivals per second once ramped up.
    pub rate: f64,
    pub duration: Option<Duration>,
    pub ramp_up: Duration,
}

/// Runs the plan to the end and returns how long it took.
pub async fn drive(
    chat: Arc<Chat>,
    script: Arc<Script>,
    rec: Arc<Recorder>,
    plan: &Plan,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let deadline = plan.duration.map(|d| start + d);
    let mut tasks = JoinSet::new();
    let customer = move |i: usize| {
        let (chat, script, rec) = (chat.clone(), script.clone(), rec.clone());
        async move { run_session(&chat, &script, &rec, i, deadline).await }
    };
    match plan.model {
        Model::Closed => {
            let n = plan.sessions.unwrap_or(1);
            for i in 0..n {
                let delay = plan.ramp_up.mul_f64(i as f64 / n as f64);
                let one = customer.clone();
                tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    // With a duration, a customer who finishes a session starts another.
                    loop {
                        one(i).await;
                        if deadline.is_none_or(|d| Instant::now() >= d) {
                            break;
                        }
                    }
                });
            }
        }
        Model::Open => {
            for k in 0.. {
                if plan.sessions.is_some_and(|n| k >= n) {
                    break;
                }
                let at = start + arrival_offset(k, plan.rate, plan.ramp_up);
                if deadline.is_some_and(|d| at >= d) {
                    break;
                }
                tokio::time::sleep_until(at).await;
                tasks.spawn(customer(k));
                while let Some(done) = tasks.try_join_next() {
                    done?;
                }
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(start.elapsed())
}

/// When arrival `k` (from 0) is due: `k / rate`, or during a linear ramp from 0 to `rate`
/// over `ramp`, when the arrivals so far (rate·t²/2·ramp) reach k.
pub fn arrival_offset(k: usize, rate: f64, ramp: Duration) -> Duration {
    let (k, s) = (k as f64, ramp.as_secs_f64());
    let during_ramp = rate * s / 2.0;
    let t = if k <= during_ramp {
        (2.0 * s * k / rate).sqrt()
    } else {
        s + (k - during_ramp) / rate
    };
    Duration::from_secs_f64(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(k: usize, rate: f64, ramp: f64) -> f64 {
        arrival_offset(k, rate, Duration::from_secs_f64(ramp)).as_secs_f64()
    }

    #[test]
    fn arrivals_follow_the_rate_after_a_linear_ramp() {
        assert_eq!(secs(0, 10.0, 0.0), 0.0);
        assert!((secs(5, 10.0, 0.0) - 0.5).abs() < 1e-9);
        // 10/s reached after 2 s: 10 arrivals during the ramp, the 10th at its end.
        assert!((secs(10, 10.0, 2.0) - 2.0).abs() < 1e-9);
        assert!((secs(20, 10.0, 2.0) - 3.0).abs() < 1e-9);
        // Arrivals are sparse early in the ramp: the 2nd (k = 1) comes after 0.63 s.
        assert!((secs(1, 10.0, 2.0) - 0.4f64.sqrt()).abs() < 1e-9);
    }
}

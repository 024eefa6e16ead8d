//! A connection's outbound queue: a bounded number of sends may wait (more make the
//! sender wait: back-pressure to the chat and its session), each waits for the
//! connection's rate limits, and a platform's 429 is waited out exactly as it says and the
//! call repeated, never dropped.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parley_connectors::{ConnectorError, ConnectorResult};
use parley_engine::inbound::Platform;
use parley_engine::rate_limits::RateLimits;
use parley_engine::telemetry;
use tokio::sync::Semaphore;

/// Transport failures (platform unreachable) are tried this often before giving up.
const TRANSPORT_ATTEMPTS: u32 = 4;
const TRANSPORT_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait a platform's 429 may impose on one call (a day: beyond that the platform
/// is not rate limiting but refusing).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Streamed edits never come faster than this, whatever the limits allow.
const MIN_CHAT_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a send may be skipped when it would have to wait (intermediate streaming
/// edits, superseded by the next one) or must go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Must,
    IfFree,
}

pub struct Outbound {
    platform: Platform,
    overall: Option<DefaultDirectRateLimiter>,
    per_chat: Option<DefaultKeyedRateLimiter<String>>,
    slots: Semaphore,
    waiting: AtomicUsize,
    chat_interval: Duration,
    /// Until when a platform's 429 holds sends to a chat (`None`: sends without one):
    /// every send there waits, not only the refused one.
    held: std::sync::Mutex<HashMap<Option<String>, tokio::time::Instant>>,
}

fn quota(per_second: f64) -> Quota {
    // A rate of r per second is one message every 1/r s; bursts up to a second's worth.
    let period = Duration::from_secs_f64(1.0 / per_second);
    let burst = NonZeroU32::new(per_second.floor().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Outbound {
    pub fn new(platform: Platform, limits: &RateLimits) -> Outbound {
        Outbound {
            platform,
            overall: limits.per_second.map(|r| RateLimiter::direct(quota(r))),
            per_chat: limits
                .per_chat_per_second
                .map(|r| RateLimiter::dashmap(quota(r))),
            slots: Semaphore::new(limits.queue),
            waiting: AtomicUsize::new(0),
            chat_interval: Duration::from_secs_f64(
                1.0 / limits.per_chat_per_second.unwrap_or(1.0).max(0.2),
            )
            .max(MIN_CHAT_INTERVAL),
            held: std::sync::Mutex::default(),
        }
    }

    /// When the last 429 for `chat` lets sends go again, if it still holds them.
    fn held_until(&self, chat: Option<&str>) -> Option<tokio::time::Instant> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let until = held.get(&chat.map(str::to_owned)).copied();
        until.filter(|t| *t > tokio::time::Instant::now())
    }

    /// Holds sends to `chat` for `wait`, as the platform's 429 said.
    fn hold(&self, chat: Option<&str>, wait: Duration) {
        let now = tokio::time::Instant::now();
        let until = now + wait.min(MAX_RETRY_AFTER);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, t| *t > now);
        let entry = held.entry(chat.map(str::to_owned)).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// The least time between two sends to one chat (streamed edits wait this long).
    pub fn chat_interval(&self) -> Duration {
        self.chat_interval
    }

    /// Sends that are waiting or in flight.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Forgets the rate state of chats that have been quiet (bounded memory).
    pub fn shrink(&self) {
        if let Some(l) = &self.per_chat {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn gauge(&self) {
        metrics::gauge!(telemetry::CONNECTOR_QUEUED, "platform" => self.platform.as_str())
            .set(self.queued() as f64);
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!(telemetry::CONNECTOR_OUTBOUND_TOTAL,
            "platform" => self.platform.as_str(), "outcome" => outcome)
        .increment(1);
    }

    /// Whether both limits let a send to `chat` go now (consuming it if so).
    fn free_now(&self, chat: Option<&str>) -> bool {
        let overall = self.overall.as_ref().is_none_or(|l| l.check().is_ok());
        overall
            && match (&self.per_chat, chat) {
                (Some(l), Some(chat)) => l.check_key(&chat.to_string()).is_ok(),
                _ => true,
            }
    }

    async fn until_free(&self, chat: Option<&str>) {
        if let (Some(l), Some(chat)) = (&self.per_chat, chat) {
            l.until_key_ready(&chat.to_string()).await;
        }
        if let Some(l) = &self.overall {
            l.until_ready().await;
        }
    }

    /// Runs one platform call for `chat` within the limits. `Ok(None)`: an `IfFree` call
    /// was skipped (the limits or the queue were busy, or the platform said 429).
    pub async fn send<T, F, Fut>(
        &self,
        chat: Option<&str>,
        urgency: Urgency,
        mut call: F,
    ) -> ConnectorResult<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ConnectorResult<T>>,
    {
        let _slot = match urgency {
            Urgency::Must => self.slots.acquire().await,
            Urgency::IfFree => match self.slots.try_acquire() {
                Ok(slot) => Ok(slot),
                Err(_) => return Ok(None),
            },
        }
        .map_err(|_| ConnectorError::Transport("the connection is stopping".into()))?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.gauge();
        let result = self.attempt(chat, urgency, &mut call).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.gauge();
        result
    }

    async fn attempt<T, F, Fut>(
        &self,
        chat: Option<&str>,
        urgency: Urgency,
        call: &mut F,
    ) -> ConnectorResult<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ConnectorResult<T>>,
    {
        let mut transport_failures = 0;
        loop {
            match urgency {
                Urgency::Must => {
                    if let Some(until) = self.held_until(chat) {
                        tokio::time::sleep_until(until).await;
                    }
                    self.until_free(chat).await
                }
                Urgency::IfFree if self.held_until(chat).is_some() || !self.free_now(chat) => {
                    return Ok(None)
                }
                Urgency::IfFree => {}
            }
            match call().await {
                Ok(v) => {
                    self.count("sent");
                    return Ok(Some(v));
                }
                Err(ConnectorError::RateLimited(wait)) => {
                    self.count("rate_limited");
                    // Held for the chat's other sends too; this one waits at the top.
                    self.hold(chat, wait);
                    if urgency == Urgency::IfFree {
                        return Ok(None);
                    }
                    tracing::debug!(
                        platform = self.platform.as_str(),
                        ?wait,
                        "rate limited by the platform; waiting as told"
                    );
                }
                Err(ConnectorError::Transport(e))
                    if transport_failures + 1 < TRANSPORT_ATTEMPTS =>
                {
                    transport_failures += 1;
                    tracing::debug!(platform = self.platform.as_str(), error = %e, "platform unreachable; trying again");
                    tokio::time::sleep(TRANSPORT_BACKOFF * 2u32.pow(transport_failures - 1)).await;
                }
                Err(e) => {
                    self.count("error");
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn limits(per_second: Option<f64>, per_chat: Option<f64>, queue: usize) -> RateLimits {
        RateLimits {
            per_second,
            per_chat_per_second: per_chat,
            queue,
        }
    }

    #[tokio::test]
    async fn a_chat_gets_no_more_than_its_rate() {
        let out = Outbound::new(Platform::named("telegram"), &limits(None, Some(10.0), 16));
        let start = Instant::now();
        for _ in 0..21 {
            out.send(Some("c1"), Urgency::Must, || async { Ok(()) })
                .await
                .unwrap();
        }
        // A burst of 10, then one every 100 ms: the 21st goes out after about 1.1 s.
        assert!(
            start.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            start.elapsed()
        );
        // Another chat is not held up by the first one's limit.
        let other = Instant::now();
        out.send(Some("c2"), Urgency::Must, || async { Ok(()) })
            .await
            .unwrap();
        assert!(other.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_429_is_waited_out_and_the_call_repeated() {
        let out = Outbound::new(Platform::named("discord"), &limits(None, None, 4));
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let got = out
            .send(None, Urgency::Must, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(ConnectorError::RateLimited(Duration::from_millis(150)))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(got, Some(2));
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn optional_sends_are_skipped_rather_than_waited_for() {
        let out = Outbound::new(Platform::named("slack"), &limits(None, Some(1.0), 4));
        let sent = out
            .send(Some("c"), Urgency::IfFree, || async { Ok(1) })
            .await
            .unwrap();
        assert_eq!(sent, Some(1));
        let skipped = out
            .send(Some("c"), Urgency::IfFree, || async { Ok(2) })
            .await
            .unwrap();
        assert_eq!(skipped, None);
        let limited = Outbound::new(Platform::named("slack"), &limits(None, None, 4))
            .send(None, Urgency::IfFree, || async {
                Err::<(), _>(ConnectorError::RateLimited(Duration::from_secs(60)))
            })
            .await
            .unwrap();
        assert_eq!(limited, None);
    }

    #[tokio::test]
    async fn a_429_holds_the_chats_other_sends_until_it_is_over() {
        let out = Outbound::new(Platform::named("slack"), &limits(None, None, 4));
        let refused = out
            .send(Some("c"), Urgency::IfFree, || async {
                Err::<(), _>(ConnectorError::RateLimited(Duration::from_millis(300)))
            })
            .await
            .unwrap();
        assert_eq!(refused, None);
        let held = Instant::now();
        // While held, optional sends to the chat are skipped without calling the platform…
        let calls = AtomicU32::new(0);
        let optional = out
            .send(Some("c"), Urgency::IfFree, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!((optional, calls.load(Ordering::SeqCst)), (None, 0));
        // …other chats are not held…
        let other = out
            .send(Some("d"), Urgency::IfFree, || async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(other, Some(()));
        // …and a required send waits the 429 out.
        out.send(Some("c"), Urgency::Must, || async { Ok(()) })
            .await
            .unwrap();
        assert!(
            held.elapsed() >= Duration::from_millis(250),
            "{:?}",
            held.elapsed()
        );
    }

    #[tokio::test]
    async fn refusals_are_returned_and_transport_failures_retried() {
        let out = Outbound::new(Platform::named("whatsapp"), &limits(None, None, 4));
        let refused = out
            .send(None, Urgency::Must, || async {
                Err::<(), _>(ConnectorError::Refused {
                    platform: "whatsapp",
                    status: 400,
                    code: "131047".into(),
                    message: "outside the window".into(),
                })
            })
            .await;
        assert!(matches!(refused, Err(ConnectorError::Refused { .. })));
        let calls = AtomicU32::new(0);
        let got = out
            .send(None, Urgency::Must, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(ConnectorError::Transport("connection reset".into()))
                    } else {
                        Ok("ok")
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(got, Some("ok"));
    }

    #[tokio::test]
    async fn the_queue_bound_makes_senders_wait() {
        let out = Arc::new(Outbound::new(
            Platform::named("teams"),
            &limits(None, None, 2),
        ));
        let gate = Arc::new(Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (out, gate) = (out.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                out.send(None, Urgency::Must, || {
                    let gate = gate.clone();
                    async move {
                        gate.acquire().await.map(|p| p.forget()).ok();
                        Ok(())
                    }
                })
                .await
            }));
        }
        while out.queued() < 2 {
            tokio::task::yield_now().await;
        }
        // Both slots are taken: a third send that must not wait is refused a slot.
        let third = out.send(None, Urgency::IfFree, || async { Ok(()) }).await;
        assert_eq!(third.unwrap(), None);
        gate.add_permits(2);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(out.queued(), 0);
    }
}

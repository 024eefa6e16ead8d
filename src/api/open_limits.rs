//! Rate limits on what opens resources on the node: Chat API sessions and WebSockets. Each
//! credential (an agent, a tenant) and each client address gets a token bucket; past it
//! the caller gets 429 with `Retry-After`. Buckets of quiet keys are dropped, so a spray of
//! addresses cannot grow memory without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::error::ApiError;

/// Requests per second a bucket refills with, and how many it holds (bursts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRate {
    /// 0: no limit.
    pub per_second: u32,
    pub burst: u32,
}

impl OpenRate {
    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(self.per_second)).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

pub struct OpenLimits {
    per_credential: Option<DefaultKeyedRateLimiter<Uuid>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl OpenLimits {
    pub fn new(per_credential: OpenRate, per_address: OpenRate) -> OpenLimits {
        OpenLimits {
            per_credential: per_credential.quota().map(RateLimiter::keyed),
            per_address: per_address.quota().map(RateLimiter::keyed),
        }
    }

    /// Takes one opening for `credential` (an agent's or a tenant's id) from `address`.
    pub fn take(&self, credential: Uuid, address: Option<IpAddr>) -> Result<(), ApiError> {
        let now = DefaultClock::default().now();
        if let (Some(l), Some(a)) = (&self.per_address, address) {
            if let Err(not_until) = l.check_key(&a) {
                return Err(ApiError::rate_limited(
                    "too many sessions or sockets opened from this address; slow down",
                    not_until.wait_time_from(now),
                ));
            }
        }
        if let Some(l) = &self.per_credential {
            if let Err(not_until) = l.check_key(&credential) {
                return Err(ApiError::rate_limited(
                    "too many sessions or sockets opened with this credential; slow down",
                    not_until.wait_time_from(now),
                ));
            }
        }
        Ok(())
    }

    /// Forgets full buckets (keys that have been quiet long enough to refill).
    pub fn prune(&self) {
        if let Some(l) = &self.per_credential {
            l.retain_recent();
        }
        if let Some(l) = &self.per_address {
            l.retain_recent();
        }
    }

    /// Keys with a bucket (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        self.per_credential.as_ref().map_or(0, |l| l.len())
            + self.per_address.as_ref().map_or(0, |l| l.len())
    }
}

/// How often quiet buckets are dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Rate limits of the widget's public routes: every request per client address, and
/// what a visitor starts or sends per visitor.
pub struct VisitorLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_visitor: Option<DefaultKeyedRateLimiter<String>>,
}

impl VisitorLimits {
    pub fn new(per_address: OpenRate, per_visitor: OpenRate) -> VisitorLimits {
        VisitorLimits {
            per_address: per_address.quota().map(RateLimiter::keyed),
            per_visitor: per_visitor.quota().map(RateLimiter::keyed),
        }
    }

    /// Takes one request from `address`.
    pub fn take_address(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(l), Some(a)) = (&self.per_address, address) else {
            return Ok(());
        };
        l.check_key(&a).map_err(|not_until| {
            ApiError::rate_limited(
                "too many widget requests from this address; slow down",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }

    /// Takes one conversation start or message of a widget's visitor.
    pub fn take_visitor(&self, widget_id: &str, user_id: &str) -> Result<(), ApiError> {
        let Some(l) = &self.per_visitor else {
            return Ok(());
        };
        l.check_key(&format!("{widget_id}\0{user_id}"))
            .map_err(|not_until| {
                ApiError::rate_limited(
                    "too many messages from this visitor; slow down",
                    not_until.wait_time_from(DefaultClock::default().now()),
                )
            })
    }

    /// Forgets full buckets.
    pub fn prune(&self) {
        if let Some(l) = &self.per_address {
            l.retain_recent();
        }
        if let Some(l) = &self.per_visitor {
            l.retain_recent();
        }
    }
}

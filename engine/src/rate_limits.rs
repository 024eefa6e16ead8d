//! Outbound rate limits of a connection: its platform's documented defaults (each platform
//! module in `parley-connectors` declares them), overridden per connection by its
//! `rate_limits` object.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::agent::{ValidationError, ValidationErrors};

/// How fast a connection may send. Rates are messages per second (fractions allowed:
/// 0.33 is one message every three seconds); `None` means no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateLimits {
    /// All sends of the connection together (Telegram 30/s, Discord 50/s).
    pub per_second: Option<f64>,
    /// Sends to one chat or channel, or, for WhatsApp, from one business number.
    pub per_chat_per_second: Option<f64>,
    /// Sends that may wait at once; more make the sender wait (back-pressure).
    pub queue: usize,
}

/// Waiting sends per connection unless `rate_limits.queue` says otherwise.
pub const DEFAULT_QUEUE: usize = 1024;

const KEYS: [&str; 3] = ["per_second", "per_chat_per_second", "queue"];

impl RateLimits {
    /// A platform's own limits, with the default queue.
    pub const fn platform(per_second: Option<f64>, per_chat_per_second: Option<f64>) -> RateLimits {
        RateLimits {
            per_second,
            per_chat_per_second,
            queue: DEFAULT_QUEUE,
        }
    }

    /// The defaults with a connection's overrides applied; `null` removes a limit.
    pub fn parse(defaults: RateLimits, overrides: &Value) -> Result<RateLimits, ValidationErrors> {
        let mut limits = defaults;
        let empty = Map::new();
        let map = match overrides {
            Value::Null => &empty,
            Value::Object(m) => m,
            _ => return Err(one("rate_limits", "must be an object")),
        };
        let mut errors = Vec::new();
        for (key, v) in map {
            let path = format!("rate_limits.{key}");
            match key.as_str() {
                "per_second" | "per_chat_per_second" => {
                    let rate = match v {
                        Value::Null => None,
                        v => match v.as_f64().filter(|r| *r > 0.0 && *r <= 100_000.0) {
                            Some(r) => Some(r),
                            None => {
                                errors.push(err(
                                    path,
                                    "must be a number above 0 (messages per second) or null",
                                ));
                                continue;
                            }
                        },
                    };
                    if key == "per_second" {
                        limits.per_second = rate;
                    } else {
                        limits.per_chat_per_second = rate;
                    }
                }
                "queue" => match v.as_u64().filter(|n| (1..=1_000_000).contains(n)) {
                    Some(n) => limits.queue = n as usize,
                    None => errors.push(err(path, "must be a whole number from 1 to 1000000")),
                },
                _ => errors.push(err(
                    path,
                    format!("unknown limit (one of {})", KEYS.join(", ")),
                )),
            }
        }
        if errors.is_empty() {
            Ok(limits)
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

fn err(path: String, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path,
        message: message.into(),
    }
}

fn one(path: &str, message: &str) -> ValidationErrors {
    ValidationErrors(vec![err(path.into(), message)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TELEGRAM: RateLimits = RateLimits::platform(Some(30.0), Some(1.0));

    #[test]
    fn overrides_replace_and_remove_limits() {
        let l = RateLimits::parse(
            TELEGRAM,
            &json!({"per_chat_per_second": 2.5, "per_second": null, "queue": 8}),
        )
        .unwrap();
        assert_eq!(l.per_chat_per_second, Some(2.5));
        assert_eq!(l.per_second, None);
        assert_eq!(l.queue, 8);
    }

    #[test]
    fn bad_overrides_are_named_by_path() {
        let e = RateLimits::parse(TELEGRAM, &json!({"per_second": 0, "queue": -1, "burst": 3}))
            .unwrap_err();
        let paths: Vec<_> = e.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "rate_limits.burst",
                "rate_limits.per_second",
                "rate_limits.queue"
            ]
        );
        assert!(RateLimits::parse(TELEGRAM, &json!([1])).is_err());
    }
}

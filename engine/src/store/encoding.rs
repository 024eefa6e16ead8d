//! What both stores encode the same way: their embedded migrations, JSON columns,
//! feedback and ids as text, timer deadlines in milliseconds.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::model::Feedback;

/// A store's migrations compiled into the binary, oldest first: (version, description,
/// SQL). (The `migrate!` macro needs sqlx's `macros` feature, which this workspace does
/// not enable.)
#[derive(Debug)]
pub(super) struct Embedded(pub &'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A failed migration: the store's own error for a failing statement; applied
/// migrations that differ from ours mean the database belongs to another build.
pub(super) fn map_migrate_err(
    e: MigrateError,
    map_err: impl FnOnce(sqlx::Error) -> StoreError,
) -> StoreError {
    match e {
        MigrateError::Execute(e) => map_err(e),
        other => StoreError::Corrupt(format!("schema migration: {other}")),
    }
}

/// RFC 3339 with nanoseconds and `Z`: exact round trips, and it sorts as text.
pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A deadline in whole milliseconds, rounded up so `due_sessions` never reports a session
/// before its timer is actually due.
pub(super) fn deadline_millis(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
        ms
    } else {
        ms + 1
    }
}

pub(super) fn parse_uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("bad id {s:?}: {e}")))
}

pub(super) fn parse_json<T: DeserializeOwned>(s: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad {what} JSON: {e}")))
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(v: &T, what: &str) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("{what} to JSON: {e}")))
}

pub(super) fn feedback_str(f: Feedback) -> &'static str {
    match f {
        Feedback::Good => "GOOD",
        Feedback::Bad => "BAD",
        Feedback::None => "NONE",
    }
}

pub(super) fn parse_feedback(s: &str) -> StoreResult<Feedback> {
    match s {
        "GOOD" => Ok(Feedback::Good),
        "BAD" => Ok(Feedback::Bad),
        "NONE" => Ok(Feedback::None),
        _ => Err(StoreError::Corrupt(format!("bad feedback {s:?}"))),
    }
}

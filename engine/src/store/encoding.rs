//! What both stores encode the same way: their embedded migrations, JSON columns,
//! feedback, session modes, ids, usage scopes and campaign enums as text, timer deadlines in
//! milliseconds; and the changes to communication records and campaign counts both make in Rust.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use sqlx::error::{BoxDynError, ErrorKind};
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::campaign::{
    CampaignStats, CommunicationChange, CommunicationCount, CommunicationRecord,
    CommunicationStatus, NodeCount, PendingTrigger,
};
use crate::flow::{Channel, TriggerType};
use crate::identity::{UsageScope, UserId};
use crate::model::Feedback;
use crate::widget::WidgetRecord;

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

/// A constraint or data error of the database as callers see it: what kind of conflict,
/// never the database's own message (it names tables, columns and values); that goes to
/// the server's log.
pub(super) fn db_conflict(kind: ErrorKind, data_error: bool, db_message: &str) -> StoreError {
    tracing::warn!(db = %db_message, "the database refused a write");
    StoreError::Conflict(
        match kind {
            ErrorKind::UniqueViolation => "it already exists",
            ErrorKind::ForeignKeyViolation => "it refers to something that does not exist",
            _ if data_error => "it holds a value the store cannot keep",
            _ => "it breaks a rule of the stored data",
        }
        .into(),
    )
}

/// A failed write of a user row: the users table's only unique key besides its id (which
/// the write upserts on) is the e-mail address, so a duplicate is another user's address.
pub(super) fn map_user_write_err(
    e: sqlx::Error,
    map_err: impl FnOnce(sqlx::Error) -> StoreError,
) -> StoreError {
    match e {
        sqlx::Error::Database(db) if matches!(db.kind(), ErrorKind::UniqueViolation) => {
            StoreError::Conflict("a user with this e-mail address exists".into())
        }
        e => map_err(e),
    }
}

/// A write that would take its tenant's last admin away.
pub(super) fn last_admin(user: UserId) -> StoreError {
    StoreError::Conflict(format!(
        "user {user} is the tenant's last admin: make another user an admin first"
    ))
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

/// A usage counter's key in session_usage_counters, and the sessions column (and id) that
/// find the scope's sessions.
pub(super) fn usage_scope(scope: UsageScope) -> (String, &'static str, Uuid) {
    match scope {
        UsageScope::Tenant(id) => (format!("tenant:{id}"), "tenant_id", id),
        UsageScope::Agent(id) => (format!("agent:{id}"), "agent_id", id),
    }
}

/// A billable window: 24 hours, in nanoseconds.
pub(super) const WINDOW_NANOS: i64 = 24 * 60 * 60 * 1_000_000_000;

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

/// A participant's pending trigger, as the schema's `pending` column holds it.
pub(super) fn parse_pending(s: Option<&str>) -> StoreResult<Option<PendingTrigger>> {
    s.map(|s| match s {
        "created" => Ok(PendingTrigger::Created),
        "updated" => Ok(PendingTrigger::Updated),
        _ => Err(StoreError::Corrupt(format!("bad pending trigger {s:?}"))),
    })
    .transpose()
}

pub(super) fn parse_trigger(s: &str) -> StoreResult<TriggerType> {
    TriggerType::ALL
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("bad trigger {s:?}")))
}

pub(super) fn parse_status(s: &str) -> StoreResult<CommunicationStatus> {
    CommunicationStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("bad communication status {s:?}")))
}

/// A channel as [`Channel::as_str`] wrote it (its serde name).
pub(super) fn parse_channel(s: &str) -> StoreResult<Channel> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("bad channel {s:?}")))
}

/// The statuses as text, for `= ANY(…)`.
pub(super) fn status_strs(statuses: &[CommunicationStatus]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

/// Why cancel_open stopped a communication.
const CANCELED_BY_FLOW: &str = "canceled by the flow";

/// A communication as `cancel_open` leaves it.
pub(super) fn cancel(mut c: CommunicationRecord, at: DateTime<Utc>) -> CommunicationRecord {
    c.status = CommunicationStatus::Canceled;
    c.reason = Some(CANCELED_BY_FLOW.into());
    c.updated_at = at;
    c
}

/// A communication with `change` applied (see [`CommunicationChange`]).
pub(super) fn apply_change(
    mut c: CommunicationRecord,
    change: &CommunicationChange,
) -> CommunicationRecord {
    c.status = change.status;
    c.reason = change.reason.clone();
    if let Some(s) = change.session_id {
        c.session_id = Some(s);
    }
    if let Some(m) = &change.message_id {
        c.message_id = Some(m.clone());
    }
    if let Some(r) = &change.results {
        c.results = r.clone();
    }
    c.updated_at = change.at;
    c
}

/// A campaign's counts from the stores' grouped rows: (status, channel, count) and (flow,
/// node, count), put in the documented order.
pub(super) fn stats_from_rows(
    participants: i64,
    pending: i64,
    communications: Vec<(String, String, i64)>,
    nodes: Vec<(String, String, i64)>,
) -> StoreResult<CampaignStats> {
    let count = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} count {n}")))
    };
    let mut communications = communications
        .into_iter()
        .map(|(status, channel, n)| {
            Ok(CommunicationCount {
                status: parse_status(&status)?,
                channel: parse_channel(&channel)?,
                count: count(n, "communication")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let rank = |s: CommunicationStatus| CommunicationStatus::ALL.iter().position(|a| *a == s);
    communications.sort_by_key(|c| (rank(c.status), c.channel.as_str()));
    let mut nodes = nodes
        .into_iter()
        .map(|(flow, node, n)| {
            Ok(NodeCount {
                flow,
                node,
                count: count(n, "node")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    nodes.sort_by(|a, b| (&a.flow, &a.node).cmp(&(&b.flow, &b.node)));
    Ok(CampaignStats {
        participants: count(participants, "participant")?,
        participants_pending: count(pending, "pending participant")?,
        communications,
        nodes,
    })
}

/// `text` matched anywhere, as a LIKE pattern (its own `%`, `_` and `\\` taken
/// literally, with `\\` as the escape).
pub(super) fn contains_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

/// The SQL both backends run for widgets (sqlx's SQLite takes `$N` too).
pub(super) const UPSERT_WIDGET: &str = "\
    INSERT INTO widgets (agent_id, tenant_id, widget_id, settings, secrets, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (agent_id) DO UPDATE SET settings = excluded.settings, \
        secrets = excluded.secrets, updated_at = excluded.updated_at";
pub(super) const WIDGET_COLS: &str =
    "agent_id, tenant_id, widget_id, settings, secrets, updated_at";

/// A widget row's columns, in [`WIDGET_COLS`] order, as text.
pub(super) fn widget_row(w: &WidgetRecord) -> StoreResult<[String; 6]> {
    Ok([
        w.agent_id.to_string(),
        w.tenant_id.to_string(),
        w.widget_id.clone(),
        to_json(&w.settings, "widget settings")?,
        to_json(&w.secrets, "widget secrets")?,
        rfc3339(w.updated_at),
    ])
}

pub(super) fn widget_from_row(cols: [&str; 6]) -> StoreResult<WidgetRecord> {
    Ok(WidgetRecord {
        agent_id: parse_uuid(cols[0])?,
        tenant_id: parse_uuid(cols[1])?,
        widget_id: cols[2].to_string(),
        settings: parse_json(cols[3], "widget settings")?,
        secrets: parse_json(cols[4], "widget secrets")?,
        updated_at: DateTime::parse_from_rfc3339(cols[5])
            .map_err(|e| StoreError::Corrupt(format!("bad widget timestamp: {e}")))?
            .with_timezone(&Utc),
    })
}

//! SQLite implementation of the store: the embedded default.
//!
//! One writer connection (SQLite serialises writers anyway, and a single connection means a
//! write transaction never waits on another of ours) and a small pool of readers, which WAL
//! lets run beside the writer. Group commits (sqlite/group_commit.rs) append messages in
//! commit order; the writer indexes them by session in bulk (sqlite/message_index.rs).

use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::encoding::{
    apply_change, cancel, contains_pattern, feedback_str, last_admin, map_migrate_err,
    map_user_write_err, parse_feedback, parse_json, parse_pending, parse_trigger, parse_uuid,
    rfc3339, stats_from_rows, to_json, usage_scope, widget_from_row, widget_row, Embedded,
    UPSERT_WIDGET, WIDGET_COLS, WINDOW_NANOS,
};
use super::{
    AgentChannel, AgentRecord, AgentStatus, Assignee, ChannelSession, Committed, ConnectionEvent,
    ConnectionWrite, ConversationQuery, Epoch, NewOutboxEvent, OutboxEntry, SessionWrites,
    StoreError, StoreResult, Tenant, MAX_USERS_PER_EMAIL,
};
use crate::campaign::{
    CampaignId, CampaignRecord, CampaignStats, CheckedParticipant, CommunicationChange,
    CommunicationId, CommunicationRecord, CommunicationStatus, CustomerId, CustomerKey,
    CustomerRecord, FlowRecord, ParticipantEvent, ParticipantId, ParticipantQuery,
    ParticipantRecord, ParticipantStatus, ParticipantStep, StepOutcome, UploadId, UploadRecord,
    Upserted,
};
use crate::connection::{ConnectionId, ConnectionRecord};
use crate::flow::TriggerType;
use crate::identity::{AuthToken, Role as UserRole, SessionUsage, UsageScope, UserId, UserRecord};
use crate::inbound::InboundMessage;
use crate::model::{
    AgentId, AttachmentMeta, CloseStatus, Feedback, Message, Mode, Role, Session, SessionId,
    TenantId,
};
use crate::widget::WidgetRecord;
use message_index::Unindexed;

mod group_commit;
mod message_index;

/// The schema, oldest first: (version, description, SQL). The files follow sqlx's
/// `<version>_<description>.sql` naming so the `migrate!` macro could read them too.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "session_epoch",
        include_str!("../../migrations/sqlite/0002_session_epoch.sql"),
    ),
    (
        3,
        "connections",
        include_str!("../../migrations/sqlite/0003_connections.sql"),
    ),
    (
        4,
        "agent_channels",
        include_str!("../../migrations/sqlite/0004_agent_channels.sql"),
    ),
    (
        5,
        "connector_state",
        include_str!("../../migrations/sqlite/0005_connector_state.sql"),
    ),
    (
        6,
        "campaigns",
        include_str!("../../migrations/sqlite/0006_campaigns.sql"),
    ),
    (
        7,
        "campaign_progress",
        include_str!("../../migrations/sqlite/0007_campaign_progress.sql"),
    ),
    (
        8,
        "identity",
        include_str!("../../migrations/sqlite/0008_identity.sql"),
    ),
    (
        9,
        "session_usage",
        include_str!("../../migrations/sqlite/0009_session_usage.sql"),
    ),
    (
        10,
        "conversations",
        include_str!("../../migrations/sqlite/0010_conversations.sql"),
    ),
    (
        11,
        "message_log",
        include_str!("../../migrations/sqlite/0011_message_log.sql"),
    ),
    (
        12,
        "message_index",
        include_str!("../../migrations/sqlite/0012_message_index.sql"),
    ),
    (
        13,
        "user_email_per_tenant",
        include_str!("../../migrations/sqlite/0013_user_email_per_tenant.sql"),
    ),
    (
        14,
        "widgets",
        include_str!("../../migrations/sqlite/0014_widgets.sql"),
    ),
];

/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer and of each reader, in KiB. The writer keeps the hot index pages
/// of the write path; readers mostly fetch single rows.
const WRITER_CACHE_KIB: u32 = 64 * 1024;
const READER_CACHE_KIB: u32 = 4 * 1024;

/// WAL pages between automatic checkpoints (64 MiB at 4 KiB pages). SQLite's default of
/// 1000 makes the writer copy the same hot pages back into the database again and again; a
/// longer WAL coalesces them (measured: 15-60% more turns per second, run to run).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16 * 1024;

/// What a reset WAL file is truncated back to, so a burst does not keep its disk space.
const WAL_SIZE_LIMIT_BYTES: u64 = 128 * 1024 * 1024;

/// The embedded store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The messages not in `message_index` yet (see [`message_index`]).
    unindexed: Unindexed,
}

impl SqliteStore {
    async fn widget_where(&self, column: &str, value: &str) -> StoreResult<Option<WidgetRecord>> {
        let sql = format!("SELECT {WIDGET_COLS} FROM widgets WHERE {column} = $1");
        let row: Option<(String, String, String, String, String, String)> = sqlx::query_as(&sql)
            .bind(value)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.map(|r| widget_from_row([&r.0, &r.1, &r.2, &r.3, &r.4, &r.5]))
            .transpose()
    }

    /// Opens (creating the file and its directory if missing) the database at `path`.
    /// Call [`Store::migrate`](super::Store::migrate) before use.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let base = SqliteConnectOptions::new().filename(path);
        let writer = single_connection(
            tuned(base.clone(), WRITER_CACHE_KIB)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await?;
        // Readers leave journal_mode alone: the writer has made the file WAL already, and
        // switching modes takes a lock that busy_timeout does not wait for.
        let readers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8) as u32;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers)
            .test_before_acquire(false)
            .connect_with(tuned(base, READER_CACHE_KIB))
            .await
            .map_err(map_err)?;
        let store = SqliteStore {
            writer,
            reader,
            unindexed: Unindexed::default(),
        };
        store.rebuild_unindexed().await?;
        Ok(store)
    }

    /// A fresh in-memory database (for tests and benches). It lives in one connection that
    /// the pool never closes, so every query sees the same database until the store drops.
    pub async fn open_memory() -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(map_err)?;
        let pool = single_connection(tuned(options, WRITER_CACHE_KIB)).await?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
            unindexed: Unindexed::default(),
        })
    }

    /// Runs an UPDATE meant for exactly one existing row; no such row is a Conflict.
    async fn update_one<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        missing: impl FnOnce() -> String,
    ) -> StoreResult<()> {
        let done = query.execute(&self.writer).await.map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(missing()));
        }
        Ok(())
    }

    /// Reads what is not indexed yet into memory.
    async fn rebuild_unindexed(&self) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        message_index::rebuild(&mut conn, &self.unindexed).await
    }

    /// Sessions read with [`FRESH_SESSION_COLS`], brought up to date with their unindexed
    /// messages. The read is repeated if a fold indexed messages meanwhile, as it may have
    /// counted them neither in the index nor in memory.
    async fn read_fresh<F, Fut>(&self, read: F) -> StoreResult<Vec<Session>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = StoreResult<Vec<Session>>>,
    {
        loop {
            let folds = self.unindexed.folds();
            let mut sessions = read().await?;
            if self.unindexed.patch(&mut sessions, folds) {
                return Ok(sessions);
            }
        }
    }

    /// Indexes every message now.
    async fn fold_now(&self) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        with_raw(&mut conn, |db| {
            message_index::fold(db, &self.unindexed);
            Ok(())
        })
        .await
    }

    /// Waits for running queries, indexes every message (so the next open has nothing to
    /// read back) and closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        if !self.unindexed.is_empty() {
            // A failure is logged by the fold; the rows stay readable for the next open.
            let _ = self.fold_now().await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Runs `f` on `conn` through rusqlite: the group commit and the fold, whose many
/// single-row statements would each cost a hop to sqlx's worker thread.
async fn with_raw<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&rusqlite::Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let mut handle = conn.lock_handle().await.map_err(map_err)?;
    // SAFETY: the handle is locked away from sqlx's worker while `handle` lives;
    // `from_handle` borrows it without closing it, and `db` is dropped before `handle`.
    let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
        .map_err(group_commit::map_err)?;
    let r = f(&db);
    drop(db);
    r
}

/// Settings every connection gets.
fn tuned(options: SqliteConnectOptions, cache_kib: u32) -> SqliteConnectOptions {
    options
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .statement_cache_capacity(128)
        // A negative cache_size is in KiB.
        .pragma("cache_size", format!("-{cache_kib}"))
        .pragma("temp_store", "MEMORY")
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
        .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string())
}

/// A pool of exactly one connection that is opened now and kept for the pool's lifetime
/// (an in-memory database dies with its last connection).
async fn single_connection(options: SqliteConnectOptions) -> StoreResult<SqlitePool> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(map_err)
}

/// Sorts sqlx errors into the store's three kinds.
fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) => {
            let msg = db.message().to_owned();
            match db.kind() {
                kind @ (ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation) => super::encoding::db_conflict(kind, false, &msg),
                _ => {
                    // Extended result code; the primary code is its low byte.
                    let code = db
                        .code()
                        .and_then(|c| c.parse::<i32>().ok())
                        .map_or(0, |c| c & 0xff);
                    match code {
                        // SQLITE_CONSTRAINT
                        19 => super::encoding::db_conflict(ErrorKind::Other, false, &msg),
                        // SQLITE_CORRUPT, SQLITE_MISMATCH, SQLITE_NOTADB
                        11 | 20 | 26 => StoreError::Corrupt(msg),
                        _ => StoreError::Unavailable(msg),
                    }
                }
            }
        }
        e @ (sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

fn ts(t: DateTime<Utc>) -> String {
    rfc3339(t)
}

fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

/// A session's billable windows that start in [from, to): one starts every 24 hours from
/// `start` while that is before `end`, and the first always. (Here rather than in SQL:
/// the text timestamps would have to be taken apart there.)
fn windows_in(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> u64 {
    // In i128 nanoseconds, which hold any difference of two instants.
    let nanos = |t: DateTime<Utc>| {
        i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
    };
    // How many windows start before `t`: k ≥ 0 with start + k·24h < t.
    let before = |t: DateTime<Utc>| {
        let d = nanos(t) - nanos(start);
        if d <= 0 {
            0
        } else {
            (d - 1) / i128::from(WINDOW_NANOS) + 1
        }
    };
    let n = before(end).max(1).min(before(to)) - before(from);
    u64::try_from(n).unwrap_or(0)
}

fn col<'r, T>(row: &'r SqliteRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(map_err)
}

const TENANT_COLS: &str = "id, name, api_key_hash, created_at, settings";

fn tenant_from_row(row: &SqliteRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: parse_uuid(col(row, "id")?)?,
        name: col(row, "name")?,
        api_key_hash: col(row, "api_key_hash")?,
        created_at: parse_ts(col(row, "created_at")?)?,
        settings: parse_json(col(row, "settings")?, "tenant settings")?,
    })
}

/// Conflict when the write takes the role of its tenant's last admin from the stored user
/// `id`: the user is an admin now and, after the write, is an admin of `admin_of` (None:
/// of no tenant). Runs inside the write's transaction, which holds the single writer
/// connection, so no other write can change the tenant's admins between this check and it.
async fn refuse_last_admin(
    conn: &mut SqliteConnection,
    id: UserId,
    admin_of: Option<TenantId>,
) -> StoreResult<()> {
    let key = id.to_string();
    let stored: Option<(String, String)> =
        sqlx::query_as("SELECT tenant_id, role FROM users WHERE id = ?")
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
    let Some((tenant, role)) = stored else {
        return Ok(());
    };
    let admin = UserRole::Admin.as_str();
    if role != admin || admin_of.is_some_and(|t| t.to_string() == tenant) {
        return Ok(());
    }
    let others: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE tenant_id = ? AND role = ? AND id <> ?",
    )
    .bind(&tenant)
    .bind(admin)
    .bind(&key)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    if others == 0 {
        return Err(last_admin(id));
    }
    Ok(())
}

const AGENT_COLS: &str = "id, tenant_id, name, status, status_reason, current_version, \
                          token_hash, created_at, updated_at";

fn agent_from_row(row: &SqliteRow) -> StoreResult<AgentRecord> {
    let status: &str = col(row, "status")?;
    Ok(AgentRecord {
        id: parse_uuid(col(row, "id")?)?,
        tenant_id: parse_uuid(col(row, "tenant_id")?)?,
        name: col(row, "name")?,
        status: AgentStatus::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("bad agent status {status:?}")))?,
        status_reason: col(row, "status_reason")?,
        current_version: col(row, "current_version")?,
        token_hash: col(row, "token_hash")?,
        created_at: parse_ts(col(row, "created_at")?)?,
        updated_at: parse_ts(col(row, "updated_at")?)?,
    })
}

const MESSAGE_COLS: &str =
    "session_id, id, role, text, ts, attachments, metadata, feedback, idempotency_key";

fn message_from_row(row: &SqliteRow) -> StoreResult<Message> {
    let role: &str = col(row, "role")?;
    let attachments: Option<&str> = col(row, "attachments")?;
    let metadata: Option<&str> = col(row, "metadata")?;
    Ok(Message {
        id: col(row, "id")?,
        session_id: parse_uuid(col(row, "session_id")?)?,
        role: Role::parse(role).ok_or_else(|| StoreError::Corrupt(format!("bad role {role:?}")))?,
        text: col(row, "text")?,
        timestamp: parse_ts(col(row, "ts")?)?,
        attachments: match attachments {
            Some(a) => parse_json(a, "attachments")?,
            None => Vec::new(),
        },
        metadata: match metadata {
            Some(m) => parse_json(m, "metadata")?,
            None => serde_json::Value::Null,
        },
        feedback: parse_feedback(col(row, "feedback")?)?,
        idempotency_key: col(row, "idempotency_key")?,
    })
}

fn session_from_row(row: &SqliteRow) -> StoreResult<Session> {
    parse_json(col(row, "data")?, "session")
}

/// A session row (named `s`) and what brings it up to date from its log: the newest message
/// and the newest customer message (the row may be older than its last turns, see
/// Store::load_session).
const FRESH_SESSION_COLS: &str = "s.data, \
    (SELECT id FROM message_index WHERE session_id = s.id ORDER BY id DESC LIMIT 1) AS last_id, \
    (SELECT m.ts FROM message_index i JOIN messages m ON m.seq = i.seq \
     WHERE i.session_id = s.id AND m.role = 'HUMAN' ORDER BY i.id DESC LIMIT 1) AS last_human_ts";

/// A session selected with [`FRESH_SESSION_COLS`], its message count and last activity
/// brought up to date.
fn fresh_session_from_row(row: &SqliteRow) -> StoreResult<Session> {
    let mut s = session_from_row(row)?;
    let last_id: Option<i64> = col(row, "last_id")?;
    if let Some(id) = last_id.filter(|&id| id > s.message_count) {
        s.message_count = id;
    }
    let last_human: Option<&str> = col(row, "last_human_ts")?;
    if let Some(t) = last_human.map(parse_ts).transpose()? {
        s.last_activity = s.last_activity.max(t);
    }
    Ok(s)
}

/// Appends event lines in order and drops all but each touched connection's newest `keep`.
fn event_from_row(row: &SqliteRow) -> StoreResult<ConnectionEvent> {
    Ok(ConnectionEvent {
        id: col(row, "id")?,
        connection_id: parse_uuid(col(row, "connection_id")?)?,
        at: parse_ts(col(row, "at")?)?,
        kind: col(row, "kind")?,
        detail: parse_json(col(row, "detail")?, "event detail")?,
    })
}

const OUTBOX_COLS: &str = "id, connection_id, msg_id, event_type, body, attempts, \
                           next_attempt_at, last_error, created_at";

fn outbox_from_row(row: &SqliteRow) -> StoreResult<OutboxEntry> {
    let attempts: i64 = col(row, "attempts")?;
    Ok(OutboxEntry {
        id: col(row, "id")?,
        connection_id: parse_uuid(col(row, "connection_id")?)?,
        msg_id: col(row, "msg_id")?,
        event_type: col(row, "event_type")?,
        body: col(row, "body")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("outbox attempts {attempts}")))?,
        next_attempt_at: parse_ts(col(row, "next_attempt_at")?)?,
        last_error: col(row, "last_error")?,
        created_at: parse_ts(col(row, "created_at")?)?,
    })
}

const CUSTOMER_COLS: &str =
    "id, tenant_id, external_id, email, phone, attributes, created_at, updated_at";

fn customer_from_row(row: &SqliteRow) -> StoreResult<CustomerRecord> {
    Ok(CustomerRecord {
        id: parse_uuid(col(row, "id")?)?,
        tenant_id: parse_uuid(col(row, "tenant_id")?)?,
        external_id: col(row, "external_id")?,
        email: col(row, "email")?,
        phone: col(row, "phone")?,
        attributes: parse_json(col(row, "attributes")?, "customer attributes")?,
        created_at: parse_ts(col(row, "created_at")?)?,
        updated_at: parse_ts(col(row, "updated_at")?)?,
    })
}

const PARTICIPANT_COLS: &str = "p.id, p.campaign_id, p.customer_id, p.object_id, p.attributes, \
                                p.timezone, p.upload_id, p.pending, p.result, p.result_at, \
                                p.created_at, p.updated_at";

fn participant_from_row(row: &SqliteRow) -> StoreResult<ParticipantRecord> {
    let object_id: String = col(row, "object_id")?;
    let upload_id: Option<&str> = col(row, "upload_id")?;
    let result_at: Option<&str> = col(row, "result_at")?;
    Ok(ParticipantRecord {
        id: parse_uuid(col(row, "id")?)?,
        campaign_id: parse_uuid(col(row, "campaign_id")?)?,
        customer_id: parse_uuid(col(row, "customer_id")?)?,
        // Stored as '' for none (see the schema).
        object_id: (!object_id.is_empty()).then_some(object_id),
        attributes: parse_json(col(row, "attributes")?, "participant attributes")?,
        timezone: col(row, "timezone")?,
        upload_id: upload_id.map(parse_uuid).transpose()?,
        pending: parse_pending(col(row, "pending")?)?,
        result: parse_json(col(row, "result")?, "participant result")?,
        result_at: result_at.map(parse_ts).transpose()?,
        created_at: parse_ts(col(row, "created_at")?)?,
        updated_at: parse_ts(col(row, "updated_at")?)?,
    })
}

/// Finds the customer a key names: the tenant's oldest profile whose column of the key's
/// kind holds the key's value (the columns are not unique, so "oldest" makes the choice
/// stable). One statement text per kind, so each stays prepared in the statement cache.
fn customer_lookup_sql(key: &CustomerKey) -> &'static str {
    match key {
        CustomerKey::ExternalId(_) => {
            "SELECT id FROM customers WHERE tenant_id = ? AND external_id = ? \
             ORDER BY created_at, id LIMIT 1"
        }
        CustomerKey::Email(_) => {
            "SELECT id FROM customers WHERE tenant_id = ? AND email = ? \
             ORDER BY created_at, id LIMIT 1"
        }
        CustomerKey::Phone(_) => {
            "SELECT id FROM customers WHERE tenant_id = ? AND phone = ? \
             ORDER BY created_at, id LIMIT 1"
        }
    }
}

/// Merges the attributes given into the participant's (`json_patch`: given values replace,
/// others stay); a zone given replaces the stored one, none keeps it. A new participant is
/// left pending created, an existing one pending updated unless its created trigger has
/// not run yet (that run sees the new attributes anyway).
const UPSERT_PARTICIPANT: &str = "\
    INSERT INTO participants (id, campaign_id, customer_id, object_id, attributes, timezone, \
                              upload_id, pending, created_at, updated_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, 'created', ?, ?) \
    ON CONFLICT (campaign_id, customer_id, object_id) DO UPDATE SET \
        attributes = json_patch(attributes, excluded.attributes), \
        timezone = COALESCE(excluded.timezone, timezone), \
        upload_id = excluded.upload_id, updated_at = excluded.updated_at, \
        pending = CASE pending WHEN 'created' THEN 'created' ELSE 'updated' END \
    RETURNING id";

/// The FROM and WHERE clauses of a participants listing. The customer filters find the
/// tenant's matching profiles first (by their identity indexes) and then the campaign's
/// participants of those: INDEXED BY keeps SQLite, which has no statistics to go by, from
/// walking the whole campaign in listing order instead.
fn push_participant_filters(
    qb: &mut QueryBuilder<'_, Sqlite>,
    campaign: CampaignId,
    q: &ParticipantQuery,
) {
    let customer_filters: Vec<(&str, &String)> = [
        ("external_id", &q.external_id),
        ("email", &q.email),
        ("phone", &q.phone),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.as_ref().map(|v| (column, v)))
    .collect();
    if customer_filters.is_empty() {
        qb.push(" FROM participants p");
    } else {
        qb.push(" FROM participants p INDEXED BY participants_key");
    }
    qb.push(" WHERE p.campaign_id = ")
        .push_bind(campaign.to_string());
    if !customer_filters.is_empty() {
        qb.push(
            " AND p.customer_id IN (SELECT c.id FROM customers c WHERE c.tenant_id = \
             (SELECT tenant_id FROM campaigns WHERE id = ",
        )
        .push_bind(campaign.to_string())
        .push(")");
        for (column, value) in customer_filters {
            qb.push(format!(" AND c.{column} = "))
                .push_bind(value.clone());
        }
        qb.push(")");
    }
    if let Some(u) = q.upload_id {
        qb.push(" AND p.upload_id = ").push_bind(u.to_string());
    }
    if let Some(t) = q.created_from {
        qb.push(" AND p.created_at >= ").push_bind(ts(t));
    }
    if let Some(t) = q.created_to {
        qb.push(" AND p.created_at < ").push_bind(ts(t));
    }
    if let Some(name) = &q.name {
        let pattern = contains_pattern(name);
        qb.push(" AND (json_extract(p.attributes, '$.name') LIKE ")
            .push_bind(pattern.clone())
            .push(
                " ESCAPE '\\' OR EXISTS (SELECT 1 FROM customers c WHERE c.id = p.customer_id \
                 AND json_extract(c.attributes, '$.name') LIKE ",
            )
            .push_bind(pattern)
            .push(" ESCAPE '\\'))");
    }
    if let Some(status) = q.status {
        let open = format!(
            " EXISTS (SELECT 1 FROM communications m WHERE m.participant_id = p.id \
             AND m.status IN ({}))",
            status_literals(&CommunicationStatus::OPEN)
        );
        match status {
            ParticipantStatus::Pending => qb.push(" AND p.pending IS NOT NULL"),
            ParticipantStatus::Active => qb.push(format!(" AND p.pending IS NULL AND{open}")),
            ParticipantStatus::Idle => qb.push(format!(" AND p.pending IS NULL AND NOT{open}")),
        };
    }
}

/// The FROM and WHERE clauses of a conversations listing.
fn push_conversation_filters(
    qb: &mut QueryBuilder<'_, Sqlite>,
    tenant: TenantId,
    q: &ConversationQuery,
) {
    qb.push(" FROM sessions WHERE tenant_id = ")
        .push_bind(tenant.to_string());
    if let Some(mode) = q.mode {
        qb.push(" AND mode = ").push_bind(mode.as_str());
        if mode != Mode::Regular {
            // The inbox index's condition: SQLite uses a partial index only for a query that
            // states it.
            qb.push(" AND mode <> 'REGULAR'");
        }
    }
    // Open sessions are "active" (Session::status_str), closed ones hold their close status.
    match q.active {
        Some(true) => {
            qb.push(" AND state = 'active'");
        }
        Some(false) => {
            qb.push(" AND state <> 'active'");
        }
        None => {}
    }
    match q.assignee {
        Some(Assignee::Nobody) => {
            qb.push(" AND assignee IS NULL");
        }
        Some(Assignee::User(user)) => {
            qb.push(" AND assignee = ").push_bind(user.to_string());
        }
        None => {}
    }
}

/// A page bound as SQLite takes it; beyond `i64::MAX` is as good as no bound.
fn page_bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} count {n}")))
}

/// Statuses as a list of SQL literals: they are fixed words, and literals keep one
/// statement text per list.
fn status_literals(statuses: &[CommunicationStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A participant's open communications, oldest first.
static OPEN_COMMUNICATIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT data FROM communications WHERE participant_id = ? AND status IN ({}) \
         ORDER BY created_at, id",
        status_literals(&CommunicationStatus::OPEN)
    )
});

static LIVE_COMMUNICATIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, session_id FROM communications WHERE campaign_id = ? AND status IN ({}) \
         AND session_id IS NOT NULL ORDER BY id",
        status_literals(&CommunicationStatus::LIVE)
    )
});

/// The tenant's customers whose attribute `$name` reads `?` as text, oldest first. The
/// expressions match the customers_<name> indexes exactly, so those answer it.
macro_rules! customers_by_attribute {
    ($name:literal) => {
        concat!(
            "SELECT id FROM customers WHERE tenant_id = ? \
             AND json_extract(attributes, '$.",
            $name,
            "') IS NOT NULL AND CAST(json_extract(attributes, '$.",
            $name,
            "') AS TEXT) = ? ORDER BY created_at, id LIMIT ?"
        )
    };
}

/// A step's attribute patch: a value replaces, null removes, other attributes stay. (In
/// Rust rather than json_patch, which would merge object values instead of replacing them;
/// the write transaction holds the one writer connection, so nothing changes the row
/// between the read and the write.)
fn patch_attributes(attributes: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (name, value) in patch {
        if value.is_null() {
            attributes.remove(name);
        } else {
            attributes.insert(name.clone(), value.clone());
        }
    }
}

/// Reads the row's attributes (`table` is a fixed name), applies the patch and writes them
/// with `at` as updated_at. Nothing when the patch is empty or the row is gone.
async fn patch_row(
    conn: &mut SqliteConnection,
    table: &str,
    id: &str,
    patch: &Map<String, Value>,
    at: &str,
) -> StoreResult<()> {
    if patch.is_empty() {
        return Ok(());
    }
    let stored: Option<String> =
        sqlx::query_scalar(&format!("SELECT attributes FROM {table} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
    let Some(stored) = stored else {
        return Ok(());
    };
    let mut attributes: Map<String, Value> = parse_json(&stored, "attributes")?;
    patch_attributes(&mut attributes, patch);
    sqlx::query(&format!(
        "UPDATE {table} SET attributes = ?, updated_at = ? WHERE id = ?"
    ))
    .bind(to_json(&attributes, "attributes")?)
    .bind(at)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_communication(
    conn: &mut SqliteConnection,
    c: &CommunicationRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO communications (id, tenant_id, campaign_id, participant_id, status, \
         channel, due_at, session_id, connection_id, message_id, created_at, data) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(c.id.to_string())
    .bind(c.tenant_id.to_string())
    .bind(c.campaign_id.to_string())
    .bind(c.participant_id.to_string())
    .bind(c.status.as_str())
    .bind(c.channel.as_str())
    .bind(ts(c.due_at()))
    .bind(c.session_id.map(|s| s.to_string()))
    .bind(c.connection_id.map(|s| s.to_string()))
    .bind(c.message_id.as_deref())
    .bind(ts(c.created_at))
    .bind(to_json(c, "communication")?)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Rewrites a communication's changeable columns and its record.
async fn update_communication(
    conn: &mut SqliteConnection,
    c: &CommunicationRecord,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE communications SET status = ?, due_at = ?, session_id = ?, message_id = ?, \
         data = ? WHERE id = ?",
    )
    .bind(c.status.as_str())
    .bind(ts(c.due_at()))
    .bind(c.session_id.map(|s| s.to_string()))
    .bind(c.message_id.as_deref())
    .bind(to_json(c, "communication")?)
    .bind(c.id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

fn communication_from_data(data: &str) -> StoreResult<CommunicationRecord> {
    parse_json(data, "communication")
}

const PARTICIPANT_EVENT_COLS: &str =
    "id, campaign_id, participant_id, trigger_type, communication_id, at";

fn participant_event_from_row(row: &SqliteRow) -> StoreResult<ParticipantEvent> {
    let communication_id: Option<&str> = col(row, "communication_id")?;
    Ok(ParticipantEvent {
        id: col(row, "id")?,
        campaign_id: parse_uuid(col(row, "campaign_id")?)?,
        participant_id: parse_uuid(col(row, "participant_id")?)?,
        trigger: parse_trigger(col(row, "trigger_type")?)?,
        communication_id: communication_id.map(parse_uuid).transpose()?,
        at: parse_ts(col(row, "at")?)?,
    })
}

async fn insert_participant_event(
    conn: &mut SqliteConnection,
    campaign: CampaignId,
    participant: ParticipantId,
    trigger: TriggerType,
    communication: Option<CommunicationId>,
    at: DateTime<Utc>,
) -> StoreResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO participant_events (campaign_id, participant_id, trigger_type, \
         communication_id, at) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(campaign.to_string())
    .bind(participant.to_string())
    .bind(trigger.as_str())
    .bind(communication.map(|c| c.to_string()))
    .bind(ts(at))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)
}

#[async_trait]
impl super::Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        let migrator = Migrator::new(Embedded(MIGRATIONS))
            .await
            .map_err(|e| map_migrate_err(e, map_err))?;
        migrator
            .run(&self.writer)
            .await
            .map_err(|e| map_migrate_err(e, map_err))?;
        self.rebuild_unindexed().await
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO tenants ({TENANT_COLS}) VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(tenant.id.to_string())
        .bind(&tenant.name)
        .bind(&tenant.api_key_hash)
        .bind(ts(tenant.created_at))
        .bind(to_json(&tenant.settings, "tenant settings")?)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant_by_key_hash(&self, api_key_hash: &str) -> StoreResult<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE api_key_hash = ?");
        let row = sqlx::query(&sql)
            .bind(api_key_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn set_tenant_key_hash(&self, tenant: TenantId, api_key_hash: &str) -> StoreResult<()> {
        let q = sqlx::query("UPDATE tenants SET api_key_hash = ? WHERE id = ?")
            .bind(api_key_hash)
            .bind(tenant.to_string());
        self.update_one(q, || format!("no tenant {tenant}")).await
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let id = tenant.id;
        let q = sqlx::query("UPDATE tenants SET name = ?, settings = ? WHERE id = ?")
            .bind(&tenant.name)
            .bind(to_json(&tenant.settings, "tenant settings")?)
            .bind(id.to_string());
        self.update_one(q, || format!("no tenant {id}")).await
    }

    async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        let data = to_json(user, "user")?;
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        let admin_of = (user.role == UserRole::Admin).then_some(user.tenant_id);
        refuse_last_admin(&mut tx, user.id, admin_of).await?;
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, role, created_at, updated_at, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
             email = excluded.email, role = excluded.role, created_at = excluded.created_at, \
             updated_at = excluded.updated_at, data = excluded.data",
        )
        .bind(user.id.to_string())
        .bind(user.tenant_id.to_string())
        .bind(&user.email)
        .bind(user.role.as_str())
        .bind(ts(user.created_at))
        .bind(ts(user.updated_at))
        .bind(data)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_user_write_err(e, map_err))?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        data.map(|d| parse_json(&d, "user")).transpose()
    }

    async fn users_by_email(&self, email: &str) -> StoreResult<Vec<UserRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM users WHERE email = ? ORDER BY created_at, id LIMIT ?",
        )
        .bind(email)
        .bind(MAX_USERS_PER_EMAIL as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "user")).collect()
    }

    async fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<UserRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM users WHERE tenant_id = ? ORDER BY created_at, id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "user")).collect()
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        refuse_last_admin(&mut tx, id, None).await?;
        sqlx::query("DELETE FROM auth_tokens WHERE user_id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_session(
        &self,
        scope: UsageScope,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (key, _, _) = usage_scope(scope);
        sqlx::query(
            "UPDATE session_usage_counters SET count = count - 1 \
             WHERE scope = ? AND period_start = ? AND period_end = ? AND count > 0",
        )
        .bind(&key)
        .bind(ts(from))
        .bind(ts(to))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn put_auth_token(&self, token: &AuthToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_tokens (token_hash, user_id, tenant_id, expires_at, data) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&token.token_hash)
        .bind(token.user_id.to_string())
        .bind(token.tenant_id.to_string())
        .bind(ts(token.expires_at))
        .bind(to_json(token, "auth token")?)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn auth_token(&self, token_hash: &str) -> StoreResult<Option<AuthToken>> {
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM auth_tokens WHERE token_hash = ?")
                .bind(token_hash)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        data.map(|d| parse_json(&d, "auth token")).transpose()
    }

    async fn delete_auth_token(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_auth_tokens(&self, user: UserId) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM auth_tokens WHERE user_id = ?")
            .bind(user.to_string())
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn prune_auth_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM auth_tokens WHERE expires_at <= ?")
            .bind(ts(now))
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn list_conversations(
        &self,
        tenant: TenantId,
        query: &ConversationQuery,
    ) -> StoreResult<(Vec<Session>, u64)> {
        // The page first, then its sessions brought up to date: only the page's rows look
        // into their histories.
        let page = self
            .read_fresh(|| async {
                let mut qb = QueryBuilder::new(format!(
                    "SELECT {FRESH_SESSION_COLS} FROM (SELECT id, data, updated_at"
                ));
                push_conversation_filters(&mut qb, tenant, query);
                qb.push(" ORDER BY updated_at DESC, id DESC LIMIT ")
                    .push_bind(page_bound(query.limit))
                    .push(" OFFSET ")
                    .push_bind(page_bound(query.offset))
                    .push(") AS s ORDER BY s.updated_at DESC, s.id DESC");
                let rows = qb.build().fetch_all(&self.reader).await.map_err(map_err)?;
                rows.iter().map(fresh_session_from_row).collect()
            })
            .await?;
        let mut qb = QueryBuilder::new("SELECT COUNT(*)");
        push_conversation_filters(&mut qb, tenant, query);
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok((page, count(total, "conversation")?))
    }

    async fn reserve_session(
        &self,
        scope: UsageScope,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<bool> {
        let (key, column, id) = usage_scope(scope);
        let (from, to) = (ts(from), ts(to));
        // The transaction holds the single writer connection, so no other reservation
        // runs between starting the counter and raising it.
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        // A new counter starts from the scope's sessions in the period; the count runs only
        // when there is no counter yet.
        sqlx::query(&format!(
            "INSERT INTO session_usage_counters (scope, period_start, period_end, count) \
             SELECT ?1, ?2, ?3, \
                 (SELECT COUNT(*) FROM sessions WHERE {column} = ?4 \
                  AND created_at >= ?2 AND created_at < ?3 AND state <> ?5) \
             WHERE NOT EXISTS (SELECT 1 FROM session_usage_counters \
                 WHERE scope = ?1 AND period_start = ?2 AND period_end = ?3) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&key)
        .bind(&from)
        .bind(&to)
        .bind(id.to_string())
        .bind(CloseStatus::DailyLimitExceeded.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let done = sqlx::query(
            "UPDATE session_usage_counters SET count = count + 1 \
             WHERE scope = ? AND period_start = ? AND period_end = ? AND count < ?",
        )
        .bind(&key)
        .bind(&from)
        .bind(&to)
        // Beyond i64::MAX is as good as no limit.
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn session_usage(
        &self,
        tenant: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        lookback: TimeDelta,
    ) -> StoreResult<SessionUsage> {
        let since = from
            .checked_sub_signed(lookback.max(TimeDelta::zero()))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut rows = sqlx::query(
            "SELECT created_at, closed_at, updated_at, state FROM sessions \
             WHERE tenant_id = ? AND created_at >= ? AND created_at < ?",
        )
        .bind(tenant.to_string())
        .bind(ts(since))
        .bind(ts(to))
        .fetch(&self.reader);
        let mut usage = SessionUsage::default();
        while let Some(row) = rows.try_next().await.map_err(map_err)? {
            let start = parse_ts(col(&row, "created_at")?)?;
            let in_period = u64::from(start >= from);
            let state: &str = col(&row, "state")?;
            if state == CloseStatus::DailyLimitExceeded.as_str() {
                usage.refused += in_period;
                continue;
            }
            usage.sessions += in_period;
            // Open ("active", as Session::status_str says) until now; a closed session
            // without closed_at ended by its last write at the latest.
            let end = if state == "active" {
                now
            } else {
                match col::<Option<&str>>(&row, "closed_at")? {
                    Some(closed) => parse_ts(closed)?,
                    None => parse_ts(col(&row, "updated_at")?)?,
                }
            };
            usage.billable += windows_in(start, end, from, to);
        }
        Ok(usage)
    }

    async fn create_agent(&self, record: &AgentRecord, definition: &str) -> StoreResult<()> {
        let id = record.id.to_string();
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        sqlx::query(&format!(
            "INSERT INTO agents ({AGENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&id)
        .bind(record.tenant_id.to_string())
        .bind(&record.name)
        .bind(record.status.as_str())
        .bind(record.status_reason.as_deref())
        .bind(record.current_version)
        .bind(&record.token_hash)
        .bind(ts(record.created_at))
        .bind(ts(record.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO agent_versions (agent_id, version, definition, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(record.current_version)
        .bind(definition)
        .bind(ts(record.created_at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn add_agent_version(
        &self,
        agent: AgentId,
        version: i64,
        name: &str,
        definition: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let id = agent.to_string();
        let at = ts(at);
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        // A missing agent fails the foreign key, so this is a Conflict too.
        sqlx::query(
            "INSERT INTO agent_versions (agent_id, version, definition, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(version)
        .bind(definition)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("UPDATE agents SET current_version = ?, name = ?, updated_at = ? WHERE id = ?")
            .bind(version)
            .bind(name)
            .bind(&at)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_agent(&self, agent: AgentId) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(agent.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self, tenant: TenantId) -> StoreResult<Vec<AgentRecord>> {
        let sql =
            format!("SELECT {AGENT_COLS} FROM agents WHERE tenant_id = ? ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(tenant.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn all_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents ORDER BY tenant_id, created_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn get_agent_version(&self, agent: AgentId, version: i64) -> StoreResult<Option<String>> {
        let row =
            sqlx::query("SELECT definition FROM agent_versions WHERE agent_id = ? AND version = ?")
                .bind(agent.to_string())
                .bind(version)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        row.as_ref().map(|r| col(r, "definition")).transpose()
    }

    async fn set_agent_version_definition(
        &self,
        agent: AgentId,
        version: i64,
        definition: &str,
    ) -> StoreResult<()> {
        let q = sqlx::query(
            "UPDATE agent_versions SET definition = ? WHERE agent_id = ? AND version = ?",
        )
        .bind(definition)
        .bind(agent.to_string())
        .bind(version);
        self.update_one(q, || format!("no version {version} of agent {agent}"))
            .await
    }

    async fn set_agent_status(
        &self,
        agent: AgentId,
        status: AgentStatus,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        // updated_at tracks definition changes (add_agent_version), not run status.
        let q = sqlx::query("UPDATE agents SET status = ?, status_reason = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(reason)
            .bind(agent.to_string());
        self.update_one(q, || format!("no agent {agent}")).await
    }

    async fn set_agent_token_hash(&self, agent: AgentId, token_hash: &str) -> StoreResult<()> {
        let q = sqlx::query("UPDATE agents SET token_hash = ? WHERE id = ?")
            .bind(token_hash)
            .bind(agent.to_string());
        self.update_one(q, || format!("no agent {agent}")).await
    }

    async fn delete_agent(&self, agent: AgentId) -> StoreResult<bool> {
        let id = agent.to_string();
        // Holding the writer until the unindexed rows of the sessions are forgotten, so no
        // fold indexes them after they are gone.
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(map_err)?;
        let sessions: Vec<String> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE agent_id = ?")
                .bind(&id)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
        for sql in [
            "DELETE FROM messages WHERE seq IN (SELECT seq FROM message_index \
             WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = ?))",
            "DELETE FROM messages WHERE seq > (SELECT watermark FROM message_fold) \
             AND session_id IN (SELECT id FROM sessions WHERE agent_id = ?)",
            "DELETE FROM message_index WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = ?)",
            "DELETE FROM attachments WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = ?)",
            "DELETE FROM sessions WHERE agent_id = ?",
            "DELETE FROM agent_versions WHERE agent_id = ?",
            "DELETE FROM agent_channels WHERE agent_id = ?",
            "DELETE FROM widgets WHERE agent_id = ?",
        ] {
            sqlx::query(sql)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let done = sqlx::query("DELETE FROM agents WHERE id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        let sessions = sessions
            .iter()
            .map(|s| parse_uuid(s))
            .collect::<StoreResult<Vec<_>>>()?;
        self.unindexed.forget(&sessions);
        Ok(done.rows_affected() > 0)
    }

    async fn commit_all(
        &self,
        sessions: &[SessionWrites],
        connections: &[ConnectionWrite],
    ) -> StoreResult<Committed> {
        if sessions.is_empty() && connections.is_empty() {
            return Ok(Committed::default());
        }
        // The writer stays held until `unindexed` knows this commit (and until a fold it
        // makes due is done), so no read sees one without the other.
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        with_raw(&mut conn, |db| {
            let done = group_commit::write_batch(db, &self.unindexed, sessions, connections)?;
            if self.unindexed.fold_due() {
                message_index::fold(db, &self.unindexed);
            }
            Ok(done)
        })
        .await
    }

    async fn claim_session(&self, session: SessionId) -> StoreResult<Option<Epoch>> {
        sqlx::query_scalar("UPDATE sessions SET epoch = epoch + 1 WHERE id = ? RETURNING epoch")
            .bind(session.to_string())
            .fetch_optional(&self.writer)
            .await
            .map_err(map_err)
    }

    async fn load_session(&self, session: SessionId) -> StoreResult<Option<Session>> {
        let sql = format!("SELECT {FRESH_SESSION_COLS} FROM sessions s WHERE s.id = ?");
        let mut found = self
            .read_fresh(|| async {
                let row = sqlx::query(&sql)
                    .bind(session.to_string())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(map_err)?;
                Ok(row
                    .as_ref()
                    .map(fresh_session_from_row)
                    .transpose()?
                    .into_iter()
                    .collect())
            })
            .await?;
        Ok(found.pop())
    }

    async fn load_messages(&self, session: SessionId) -> StoreResult<Vec<Message>> {
        let span = self.unindexed.span(session);
        let sql = message_index::select_messages("ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(session.to_string())
            .bind(span.map(|s| s.first_seq))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(message_from_row).collect()
    }

    async fn load_recent_messages(
        &self,
        session: SessionId,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let span = self.unindexed.span(session);
        let sql = message_index::select_messages("ORDER BY id DESC LIMIT ?3");
        let rows = sqlx::query(&sql)
            .bind(session.to_string())
            .bind(span.map(|s| s.first_seq))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        let mut out = rows
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn find_reply(&self, session: SessionId, key: &str) -> StoreResult<Option<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE session_id = ? AND idempotency_key = ?"
        );
        let row = sqlx::query(&sql)
            .bind(session.to_string())
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(message_from_row).transpose()
    }

    async fn sessions_for_user(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        ext_id: &str,
        ext_type: &str,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(
            "SELECT data FROM sessions \
             WHERE tenant_id = ? AND user_id = ? AND ext_type = ? \
               AND (?4 IS NULL OR agent_id = ?4) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.to_string())
        .bind(ext_id)
        .bind(ext_type)
        .bind(agent.map(|a| a.to_string()))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn due_sessions(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(SessionId, AgentId)>> {
        // Closed sessions have no deadline, so the partial index holds open ones only.
        let rows = sqlx::query(
            "SELECT id, agent_id FROM sessions \
             WHERE next_deadline IS NOT NULL AND next_deadline <= ? \
             ORDER BY next_deadline, id LIMIT ?",
        )
        .bind(now.timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((parse_uuid(col(r, "id")?)?, parse_uuid(col(r, "agent_id")?)?)))
            .collect()
    }

    async fn set_feedback(
        &self,
        session: SessionId,
        log_id: i64,
        feedback: Feedback,
    ) -> StoreResult<bool> {
        // Holding the writer: the span stays true (no commit or fold) until the update.
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        let span = self.unindexed.span(session);
        let done = sqlx::query(
            "UPDATE messages SET feedback = ?1 WHERE seq = COALESCE( \
             (SELECT seq FROM message_index WHERE session_id = ?2 AND id = ?3), \
             (SELECT seq FROM messages WHERE seq >= ?4 AND session_id = ?2 AND id = ?3))",
        )
        .bind(feedback_str(feedback))
        .bind(session.to_string())
        .bind(log_id)
        .bind(span.map(|s| s.first_seq))
        .execute(&mut *conn)
        .await
        .map_err(map_err)?
        .rows_affected();
        Ok(done > 0)
    }

    async fn get_attachment(
        &self,
        id: Uuid,
    ) -> StoreResult<Option<(SessionId, AttachmentMeta, Bytes)>> {
        let row = sqlx::query(
            "SELECT id, session_id, filename, content_type, size, bytes FROM attachments WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let size: i64 = col(&row, "size")?;
        let meta = AttachmentMeta {
            id: parse_uuid(col(&row, "id")?)?,
            filename: col(&row, "filename")?,
            content_type: col(&row, "content_type")?,
            size: u64::try_from(size)
                .map_err(|_| StoreError::Corrupt(format!("attachment size {size}")))?,
        };
        let bytes: Vec<u8> = col(&row, "bytes")?;
        Ok(Some((
            parse_uuid(col(&row, "session_id")?)?,
            meta,
            Bytes::from(bytes),
        )))
    }

    async fn put_connection(&self, c: &ConnectionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connections (id, tenant_id, created_at, data) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
        )
        .bind(c.id.to_string())
        .bind(c.tenant_id.to_string())
        .bind(ts(c.created_at))
        .bind(to_json(c, "connection")?)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_connection(&self, id: ConnectionId) -> StoreResult<Option<ConnectionRecord>> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM connections WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        data.map(|d| parse_json(&d, "connection")).transpose()
    }

    async fn list_connections(&self, tenant: TenantId) -> StoreResult<Vec<ConnectionRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM connections WHERE tenant_id = ? ORDER BY created_at, id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "connection")).collect()
    }

    async fn delete_connection(&self, id: ConnectionId) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        for sql in [
            "DELETE FROM agent_channels WHERE connection_id = ?",
            "DELETE FROM connector_inbox WHERE connection_id = ?",
            "DELETE FROM channel_sessions WHERE connection_id = ?",
            "DELETE FROM connection_events WHERE connection_id = ?",
            "DELETE FROM connector_cursors WHERE connection_id = ?",
            "DELETE FROM webhook_outbox WHERE connection_id = ?",
        ] {
            sqlx::query(sql)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let done = sqlx::query("DELETE FROM connections WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_agent_channels(
        &self,
        agent: AgentId,
        channels: &[AgentChannel],
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM agent_channels WHERE agent_id = ?")
            .bind(agent.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        for c in channels {
            sqlx::query(
                "INSERT INTO agent_channels (agent_id, connection_id, inbound) VALUES (?, ?, ?)",
            )
            .bind(agent.to_string())
            .bind(c.connection_id.to_string())
            .bind(i64::from(c.inbound))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn agent_channels(&self, agent: AgentId) -> StoreResult<Vec<AgentChannel>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT connection_id, inbound FROM agent_channels WHERE agent_id = ? ORDER BY connection_id",
        )
        .bind(agent.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.into_iter()
            .map(|(c, inbound)| {
                Ok(AgentChannel {
                    connection_id: parse_uuid(&c)?,
                    inbound: inbound != 0,
                })
            })
            .collect()
    }

    async fn inbound_agent(&self, connection: ConnectionId) -> StoreResult<Option<AgentId>> {
        let agent: Option<String> = sqlx::query_scalar(
            "SELECT agent_id FROM agent_channels WHERE connection_id = ? AND inbound = 1",
        )
        .bind(connection.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        agent.as_deref().map(parse_uuid).transpose()
    }

    async fn put_widget(&self, widget: &WidgetRecord) -> StoreResult<()> {
        let mut q = sqlx::query(UPSERT_WIDGET);
        for col in widget_row(widget)? {
            q = q.bind(col);
        }
        q.execute(&self.writer).await.map_err(map_err)?;
        Ok(())
    }

    async fn widget_of_agent(&self, agent: AgentId) -> StoreResult<Option<WidgetRecord>> {
        self.widget_where("agent_id", &agent.to_string()).await
    }

    async fn widget(&self, widget_id: &str) -> StoreResult<Option<WidgetRecord>> {
        self.widget_where("widget_id", widget_id).await
    }

    async fn inbox_mark_seen(
        &self,
        connection: ConnectionId,
        dedup_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO connector_inbox (connection_id, dedup_id, received_at, message, done) \
             VALUES (?, ?, ?, 'null', 1) ON CONFLICT (connection_id, dedup_id) DO NOTHING",
        )
        .bind(connection.to_string())
        .bind(dedup_id)
        .bind(ts(at))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn inbox_pending(
        &self,
        connection: ConnectionId,
        limit: u32,
    ) -> StoreResult<Vec<InboundMessage>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT message FROM connector_inbox WHERE connection_id = ? AND done = 0 \
             ORDER BY seq LIMIT ?",
        )
        .bind(connection.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|m| parse_json(m, "inbound message"))
            .collect()
    }

    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM connector_inbox WHERE done = 1 AND received_at < ?")
            .bind(ts(before))
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn channel_session(
        &self,
        connection: ConnectionId,
        chat_key: &str,
    ) -> StoreResult<Option<ChannelSession>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT session_id, started_at FROM channel_sessions \
             WHERE connection_id = ? AND chat_key = ?",
        )
        .bind(connection.to_string())
        .bind(chat_key)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        row.map(|(session_id, started_at)| {
            Ok(ChannelSession {
                session_id: parse_uuid(&session_id)?,
                started_at: parse_ts(&started_at)?,
            })
        })
        .transpose()
    }

    async fn set_channel_session(
        &self,
        connection: ConnectionId,
        chat_key: &str,
        session: &ChannelSession,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO channel_sessions (connection_id, chat_key, session_id, started_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (connection_id, chat_key) DO UPDATE SET \
             session_id = excluded.session_id, started_at = excluded.started_at",
        )
        .bind(connection.to_string())
        .bind(chat_key)
        .bind(session.session_id.to_string())
        .bind(ts(session.started_at))
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn connection_events(
        &self,
        connection: ConnectionId,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<ConnectionEvent>> {
        let rows = sqlx::query(
            "SELECT id, connection_id, at, kind, detail FROM connection_events \
             WHERE connection_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(connection.to_string())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn connector_cursor(&self, connection: ConnectionId) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT cursor FROM connector_cursors WHERE connection_id = ?")
            .bind(connection.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)
    }

    async fn set_connector_cursor(
        &self,
        connection: ConnectionId,
        cursor: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connector_cursors (connection_id, cursor) VALUES (?, ?) \
             ON CONFLICT (connection_id) DO UPDATE SET cursor = excluded.cursor",
        )
        .bind(connection.to_string())
        .bind(cursor)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn outbox_push(
        &self,
        connection: ConnectionId,
        event: &NewOutboxEvent,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let at = ts(at);
        sqlx::query_scalar(
            "INSERT INTO webhook_outbox (connection_id, msg_id, event_type, body, attempts, \
             next_attempt_at, created_at) VALUES (?, ?, ?, ?, 0, ?, ?) RETURNING id",
        )
        .bind(connection.to_string())
        .bind(&event.msg_id)
        .bind(&event.event_type)
        .bind(&event.body)
        .bind(&at)
        .bind(&at)
        .fetch_one(&self.writer)
        .await
        .map_err(map_err)
    }

    async fn outbox_claim(
        &self,
        connection: ConnectionId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>> {
        let id = connection.to_string();
        // The store writes through its one writer connection, which this transaction holds,
        // so no other claim or push runs between the read and the lease.
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM webhook_outbox WHERE connection_id = ? ORDER BY id LIMIT ?"
        ))
        .bind(&id)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = outbox_from_row(row)?;
            if entry.next_attempt_at > now {
                break;
            }
            claimed.push(entry);
        }
        let Some(last) = claimed.last().map(|e| e.id) else {
            return Ok(claimed);
        };
        // The claimed events are exactly the connection's events up to the last of them.
        sqlx::query(
            "UPDATE webhook_outbox SET next_attempt_at = ? WHERE connection_id = ? AND id <= ?",
        )
        .bind(ts(lease_until))
        .bind(&id)
        .bind(last)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        for entry in &mut claimed {
            entry.next_attempt_at = lease_until;
        }
        Ok(claimed)
    }

    async fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        last_error: &str,
    ) -> StoreResult<()> {
        // An event that is gone (its connection was deleted meanwhile) needs no retry.
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ?, last_error = ? \
             WHERE id = ?",
        )
        .bind(i64::from(attempts))
        .bind(ts(next_attempt_at))
        .bind(last_error)
        .bind(id)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn outbox_done(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM webhook_outbox WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn outbox_len(&self, connection: ConnectionId) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox WHERE connection_id = ?")
                .bind(connection.to_string())
                .fetch_one(&self.reader)
                .await
                .map_err(map_err)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("outbox length {n}")))
    }

    async fn put_campaign(&self, c: &CampaignRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO campaigns (id, tenant_id, created_at, data) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
             created_at = excluded.created_at, data = excluded.data",
        )
        .bind(c.campaign.id.to_string())
        .bind(c.campaign.tenant_id.to_string())
        .bind(ts(c.campaign.created_at))
        .bind(to_json(c, "campaign")?)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<CampaignRecord>> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM campaigns WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        data.map(|d| parse_json(&d, "campaign")).transpose()
    }

    async fn list_campaigns(&self, tenant: TenantId) -> StoreResult<Vec<CampaignRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM campaigns WHERE tenant_id = ? ORDER BY created_at, id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "campaign")).collect()
    }

    async fn list_running_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        // Campaigns are few and their status lives in `data`: filtered here.
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT data FROM campaigns ORDER BY created_at, id")
                .fetch_all(&self.reader)
                .await
                .map_err(map_err)?;
        let all = rows
            .iter()
            .map(|d| parse_json::<CampaignRecord>(d, "campaign"))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(all
            .into_iter()
            .filter(|c| c.campaign.status == crate::campaign::CampaignStatus::Running)
            .collect())
    }

    async fn delete_campaign(&self, id: CampaignId) -> StoreResult<bool> {
        let id = id.to_string();
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        let done = sqlx::query("DELETE FROM campaigns WHERE id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        for sql in [
            "DELETE FROM campaign_flows WHERE campaign_id = ?",
            "DELETE FROM participants WHERE campaign_id = ?",
            "DELETE FROM campaign_uploads WHERE campaign_id = ?",
            "DELETE FROM communications WHERE campaign_id = ?",
            "DELETE FROM participant_events WHERE campaign_id = ?",
            "DELETE FROM flow_steps WHERE campaign_id = ?",
        ] {
            sqlx::query(sql)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_flow(&self, flow: &FlowRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO campaign_flows (campaign_id, name, data) VALUES (?, ?, ?) \
             ON CONFLICT (campaign_id, name) DO UPDATE SET data = excluded.data",
        )
        .bind(flow.campaign_id.to_string())
        .bind(&flow.name)
        .bind(to_json(flow, "flow")?)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_flow(&self, campaign: CampaignId, name: &str) -> StoreResult<Option<FlowRecord>> {
        let data: Option<String> = sqlx::query_scalar(
            "SELECT data FROM campaign_flows WHERE campaign_id = ? AND name = ?",
        )
        .bind(campaign.to_string())
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        data.map(|d| parse_json(&d, "flow")).transpose()
    }

    async fn list_flows(&self, campaign: CampaignId) -> StoreResult<Vec<FlowRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM campaign_flows WHERE campaign_id = ? ORDER BY name",
        )
        .bind(campaign.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "flow")).collect()
    }

    async fn delete_flow(&self, campaign: CampaignId, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM campaign_flows WHERE campaign_id = ? AND name = ?")
            .bind(campaign.to_string())
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn upsert_participants(
        &self,
        tenant: TenantId,
        campaign: CampaignId,
        upload: Option<UploadId>,
        batch: &[CheckedParticipant],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<Upserted>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant_id, campaign_id) = (tenant.to_string(), campaign.to_string());
        let upload_id = upload.map(|u| u.to_string());
        let at = ts(at);
        // SQLite is in-process, so a statement per row costs no round trip; the one
        // transaction (holding the single write lock) makes the batch atomic and lets each
        // row see the ones before it, as the contract asks.
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM campaigns WHERE id = ? AND tenant_id = ?")
                .bind(&campaign_id)
                .bind(&tenant_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        if exists.is_none() {
            return Err(StoreError::Conflict(format!(
                "no campaign {campaign} of tenant {tenant}"
            )));
        }
        let mut out = Vec::with_capacity(batch.len());
        for p in batch {
            let customer_attributes = to_json(&p.customer, "customer attributes")?;
            let found: Option<String> = sqlx::query_scalar(customer_lookup_sql(&p.key))
                .bind(&tenant_id)
                .bind(p.key.value())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
            let customer_id = match found {
                Some(id) => {
                    // The generated external_id/email/phone columns follow the merge.
                    sqlx::query(
                        "UPDATE customers SET attributes = json_patch(attributes, ?), \
                         updated_at = ? WHERE id = ?",
                    )
                    .bind(customer_attributes)
                    .bind(&at)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    parse_uuid(&id)?
                }
                None => {
                    let id = Uuid::now_v7();
                    sqlx::query(
                        "INSERT INTO customers (id, tenant_id, attributes, created_at, \
                         updated_at) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(id.to_string())
                    .bind(&tenant_id)
                    .bind(customer_attributes)
                    .bind(&at)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    id
                }
            };
            // The id a new participant gets; an existing one answers its own instead.
            let proposed = Uuid::now_v7();
            let id: String = sqlx::query_scalar(UPSERT_PARTICIPANT)
                .bind(proposed.to_string())
                .bind(&campaign_id)
                .bind(customer_id.to_string())
                .bind(p.object_id.as_deref().unwrap_or(""))
                .bind(to_json(&p.participant, "participant attributes")?)
                .bind(p.timezone.map(|tz| tz.name()))
                .bind(upload_id.as_deref())
                .bind(&at)
                .bind(&at)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
            let participant_id = parse_uuid(&id)?;
            out.push(Upserted {
                participant_id,
                customer_id,
                created: participant_id == proposed,
            });
        }
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn get_participant(&self, id: ParticipantId) -> StoreResult<Option<ParticipantRecord>> {
        let sql = format!("SELECT {PARTICIPANT_COLS} FROM participants p WHERE p.id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(participant_from_row).transpose()
    }

    async fn list_participants(
        &self,
        campaign: CampaignId,
        query: &ParticipantQuery,
    ) -> StoreResult<(Vec<ParticipantRecord>, u64)> {
        let mut qb = QueryBuilder::new(format!("SELECT {PARTICIPANT_COLS}"));
        push_participant_filters(&mut qb, campaign, query);
        qb.push(" ORDER BY p.created_at, p.id LIMIT ")
            .push_bind(page_bound(query.limit))
            .push(" OFFSET ")
            .push_bind(page_bound(query.offset));
        let rows = qb.build().fetch_all(&self.reader).await.map_err(map_err)?;
        let page = rows
            .iter()
            .map(participant_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut qb = QueryBuilder::new("SELECT COUNT(*)");
        push_participant_filters(&mut qb, campaign, query);
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok((page, count(total, "participant")?))
    }

    async fn delete_participant(&self, id: ParticipantId) -> StoreResult<bool> {
        let id = id.to_string();
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        let campaign: Option<String> =
            sqlx::query_scalar("DELETE FROM participants WHERE id = ? RETURNING campaign_id")
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let Some(campaign) = campaign else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM communications WHERE participant_id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // By campaign too, so the campaign's (short) queue is all that is searched.
        sqlx::query("DELETE FROM participant_events WHERE campaign_id = ? AND participant_id = ?")
            .bind(&campaign)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM flow_steps WHERE participant_id = ?")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn get_customer(&self, id: CustomerId) -> StoreResult<Option<CustomerRecord>> {
        let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(customer_from_row).transpose()
    }

    async fn list_customers(
        &self,
        tenant: TenantId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<CustomerRecord>, u64)> {
        let sql = format!(
            "SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = ? \
             ORDER BY created_at, id LIMIT ? OFFSET ?"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.to_string())
            .bind(page_bound(limit))
            .bind(page_bound(offset))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        let page = rows
            .iter()
            .map(customer_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE tenant_id = ?")
            .bind(tenant.to_string())
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok((page, count(total, "customer")?))
    }

    async fn put_upload(&self, upload: &UploadRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO campaign_uploads (id, campaign_id, created_at, data) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET campaign_id = excluded.campaign_id, \
             created_at = excluded.created_at, data = excluded.data",
        )
        .bind(upload.id.to_string())
        .bind(upload.campaign_id.to_string())
        .bind(ts(upload.created_at))
        .bind(to_json(upload, "upload")?)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<UploadRecord>> {
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM campaign_uploads WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        data.map(|d| parse_json(&d, "upload")).transpose()
    }

    async fn list_uploads(&self, campaign: CampaignId) -> StoreResult<Vec<UploadRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM campaign_uploads WHERE campaign_id = ? \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(campaign.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "upload")).collect()
    }

    async fn pending_participants(
        &self,
        campaign: CampaignId,
        after: Option<ParticipantId>,
        limit: u32,
    ) -> StoreResult<Vec<ParticipantId>> {
        // The nil id sorts before every other.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM participants WHERE campaign_id = ? AND pending IS NOT NULL \
             AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(campaign.to_string())
        .bind(after.unwrap_or(Uuid::nil()).to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }

    async fn add_participant_event(
        &self,
        campaign: CampaignId,
        participant: ParticipantId,
        trigger: TriggerType,
        communication: Option<CommunicationId>,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
        insert_participant_event(&mut conn, campaign, participant, trigger, communication, at).await
    }

    async fn participant_events(
        &self,
        campaign: CampaignId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<ParticipantEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {PARTICIPANT_EVENT_COLS} FROM participant_events \
             WHERE campaign_id = ? AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(campaign.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(participant_event_from_row).collect()
    }

    async fn commit_participant_step(&self, step: &ParticipantStep) -> StoreResult<StepOutcome> {
        let id = step.participant_id.to_string();
        let at = ts(step.at);
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        if let Some(event) = step.event_done {
            sqlx::query("DELETE FROM participant_events WHERE id = ?")
                .bind(event)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM participants WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists.is_none() {
            tx.commit().await.map_err(map_err)?;
            return Ok(StepOutcome::default());
        }
        // Before the patch moves updated_at: an upload since the read moved it already, and
        // its trigger stays.
        if let Some(read_at) = step.clear_pending {
            sqlx::query("UPDATE participants SET pending = NULL WHERE id = ? AND updated_at = ?")
                .bind(&id)
                .bind(ts(read_at))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        patch_row(&mut tx, "participants", &id, &step.participant_patch, &at).await?;
        patch_row(
            &mut tx,
            "customers",
            &step.customer_id.to_string(),
            &step.customer_patch,
            &at,
        )
        .await?;
        let mut canceled = Vec::new();
        if step.cancel_open {
            let open: Vec<String> = sqlx::query_scalar(&OPEN_COMMUNICATIONS)
                .bind(&id)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
            for data in &open {
                let c = cancel(communication_from_data(data)?, step.at);
                update_communication(&mut tx, &c).await?;
                canceled.push(c);
            }
        }
        for c in &step.new_communications {
            insert_communication(&mut tx, c).await?;
        }
        for (flow, node) in &step.visited {
            sqlx::query(
                "INSERT INTO flow_steps (campaign_id, participant_id, flow, node, at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(step.campaign_id.to_string())
            .bind(&id)
            .bind(flow)
            .bind(node)
            .bind(&at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(StepOutcome {
            applied: true,
            canceled,
        })
    }

    async fn get_communication(
        &self,
        id: CommunicationId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM communications WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        data.as_deref().map(communication_from_data).transpose()
    }

    async fn change_communication(
        &self,
        id: CommunicationId,
        from: &[CommunicationStatus],
        change: &CommunicationChange,
    ) -> StoreResult<Option<CommunicationRecord>> {
        // The transaction holds the one writer connection, so no other write runs between
        // the status check and the update.
        let mut tx = self.writer.begin().await.map_err(map_err)?;
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM communications WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let Some(data) = data else {
            return Ok(None);
        };
        let c = communication_from_data(&data)?;
        if !from.contains(&c.status) {
            return Ok(None);
        }
        let c = apply_change(c, change);
        update_communication(&mut tx, &c).await?;
        if let Some(results) = &change.results {
            sqlx::query("UPDATE participants SET result = ?, result_at = ? WHERE id = ?")
                .bind(to_json(results, "results")?)
                .bind(ts(change.at))
                .bind(c.participant_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        if let Some(trigger) = change.fire {
            insert_participant_event(
                &mut tx,
                c.campaign_id,
                c.participant_id,
                trigger,
                Some(c.id),
                change.at,
            )
            .await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Some(c))
    }

    async fn due_communications(
        &self,
        campaign: CampaignId,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<CommunicationRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM communications WHERE campaign_id = ? AND status = 'Planned' \
             AND due_at <= ? ORDER BY due_at, id LIMIT ?",
        )
        .bind(campaign.to_string())
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| communication_from_data(d)).collect()
    }

    async fn next_due_communication(
        &self,
        campaign: CampaignId,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<String> = sqlx::query_scalar(
            "SELECT MIN(due_at) FROM communications WHERE campaign_id = ? \
             AND status = 'Planned'",
        )
        .bind(campaign.to_string())
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        due.as_deref().map(parse_ts).transpose()
    }

    async fn live_communications(
        &self,
        campaign: CampaignId,
    ) -> StoreResult<Vec<(CommunicationId, SessionId)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(&LIVE_COMMUNICATIONS)
            .bind(campaign.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|(id, session)| Ok((parse_uuid(id)?, parse_uuid(session)?)))
            .collect()
    }

    async fn communication_by_session(
        &self,
        session: SessionId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        let data: Option<String> = sqlx::query_scalar(
            "SELECT data FROM communications WHERE session_id = ? \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(session.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        data.as_deref().map(communication_from_data).transpose()
    }

    async fn communication_by_message(
        &self,
        connection: ConnectionId,
        message_id: &str,
    ) -> StoreResult<Option<CommunicationRecord>> {
        let data: Option<String> = sqlx::query_scalar(
            "SELECT data FROM communications WHERE connection_id = ? AND message_id = ? \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(connection.to_string())
        .bind(message_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        data.as_deref().map(communication_from_data).transpose()
    }

    async fn list_communications(
        &self,
        participant: ParticipantId,
    ) -> StoreResult<Vec<CommunicationRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM communications WHERE participant_id = ? ORDER BY created_at, id",
        )
        .bind(participant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| communication_from_data(d)).collect()
    }

    async fn campaign_stats(&self, campaign: CampaignId) -> StoreResult<CampaignStats> {
        let campaign = campaign.to_string();
        let (participants, pending): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(pending) FROM participants WHERE campaign_id = ?",
        )
        .bind(&campaign)
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let communications: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT status, channel, COUNT(*) FROM communications WHERE campaign_id = ? \
             GROUP BY status, channel",
        )
        .bind(&campaign)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let nodes: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT flow, node, COUNT(*) FROM flow_steps WHERE campaign_id = ? \
             GROUP BY flow, node",
        )
        .bind(&campaign)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        stats_from_rows(participants, pending, communications, nodes)
    }

    async fn customers_by_channel_id(
        &self,
        tenant: TenantId,
        name: &str,
        value: &str,
        limit: u32,
    ) -> StoreResult<Vec<CustomerId>> {
        let sql = match name {
            "telegram_id" => customers_by_attribute!("telegram_id"),
            "whatsapp_id" => customers_by_attribute!("whatsapp_id"),
            "web_id" => customers_by_attribute!("web_id"),
            "phone" => {
                "SELECT id FROM customers WHERE tenant_id = ? AND phone = ? \
                 ORDER BY created_at, id LIMIT ?"
            }
            _ => {
                return Err(StoreError::Conflict(format!(
                    "cannot look customers up by {name}"
                )))
            }
        };
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind(tenant.to_string())
            .bind(value)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }

    async fn participants_of_customer(
        &self,
        campaign: CampaignId,
        customer: CustomerId,
    ) -> StoreResult<Vec<ParticipantId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM participants WHERE campaign_id = ? AND customer_id = ? \
             ORDER BY created_at, id",
        )
        .bind(campaign.to_string())
        .bind(customer.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::tests as suite;
    use crate::store::{Store, Write};

    /// A migrated store in a fresh temporary directory (kept alive by the returned guard).
    async fn file_store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("parley.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, dir)
    }

    async fn memory_store() -> SqliteStore {
        let store = SqliteStore::open_memory().await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Runs one suite function on a file store and on an in-memory store.
    macro_rules! on_both {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                let (store, _dir) = file_store().await;
                suite::$name(&store).await;
                suite::$name(&memory_store().await).await;
            }
        )*};
    }

    on_both!(
        suite_tenants,
        suite_tenant_settings,
        suite_users,
        suite_last_admin,
        suite_concurrent_demotions,
        suite_auth_tokens,
        suite_agents,
        suite_widgets,
        suite_session_roundtrip,
        suite_messages,
        suite_duplicate_message_conflict,
        suite_bad_writes_fail_alone,
        suite_idempotency,
        suite_feedback,
        suite_attachments,
        suite_due_sessions,
        suite_sessions_for_user,
        suite_list_conversations,
        suite_large_batch,
        suite_fencing,
        suite_concurrent_fencing,
        suite_session_usage,
        suite_reserve_session,
        suite_concurrent_reservations,
        suite_connections,
        suite_agent_channels,
        suite_inbound_agent,
        suite_inbox,
        suite_inbox_seen,
        suite_connector_batches,
        suite_connection_writes_with_turns,
        suite_channel_sessions,
        suite_connection_events,
        suite_repeated_connection_events,
        suite_connector_cursor,
        suite_outbox,
        suite_concurrent_outbox_claim,
        suite_delete_connection_state,
        suite_campaigns,
        suite_flows,
        suite_upsert_participants,
        suite_upsert_within_a_batch,
        suite_participant_filters,
        suite_list_participants,
        suite_delete_participant,
        suite_customers,
        suite_uploads,
        suite_upsert_many,
        suite_concurrent_upserts,
        suite_pending_participants,
        suite_participant_step,
        suite_change_communication,
        suite_due_communications,
        suite_campaign_stats,
        suite_customers_by_channel_id,
        suite_delete_progress,
    );

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet.
        let path = dir.path().join("nested/deeper/parley.db");
        let t = suite::tenant("acme", "key");
        let a = suite::agent(t.id, "bot");
        let mut s = suite::session(t.id, a.id, "u1", 0);
        let m = suite::message(s.id, 1, Role::Human, "persist me");
        s.message_count = 1;
        s.last_activity = m.timestamp;
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store.migrate().await.unwrap();
            store.create_tenant(&t).await.unwrap();
            store.create_agent(&a, "def").await.unwrap();
            store
                .commit(&suite::grouped(&[
                    Write::Session(Box::new(s.clone())),
                    Write::Message(Box::new(m.clone())),
                ]))
                .await
                .unwrap();
            store.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        // Migrating an up-to-date file is a no-op.
        store.migrate().await.unwrap();
        assert_eq!(store.tenant_by_key_hash("key").await.unwrap(), Some(t));
        assert_eq!(store.get_agent(a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(
            store.get_agent_version(a.id, 1).await.unwrap().as_deref(),
            Some("def")
        );
        assert_eq!(store.load_session(s.id).await.unwrap(), Some(s));
        assert_eq!(store.load_messages(m.session_id).await.unwrap(), vec![m]);
    }

    /// Sessions stored before closed_at existed get it from their JSON, in the column's
    /// format whatever fraction serde wrote.
    #[tokio::test]
    async fn migration_fills_in_closed_at() {
        let store = SqliteStore::open_memory().await.unwrap();
        // The schema as it was before closed_at.
        Migrator::new(Embedded(&MIGRATIONS[..8]))
            .await
            .unwrap()
            .run(&store.writer)
            .await
            .unwrap();
        let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
        let closed = |nanos| {
            let mut s = suite::session(t, a, "u", 0);
            s.state = crate::model::SessionState::Closed(CloseStatus::Completed);
            s.closed_at = DateTime::from_timestamp(1_700_000_100, nanos);
            s
        };
        let sessions = [
            closed(0),
            closed(120_000_000),
            closed(123_456_789),
            suite::session(t, a, "u", 0),
        ];
        for s in &sessions {
            sqlx::query(
                "INSERT INTO sessions (id, tenant_id, agent_id, user_id, ext_type, state, \
                 created_at, updated_at, data) VALUES (?, ?, ?, 'u', 'x', ?, ?, ?, ?)",
            )
            .bind(s.id.to_string())
            .bind(t.to_string())
            .bind(a.to_string())
            .bind(s.status_str())
            .bind(ts(s.created_at))
            .bind(ts(s.created_at))
            .bind(to_json(s, "session").unwrap())
            .execute(&store.writer)
            .await
            .unwrap();
        }
        store.migrate().await.unwrap();
        for s in &sessions {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT closed_at FROM sessions WHERE id = ?")
                    .bind(s.id.to_string())
                    .fetch_one(&store.writer)
                    .await
                    .unwrap();
            assert_eq!(stored, s.closed_at.map(ts));
        }
    }

    /// Sessions stored before the inbox's columns existed get their mode and assignee from
    /// their JSON.
    #[tokio::test]
    async fn migration_fills_in_mode_and_assignee() {
        let store = SqliteStore::open_memory().await.unwrap();
        // The schema as it was before mode and assignee.
        Migrator::new(Embedded(&MIGRATIONS[..9]))
            .await
            .unwrap()
            .run(&store.writer)
            .await
            .unwrap();
        let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
        let with = |mode, assignee| {
            let mut s = suite::session(t, a, "u", 0);
            s.mode = mode;
            s.assignee = assignee;
            s
        };
        let sessions = [
            with(Mode::Regular, None),
            with(Mode::Regular, Some(Uuid::new_v4())),
            with(Mode::Operator, None),
            with(Mode::Copilot, Some(Uuid::new_v4())),
        ];
        for s in &sessions {
            sqlx::query(
                "INSERT INTO sessions (id, tenant_id, agent_id, user_id, ext_type, state, \
                 created_at, updated_at, data) VALUES (?, ?, ?, 'u', 'x', ?, ?, ?, ?)",
            )
            .bind(s.id.to_string())
            .bind(t.to_string())
            .bind(a.to_string())
            .bind(s.status_str())
            .bind(ts(s.created_at))
            .bind(ts(s.created_at))
            .bind(to_json(s, "session").unwrap())
            .execute(&store.writer)
            .await
            .unwrap();
        }
        store.migrate().await.unwrap();
        for s in &sessions {
            let stored: (String, Option<String>) =
                sqlx::query_as("SELECT mode, assignee FROM sessions WHERE id = ?")
                    .bind(s.id.to_string())
                    .fetch_one(&store.writer)
                    .await
                    .unwrap();
            assert_eq!(
                stored,
                (s.mode.as_str().into(), s.assignee.map(|u| u.to_string()))
            );
        }
    }

    /// The inbox's listings by mode find their rows through its partial index, which SQLite
    /// uses only when the query states the index's condition.
    #[tokio::test]
    async fn inbox_listing_uses_its_index() {
        let store = memory_store().await;
        for mode in [Mode::Operator, Mode::Copilot] {
            let query = ConversationQuery {
                mode: Some(mode),
                active: Some(true),
                assignee: Some(Assignee::Nobody),
                ..ConversationQuery::default()
            };
            let mut qb = QueryBuilder::new("EXPLAIN QUERY PLAN SELECT id");
            push_conversation_filters(&mut qb, Uuid::new_v4(), &query);
            qb.push(" ORDER BY updated_at DESC, id DESC");
            let plan: Vec<String> = qb
                .build()
                .fetch_all(&store.reader)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get("detail"))
                .collect();
            assert!(
                plan.iter().any(|step| step.contains("sessions_inbox")),
                "{plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn bad_rows_are_corrupt_not_panics() {
        let (store, _dir) = file_store().await;
        let (sid, aid) = (Uuid::new_v4(), Uuid::new_v4());
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, agent_id, user_id, ext_type, state, \
             next_deadline, created_at, updated_at, data) \
             VALUES (?, 't', 'not-a-uuid', 'u', 'x', 'active', 0, 'c', 'u', '{broken')",
        )
        .bind(sid.to_string())
        .execute(&store.writer)
        .await
        .unwrap();
        for sql in [
            "INSERT INTO messages (seq, session_id, id, role, text, ts, feedback) \
             VALUES (1, ?, 1, 'ROBOT', 't', 'yesterday', 'MEH')",
            "INSERT INTO message_index (session_id, id, seq) VALUES (?, 1, 1)",
        ] {
            sqlx::query(sql)
                .bind(sid.to_string())
                .execute(&store.writer)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, status, current_version, token_hash, \
             created_at, updated_at) VALUES (?, 'x', 'n', 'Sleeping', 1, 'h', 'c', 'u')",
        )
        .bind(aid.to_string())
        .execute(&store.writer)
        .await
        .unwrap();

        let corrupt = |r: &StoreError| matches!(r, StoreError::Corrupt(_));
        assert!(corrupt(&store.load_session(sid).await.unwrap_err()));
        assert!(corrupt(&store.load_messages(sid).await.unwrap_err()));
        assert!(corrupt(&store.get_agent(aid).await.unwrap_err()));
        assert!(corrupt(
            &store.due_sessions(Utc::now(), 10).await.unwrap_err()
        ));
    }

    /// Messages `ids` of session `s`, odd ones the customer's.
    fn turns(s: SessionId, ids: std::ops::RangeInclusive<i64>) -> Vec<SessionWrites> {
        let writes: Vec<Write> = ids
            .map(|id| {
                let role = if id % 2 == 1 { Role::Human } else { Role::Ai };
                let m = suite::message(s, id, role, &format!("message {id}"));
                Write::Message(Box::new(m))
            })
            .collect();
        suite::grouped(&writes)
    }

    /// Messages (unindexed, indexed) as the tables hold them.
    async fn rows(store: &SqliteStore) -> (i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM messages \
                     WHERE seq > (SELECT watermark FROM message_fold)), \
                    (SELECT COUNT(*) FROM message_index)",
        )
        .fetch_one(&store.reader)
        .await
        .unwrap()
    }

    async fn message_ids(store: &SqliteStore, s: SessionId) -> Vec<i64> {
        let ms = store.load_messages(s).await.unwrap();
        ms.iter().map(|m| m.id).collect()
    }

    /// A stored session with no messages.
    async fn new_session(store: &SqliteStore) -> Session {
        let s = suite::session(Uuid::new_v4(), Uuid::new_v4(), "u1", 0);
        store
            .commit(&suite::grouped(&[Write::Session(Box::new(s.clone()))]))
            .await
            .unwrap();
        s
    }

    #[tokio::test]
    async fn unindexed_messages_read_the_same_before_and_after_a_fold() {
        let (store, _dir) = file_store().await;
        let (s1, s2) = (new_session(&store).await, new_session(&store).await);
        let mut batch = turns(s1.id, 1..=4);
        batch.extend(turns(s2.id, 1..=2));
        store.commit(&batch).await.unwrap();
        assert_eq!(rows(&store).await, (6, 0));
        let logged = store.load_messages(s1.id).await.unwrap();
        assert_eq!(message_ids(&store, s1.id).await, [1, 2, 3, 4]);
        assert_eq!(message_ids(&store, s2.id).await, [1, 2]);
        let loaded = store.load_session(s1.id).await.unwrap().unwrap();
        assert_eq!(loaded.message_count, 4);
        assert_eq!(loaded.last_activity, logged[2].timestamp);
        assert!(store.set_feedback(s1.id, 2, Feedback::Good).await.unwrap());

        store.fold_now().await.unwrap();
        assert_eq!(rows(&store).await, (0, 6));
        let folded = store.load_messages(s1.id).await.unwrap();
        assert_eq!(folded[1].feedback, Feedback::Good);
        let mut expected = logged.clone();
        expected[1].feedback = Feedback::Good;
        assert_eq!(folded, expected);
        assert_eq!(
            store.load_session(s1.id).await.unwrap(),
            Some(loaded.clone())
        );

        // New turns wait for the next fold and read together with the indexed ones.
        store.commit(&turns(s1.id, 5..=6)).await.unwrap();
        assert_eq!(message_ids(&store, s1.id).await, [1, 2, 3, 4, 5, 6]);
        let recent = store.load_recent_messages(s1.id, 3).await.unwrap();
        assert_eq!(recent.iter().map(|m| m.id).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!(
            store
                .load_session(s1.id)
                .await
                .unwrap()
                .unwrap()
                .message_count,
            6
        );
        assert!(store.set_feedback(s1.id, 6, Feedback::Bad).await.unwrap());
        assert!(store.set_feedback(s1.id, 1, Feedback::Bad).await.unwrap());
        assert!(!store.set_feedback(s1.id, 9, Feedback::Bad).await.unwrap());
        let all = store.load_messages(s1.id).await.unwrap();
        assert_eq!(
            (all[0].feedback, all[5].feedback),
            (Feedback::Bad, Feedback::Bad)
        );

        // An id that exists, indexed or not, is a conflict; an unused one below the newest
        // is not.
        for taken in [6, 3] {
            let r = store.commit(&turns(s1.id, taken..=taken)).await;
            assert!(matches!(r, Err(StoreError::Conflict(_))), "{taken}: {r:?}");
        }
        store.commit(&turns(s1.id, 8..=8)).await.unwrap();
        store.commit(&turns(s1.id, 7..=7)).await.unwrap();
        assert_eq!(message_ids(&store, s1.id).await, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(message_ids(&store, s2.id).await, [1, 2]);
    }

    #[tokio::test]
    async fn unindexed_messages_are_read_back_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        let s = {
            let store = SqliteStore::open(&path).await.unwrap();
            store.migrate().await.unwrap();
            let s = new_session(&store).await;
            store.commit(&turns(s.id, 1..=3)).await.unwrap();
            // Dropped without close: nothing is folded.
            s
        };
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(rows(&store).await.0, 3);
        assert_eq!(message_ids(&store, s.id).await, [1, 2, 3]);
        assert_eq!(
            store
                .load_session(s.id)
                .await
                .unwrap()
                .unwrap()
                .message_count,
            3
        );
        let again = store.commit(&turns(s.id, 2..=2)).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        store.commit(&turns(s.id, 4..=4)).await.unwrap();
        // Closing folds what is left.
        store.close().await;
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(rows(&store).await, (0, 4));
        assert_eq!(message_ids(&store, s.id).await, [1, 2, 3, 4]);
    }

    /// A store written before the message index (messages in `messages` and in the old
    /// log) reads the same after the upgrade, and takes new turns.
    #[tokio::test]
    async fn upgrade_to_the_message_index_keeps_every_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let store = SqliteStore::open(&path).await.unwrap();
            let index = MIGRATIONS
                .iter()
                .position(|m| m.1 == "message_index")
                .unwrap();
            let before = &MIGRATIONS[..index];
            assert_eq!(before.last().unwrap().1, "message_log");
            Migrator::new(Embedded(before))
                .await
                .unwrap()
                .run(&store.writer)
                .await
                .unwrap();
            let cols = "session_id, id, role, text, ts, feedback";
            for (table, sid, id, role) in [
                ("messages", s1, 1, "HUMAN"),
                ("messages", s1, 2, "AI"),
                ("messages", s2, 1, "HUMAN"),
                ("message_log", s1, 3, "HUMAN"),
                ("message_log", s1, 4, "AI"),
            ] {
                sqlx::query(&format!(
                    "INSERT INTO {table} ({cols}) VALUES (?, ?, ?, ?, ?, 'NONE')"
                ))
                .bind(sid.to_string())
                .bind(id)
                .bind(role)
                .bind(format!("{table} {id}"))
                .bind(ts(Utc::now()))
                .execute(&store.writer)
                .await
                .unwrap();
            }
            store.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(rows(&store).await, (0, 5));
        let texts: Vec<String> = store
            .load_messages(s1)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(
            texts,
            ["messages 1", "messages 2", "message_log 3", "message_log 4"]
        );
        assert_eq!(message_ids(&store, s2).await, [1]);
        let again = store.commit(&turns(s1, 4..=4)).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        store.commit(&turns(s1, 5..=5)).await.unwrap();
        assert_eq!(message_ids(&store, s1).await, [1, 2, 3, 4, 5]);
        assert_eq!(rows(&store).await, (1, 5));
    }

    /// Users written while an address was unique across the deployment read the same
    /// after the upgrade to per-tenant addresses, and another tenant may then take one.
    #[tokio::test]
    async fn upgrade_to_per_tenant_addresses_keeps_every_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        let (t, other) = (Uuid::new_v4(), Uuid::new_v4());
        let ann = suite::user(t, "ann@acme.test", UserRole::Admin, 1);
        {
            let store = SqliteStore::open(&path).await.unwrap();
            let upgrade = MIGRATIONS
                .iter()
                .position(|m| m.1 == "user_email_per_tenant")
                .unwrap();
            Migrator::new(Embedded(&MIGRATIONS[..upgrade]))
                .await
                .unwrap()
                .run(&store.writer)
                .await
                .unwrap();
            store.put_user(&ann).await.unwrap();
            let twin = suite::user(other, "ann@acme.test", UserRole::Admin, 2);
            assert!(
                store.put_user(&twin).await.is_err(),
                "unique across tenants"
            );
            store.close().await;
        }
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(store.get_user(ann.id).await.unwrap(), Some(ann.clone()));
        let twin = suite::user(other, "ann@acme.test", UserRole::Admin, 2);
        store.put_user(&twin).await.unwrap();
        assert_eq!(
            store.users_by_email("ann@acme.test").await.unwrap(),
            vec![ann.clone(), twin]
        );
        let again = suite::user(t, "ann@acme.test", UserRole::User, 3);
        assert!(matches!(
            store.put_user(&again).await,
            Err(StoreError::Conflict(_))
        ));
    }

    /// Deleting an agent deletes its messages, indexed or not, and a later fold indexes
    /// nothing of them.
    #[tokio::test]
    async fn deleted_agents_leave_no_messages_to_fold() {
        let (store, _dir) = file_store().await;
        let (gone, kept) = (new_session(&store).await, new_session(&store).await);
        store.commit(&turns(gone.id, 1..=2)).await.unwrap();
        store.fold_now().await.unwrap();
        let mut batch = turns(gone.id, 3..=4);
        batch.extend(turns(kept.id, 1..=2));
        store.commit(&batch).await.unwrap();
        assert_eq!(rows(&store).await, (4, 2));

        store.delete_agent(gone.agent_id).await.unwrap();
        assert_eq!(rows(&store).await, (2, 0));
        assert!(store.load_messages(gone.id).await.unwrap().is_empty());
        store.fold_now().await.unwrap();
        assert_eq!(rows(&store).await, (0, 2));
        assert!(store.load_messages(gone.id).await.unwrap().is_empty());
        assert_eq!(message_ids(&store, kept.id).await, [1, 2]);
    }

    #[tokio::test]
    async fn index_folds_when_full_or_old() {
        let (store, _dir) = file_store().await;
        let s = new_session(&store).await;
        let full = message_index::FOLD_ROWS as i64;
        // One commit up to a row short of a fold (several would let the age run out on a
        // slow machine), then the row that makes it due.
        store.commit(&turns(s.id, 1..=full - 1)).await.unwrap();
        assert_eq!(rows(&store).await.0, full - 1, "folded early");
        store.commit(&turns(s.id, full..=full)).await.unwrap();
        assert_eq!(rows(&store).await, (0, full));

        store
            .commit(&turns(s.id, full + 1..=full + 1))
            .await
            .unwrap();
        assert_eq!(rows(&store).await.0, 1);
        tokio::time::sleep(message_index::FOLD_AGE).await;
        store
            .commit(&turns(s.id, full + 2..=full + 2))
            .await
            .unwrap();
        assert_eq!(rows(&store).await.0, 0);
        let ids = message_ids(&store, s.id).await;
        assert_eq!(ids, (1..=full + 2).collect::<Vec<_>>());
    }

    /// Readers racing commits and folds always see a whole history, never shorter than
    /// what was acknowledged before they started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_racing_folds_never_miss_a_message() {
        use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
        use std::sync::Arc;

        let (store, _dir) = file_store().await;
        let store = Arc::new(store);
        let s = new_session(&store).await;
        let acked = Arc::new(AtomicI64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, acked, done) = (store.clone(), acked.clone(), done.clone());
            tokio::spawn(async move {
                for id in 1..=300 {
                    store.commit(&turns(s.id, id..=id)).await.unwrap();
                    acked.store(id, Ordering::SeqCst);
                    if id % 7 == 0 {
                        store.fold_now().await.unwrap();
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut reads = 0;
        while !done.load(Ordering::SeqCst) {
            let floor = acked.load(Ordering::SeqCst);
            let ids = message_ids(&store, s.id).await;
            assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
            assert!(ids.len() as i64 >= floor, "{} < {floor}", ids.len());
            let count = store
                .load_session(s.id)
                .await
                .unwrap()
                .unwrap()
                .message_count;
            assert!(count >= floor, "message_count {count} < {floor}");
            reads += 1;
        }
        writer.await.unwrap();
        assert!(reads > 10, "only {reads} reads raced the writer");
        assert_eq!(message_ids(&store, s.id).await.len(), 300);
    }

    #[tokio::test]
    async fn unmigrated_store_is_unavailable() {
        let store = SqliteStore::open_memory().await.unwrap();
        assert!(matches!(
            store.load_session(Uuid::new_v4()).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    /// A rough single-thread figure for the hot path: 300,000 turns (a session upsert and two
    /// messages each) over 30,000 sessions in batches of 500, timing the commits only. Run
    /// with `cargo test -p parley-engine --release store::sqlite -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn turn_throughput() {
        let (file, _dir) = file_store().await;
        let memory = memory_store().await;
        for (name, store) in [("file", &file), ("memory", &memory)] {
            let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
            let (turns, per_batch, n_sessions) = (300_000, 500, 30_000);
            let mut sessions: Vec<Session> = (0..n_sessions)
                .map(|i| {
                    let mut s = suite::session(t, a, &format!("user-{i}"), 0);
                    // Time-ordered ids keep a busy period's index entries together.
                    s.id = Uuid::now_v7();
                    s
                })
                .collect();
            let batches: Vec<Vec<Write>> = (0..turns / per_batch)
                .map(|b| {
                    (0..per_batch)
                        .flat_map(|i| {
                            let s = &mut sessions[(b * per_batch + i) % n_sessions];
                            let n = s.message_count;
                            let human =
                                suite::message(s.id, n + 1, Role::Human, "where is my order?");
                            let mut ai = suite::message(
                                s.id,
                                n + 2,
                                Role::Ai,
                                "It ships tomorrow; the tracking link follows by e-mail.",
                            );
                            ai.idempotency_key = Some(format!("k{b}-{i}"));
                            s.message_count = n + 2;
                            s.last_activity = Utc::now();
                            [
                                Write::Session(Box::new(s.clone())),
                                Write::Message(Box::new(human)),
                                Write::Message(Box::new(ai)),
                            ]
                        })
                        .collect()
                })
                .collect();
            let started = Instant::now();
            for batch in &batches {
                store.commit(&suite::grouped(batch)).await.unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{name}: {turns} turns in {secs:.2}s, {:.0} turns/s",
                turns as f64 / secs
            );
        }
    }
}

//! Postgres implementation of the store: for several nodes sharing one database.
//!
//! A pool of connections opened lazily, so a node starts (and answers Unavailable) while
//! the database is down and recovers by itself when it comes back. Group commits write each
//! kind of row with one statement per batch: the columns travel as arrays and `UNNEST`
//! turns them back into rows, so the statement text (and the prepared statement cached for
//! it) is the same for every batch size.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use sqlx::encode::IsNull;
use sqlx::error::{BoxDynError, ErrorKind};
use sqlx::migrate::Migrator;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgConnection, PgHasArrayType, PgPool,
    PgPoolOptions, PgRow, PgTypeInfo, PgValueFormat, PgValueRef,
};
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::campaign::{
    CampaignId, CampaignRecord, CampaignStats, CheckedParticipant, CommunicationChange,
    CommunicationId, CommunicationRecord, CommunicationStatus, CustomerId, CustomerRecord,
    FlowRecord, ParticipantEvent, ParticipantId, ParticipantQuery, ParticipantRecord,
    ParticipantStatus, ParticipantStep, StepOutcome, UploadId, UploadRecord, Upserted,
};
use crate::connection::{ConnectionId, ConnectionRecord};
use crate::flow::TriggerType;
use crate::identity::{AuthToken, Role as UserRole, SessionUsage, UsageScope, UserId, UserRecord};
use crate::inbound::InboundMessage;

use super::encoding::{
    apply_change, cancel, contains_pattern, deadline_millis, feedback_str, last_admin,
    map_migrate_err, map_user_write_err, parse_feedback, parse_json, parse_pending, parse_trigger,
    parse_uuid, rfc3339, stats_from_rows, status_strs, to_json, usage_scope, widget_from_row,
    widget_row, Embedded, UPSERT_WIDGET, WIDGET_COLS, WINDOW_NANOS,
};
use super::{
    fold_repeats, AgentChannel, AgentRecord, AgentStatus, Assignee, ChannelSession, Committed,
    ConnectionEvent, ConnectionWrite, ConversationQuery, Epoch, NewConnectionEvent, NewOutboxEvent,
    OutboxEntry, RepeatedConnectionEvent, SessionWrites, StoreError, StoreResult, Tenant, Write,
    MAX_USERS_PER_EMAIL,
};
use crate::model::{
    AgentId, AttachmentMeta, CloseStatus, Feedback, Message, Mode, Role, Session, SessionId,
    TenantId,
};
use crate::widget::WidgetRecord;

/// The schema, oldest first: (version, description, SQL), named like sqlx's
/// `<version>_<description>.sql` files.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "connections",
        include_str!("../../migrations/postgres/0002_connections.sql"),
    ),
    (
        3,
        "agent_channels",
        include_str!("../../migrations/postgres/0003_agent_channels.sql"),
    ),
    (
        4,
        "connector_state",
        include_str!("../../migrations/postgres/0004_connector_state.sql"),
    ),
    (
        5,
        "campaigns",
        include_str!("../../migrations/postgres/0005_campaigns.sql"),
    ),
    (
        6,
        "campaign_progress",
        include_str!("../../migrations/postgres/0006_campaign_progress.sql"),
    ),
    (
        7,
        "identity",
        include_str!("../../migrations/postgres/0007_identity.sql"),
    ),
    (
        8,
        "session_usage",
        include_str!("../../migrations/postgres/0008_session_usage.sql"),
    ),
    (
        9,
        "conversations",
        include_str!("../../migrations/postgres/0009_conversations.sql"),
    ),
    (
        10,
        "user_email_per_tenant",
        include_str!("../../migrations/postgres/0010_user_email_per_tenant.sql"),
    ),
    (
        11,
        "widgets",
        include_str!("../../migrations/postgres/0011_widgets.sql"),
    ),
];

/// Connections per store. Group commits take one at a time; the rest serve reads.
const POOL_SIZE: u32 = 16;

/// How long a call waits for a connection (including opening one) before it answers
/// Unavailable, so a database that is down fails calls quickly instead of hanging them.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The store on a Postgres database.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    async fn widget_where(&self, column: &str, value: &str) -> StoreResult<Option<WidgetRecord>> {
        let sql = format!("SELECT {WIDGET_COLS} FROM widgets WHERE {column} = $1");
        let row: Option<(String, String, String, String, String, String)> = sqlx::query_as(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| widget_from_row([&r.0, &r.1, &r.2, &r.3, &r.4, &r.5]))
            .transpose()
    }

    /// A store on the database at `url` (`postgres://user:password@host:port/database`).
    /// Connects lazily: this succeeds while the database is down, and calls answer
    /// Unavailable until it is back. Async because the pool starts its maintenance task on
    /// the current Tokio runtime. Call [`Store::migrate`](super::Store::migrate) before use.
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad Postgres URL: {e}")))?
            .application_name("parley");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Pings an idle connection before handing it out: after a restart or failover,
            // every pooled connection is dead, and without the ping each would fail one
            // call before the pool noticed.
            .test_before_acquire(true)
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }

    /// Waits for running queries and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs an UPDATE meant for exactly one existing row; no such row is a Conflict.
    async fn update_one<'q>(
        &self,
        query: sqlx::query::Query<'q, Postgres, PgArguments>,
        missing: impl FnOnce() -> String,
    ) -> StoreResult<()> {
        let done = query.execute(&self.pool).await.map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(missing()));
        }
        Ok(())
    }
}

/// A uuid in Postgres' native binary form. sqlx's own impl needs its `uuid` feature, which
/// this workspace does not enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PgUuid(Uuid);

/// The built-in OIDs of `uuid` and `uuid[]`, fixed in every Postgres.
const UUID_OID: Oid = Oid(2950);
const UUID_ARRAY_OID: Oid = Oid(2951);

impl sqlx::Type<Postgres> for PgUuid {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(UUID_OID)
    }
}

impl PgHasArrayType for PgUuid {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(UUID_ARRAY_OID)
    }
}

impl sqlx::Encode<'_, Postgres> for PgUuid {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

impl sqlx::Decode<'_, Postgres> for PgUuid {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let id = match value.format() {
            PgValueFormat::Binary => Uuid::from_slice(value.as_bytes()?)?,
            PgValueFormat::Text => value.as_str()?.parse()?,
        };
        Ok(PgUuid(id))
    }
}

/// Sorts sqlx errors into the store's three kinds.
fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            let msg = format!("{} ({code})", db.message());
            match db.kind() {
                kind @ (ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation) => super::encoding::db_conflict(kind, false, &msg),
                // By SQLSTATE class.
                _ => match code.get(..2) {
                    // Integrity constraint violations; data exceptions: a value Postgres
                    // cannot hold, such as a NUL character in text, is refused like a
                    // duplicate would be.
                    Some(class @ ("23" | "22")) => {
                        super::encoding::db_conflict(ErrorKind::Other, class == "22", &msg)
                    }
                    // Program limits: a value too large for an index row, for one.
                    Some("54") => StoreError::Refused(msg),
                    // data_corrupted, index_corrupted
                    _ if code == "XX001" || code == "XX002" => StoreError::Corrupt(msg),
                    // Connection, resource, shutdown, deadlock and serialization failures,
                    // and a schema that is not there yet: try again later.
                    _ => StoreError::Unavailable(msg),
                },
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

/// A timestamp as unix nanoseconds (see the schema for why). Instants outside 1677-2262
/// do not fit and are refused.
fn ts(t: DateTime<Utc>) -> StoreResult<i64> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| StoreError::Conflict(format!("timestamp {t} is out of range")))
}

fn from_ts(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

fn col<'r, T>(row: &'r PgRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name).map_err(map_err)
}

fn id_col(row: &PgRow, name: &str) -> StoreResult<Uuid> {
    col::<PgUuid>(row, name).map(|id| id.0)
}

fn ts_col(row: &PgRow, name: &str) -> StoreResult<DateTime<Utc>> {
    col(row, name).map(from_ts)
}

/// Upserts the batch's session rows. tenant_id, agent_id and created_at never change, and
/// the epoch is set when the row is created and raised only by claims, so the update leaves
/// them alone.
const UPSERT_SESSIONS: &str = "\
    INSERT INTO sessions (id, tenant_id, agent_id, user_id, ext_type, state, next_deadline, \
                          created_at, updated_at, data, epoch, closed_at, mode, assignee) \
    SELECT id, tenant_id, agent_id, user_id, ext_type, state, next_deadline, created_at, $14, \
           data, epoch, closed_at, mode, assignee \
    FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
                $7::int8[], $8::int8[], $9::text[], $10::int8[], $11::int8[], $12::text[], \
                $13::uuid[]) \
         AS r(id, tenant_id, agent_id, user_id, ext_type, state, next_deadline, created_at, \
              data, epoch, closed_at, mode, assignee) \
    ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, ext_type = excluded.ext_type, \
        state = excluded.state, next_deadline = excluded.next_deadline, \
        updated_at = excluded.updated_at, data = excluded.data, \
        closed_at = excluded.closed_at, mode = excluded.mode, assignee = excluded.assignee";

/// The tenant's sessions (`sessions`), refused starts (`refused`) and billable windows
/// (`billable`) in [$2, $3), from its sessions that started in [$5, $3); $4 is now, $6 the
/// window in nanoseconds, $7 the state of a refused start.
///
/// A session runs from s to e: its close, now while it is open ("active", as
/// Session::status_str says), or its last write if it closed without closed_at. Its
/// windows start at s + k·$6 for k ≥ 0 while that is before e, and the first always; of
/// those, the ones that start before $3 and not before $2 are billable. `(t - s - 1) / $6 + 1`
/// counts the windows that start before t > s (exact in bigint nanoseconds).
const SESSION_USAGE: &str = "\
    SELECT count(*) FILTER (WHERE NOT refused AND s >= $2) AS sessions, \
           count(*) FILTER (WHERE refused AND s >= $2) AS refused, \
           coalesce(sum(GREATEST(0, \
               LEAST(CASE WHEN e > s THEN (e - s - 1) / $6 + 1 ELSE 1 END, \
                     ($3 - s - 1) / $6 + 1) \
               - CASE WHEN $2 > s THEN ($2 - s - 1) / $6 + 1 ELSE 0 END)) \
             FILTER (WHERE NOT refused), 0)::int8 AS billable \
    FROM (SELECT created_at AS s, state = $7 AS refused, \
                 CASE WHEN state = 'active' THEN $4 ELSE coalesce(closed_at, updated_at) END AS e \
          FROM sessions WHERE tenant_id = $1 AND created_at >= $5 AND created_at < $3) AS r";

/// A plain INSERT: a message id that exists already fails the batch (history is
/// append-only).
const INSERT_MESSAGES: &str = "\
    INSERT INTO messages (session_id, id, role, text, ts, attachments, metadata, feedback, \
                          idempotency_key) \
    SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::int8[], \
                         $6::text[], $7::text[], $8::text[], $9::text[])";

const INSERT_ATTACHMENTS: &str = "\
    INSERT INTO attachments (id, session_id, filename, content_type, size, bytes) \
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[], \
                         $6::bytea[])";

/// A session row, serialised before the transaction starts.
struct SessionRow<'a> {
    session: &'a Session,
    epoch: Epoch,
    next_deadline: Option<i64>,
    created_at: i64,
    closed_at: Option<i64>,
    data: String,
}

impl<'a> SessionRow<'a> {
    fn new(session: &'a Session, epoch: Epoch) -> StoreResult<Self> {
        Ok(SessionRow {
            session,
            epoch,
            next_deadline: session.next_deadline().map(deadline_millis),
            created_at: ts(session.created_at)?,
            closed_at: session.closed_at.map(ts).transpose()?,
            data: to_json(session, "session")?,
        })
    }
}

struct MessageRow<'a> {
    message: &'a Message,
    ts: i64,
    attachments: Option<String>,
    metadata: Option<String>,
}

impl<'a> MessageRow<'a> {
    fn new(message: &'a Message) -> StoreResult<Self> {
        Ok(MessageRow {
            message,
            ts: ts(message.timestamp)?,
            // Empty lists and null metadata (the common case) are stored as NULL.
            attachments: (!message.attachments.is_empty())
                .then(|| to_json(&message.attachments, "attachments"))
                .transpose()?,
            metadata: (!message.metadata.is_null())
                .then(|| to_json(&message.metadata, "metadata"))
                .transpose()?,
        })
    }
}

struct AttachmentRow<'a> {
    session_id: SessionId,
    meta: &'a AttachmentMeta,
    size: i64,
    bytes: &'a [u8],
}

/// One column of a multi-row statement, bound as an array for `UNNEST`.
fn column<'r, T, U>(rows: &'r [T], f: impl Fn(&'r T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// One session group's rows, serialised before the transaction starts so that the
/// transaction (and the row locks it holds) lasts only as long as the statements.
struct GroupRows<'a> {
    /// The last version of each session the group writes.
    sessions: Vec<SessionRow<'a>>,
    messages: Vec<MessageRow<'a>>,
    attachments: Vec<AttachmentRow<'a>>,
}

impl<'a> GroupRows<'a> {
    fn new(group: &'a SessionWrites) -> StoreResult<Self> {
        let mut rows = GroupRows {
            sessions: Vec::new(),
            messages: Vec::new(),
            attachments: Vec::new(),
        };
        let mut last: HashMap<SessionId, &Session> = HashMap::new();
        for write in &group.writes {
            match write {
                Write::Session(s) => {
                    last.insert(s.id, s);
                }
                Write::Message(m) => rows.messages.push(MessageRow::new(m)?),
                Write::Attachment {
                    session_id,
                    meta,
                    bytes,
                } => rows.attachments.push(AttachmentRow {
                    session_id: *session_id,
                    meta,
                    size: i64::try_from(meta.size).map_err(|_| {
                        StoreError::Corrupt(format!("attachment size {}", meta.size))
                    })?,
                    bytes,
                }),
            }
        }
        rows.sessions = last
            .into_values()
            .map(|s| SessionRow::new(s, group.epoch))
            .collect::<StoreResult<_>>()?;
        Ok(rows)
    }
}

/// Locks the batch's existing session rows (in id order, so concurrent batches cannot
/// deadlock on them) and answers their stored epochs. A claim is an UPDATE of the same row,
/// so it waits for this transaction, or this lock waits for the claim and then reads the
/// raised epoch: no claim can slip in between the check and the writes.
///
/// FOR NO KEY UPDATE rather than FOR SHARE: the batch goes on to update these rows, and two
/// batches holding shared locks on one row would deadlock upgrading them.
async fn lock_epochs(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    sorted_ids: Vec<PgUuid>,
) -> StoreResult<HashMap<SessionId, Epoch>> {
    let rows = sqlx::query(
        "SELECT id, epoch FROM sessions WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(sorted_ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|row| Ok((id_col(row, "id")?, col(row, "epoch")?)))
        .collect()
}

const TENANT_COLS: &str = "id, name, api_key_hash, created_at, settings";

fn tenant_from_row(row: &PgRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: id_col(row, "id")?,
        name: col(row, "name")?,
        api_key_hash: col(row, "api_key_hash")?,
        created_at: ts_col(row, "created_at")?,
        settings: parse_json(col(row, "settings")?, "tenant settings")?,
    })
}

/// Conflict when the write takes the role of its tenant's last admin from the stored user
/// `id`: the user is an admin now and, after the write, is an admin of `admin_of` (None:
/// of no tenant).
///
/// Locks the rows of the user's tenant first (in id order, so concurrent writers cannot
/// deadlock on them) and judges by the locked rows: where a lock waited for another
/// writer, Postgres reads the row as that writer committed it. So of two admins demoted or
/// deleted at once, the second waits for the first and then sees that it is the last one.
/// An admin inserted meanwhile may be missed, which errs only towards refusing.
async fn refuse_last_admin(
    conn: &mut PgConnection,
    id: UserId,
    admin_of: Option<TenantId>,
) -> StoreResult<()> {
    let rows: Vec<(PgUuid, PgUuid, String)> = sqlx::query_as(
        "SELECT id, tenant_id, role FROM users \
         WHERE tenant_id = (SELECT tenant_id FROM users WHERE id = $1) ORDER BY id FOR UPDATE",
    )
    .bind(PgUuid(id))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let admin = UserRole::Admin.as_str();
    let Some((_, tenant, role)) = rows.iter().find(|(user, _, _)| user.0 == id) else {
        return Ok(());
    };
    if role != admin || admin_of == Some(tenant.0) {
        return Ok(());
    }
    if !rows
        .iter()
        .any(|(user, _, role)| user.0 != id && role == admin)
    {
        return Err(last_admin(id));
    }
    Ok(())
}

const AGENT_COLS: &str = "id, tenant_id, name, status, status_reason, current_version, \
                          token_hash, created_at, updated_at";

fn agent_from_row(row: &PgRow) -> StoreResult<AgentRecord> {
    let status: &str = col(row, "status")?;
    Ok(AgentRecord {
        id: id_col(row, "id")?,
        tenant_id: id_col(row, "tenant_id")?,
        name: col(row, "name")?,
        status: AgentStatus::parse(status)
            .ok_or_else(|| StoreError::Corrupt(format!("bad agent status {status:?}")))?,
        status_reason: col(row, "status_reason")?,
        current_version: col(row, "current_version")?,
        token_hash: col(row, "token_hash")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

const MESSAGE_COLS: &str =
    "session_id, id, role, text, ts, attachments, metadata, feedback, idempotency_key";

fn message_from_row(row: &PgRow) -> StoreResult<Message> {
    let role: &str = col(row, "role")?;
    let attachments: Option<&str> = col(row, "attachments")?;
    let metadata: Option<&str> = col(row, "metadata")?;
    Ok(Message {
        id: col(row, "id")?,
        session_id: id_col(row, "session_id")?,
        role: Role::parse(role).ok_or_else(|| StoreError::Corrupt(format!("bad role {role:?}")))?,
        text: col(row, "text")?,
        timestamp: ts_col(row, "ts")?,
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

fn session_from_row(row: &PgRow) -> StoreResult<Session> {
    parse_json(col(row, "data")?, "session")
}

/// A session row (named `s`) and what brings it up to date from its log: the newest message
/// and the newest customer message (the row may be older than its last turns, see
/// Store::load_session).
const FRESH_SESSION_COLS: &str = "s.data, \
    (SELECT id FROM messages WHERE session_id = s.id ORDER BY id DESC LIMIT 1) AS last_id, \
    (SELECT ts FROM messages WHERE session_id = s.id AND role = 'HUMAN' \
     ORDER BY id DESC LIMIT 1) AS last_human_ts";

/// A session selected with [`FRESH_SESSION_COLS`], its message count and last activity
/// brought up to date.
fn fresh_session_from_row(row: &PgRow) -> StoreResult<Session> {
    let mut s = session_from_row(row)?;
    let last_id: Option<i64> = col(row, "last_id")?;
    if let Some(id) = last_id.filter(|&id| id > s.message_count) {
        s.message_count = id;
    }
    let last_human: Option<i64> = col(row, "last_human_ts")?;
    if let Some(t) = last_human.map(from_ts) {
        s.last_activity = s.last_activity.max(t);
    }
    Ok(s)
}

/// Appends event lines in order and drops all but each touched connection's newest `keep`.
/// Connections' writes in the batch's transaction: deliveries first (in one statement),
/// then the log lines (those of new deliveries among them), repeated lines and done
/// marks. Answers one flag per write.
async fn write_connections(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    writes: &[ConnectionWrite],
) -> StoreResult<Vec<bool>> {
    let mut applied = vec![true; writes.len()];
    // A delivery repeated within the batch is a duplicate without asking.
    let mut first: HashMap<(ConnectionId, &str), usize> = HashMap::new();
    let mut rows: Vec<(String, &str, i64, String)> = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let ConnectionWrite::Inbox {
            connection,
            message,
            at,
            ..
        } = w
        else {
            continue;
        };
        match first.entry((*connection, message.dedup_id.as_str())) {
            Entry::Occupied(_) => applied[i] = false,
            Entry::Vacant(v) => {
                v.insert(i);
                rows.push((
                    connection.to_string(),
                    &message.dedup_id,
                    ts(*at)?,
                    to_json(message.as_ref(), "inbound message")?,
                ));
            }
        }
    }
    if !rows.is_empty() {
        let inserted: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO connector_inbox (connection_id, dedup_id, received_at, message) \
             SELECT c, d, r, m FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[]) \
             WITH ORDINALITY AS t(c, d, r, m, n) ORDER BY n \
             ON CONFLICT (connection_id, dedup_id) DO NOTHING RETURNING connection_id, dedup_id",
        )
        .bind(column(&rows, |r| r.0.as_str()))
        .bind(column(&rows, |r| r.1))
        .bind(column(&rows, |r| r.2))
        .bind(column(&rows, |r| r.3.as_str()))
        .fetch_all(&mut **tx)
        .await
        .map_err(map_err)?;
        let inserted: HashSet<(String, String)> = inserted.into_iter().collect();
        for (&(c, d), &i) in &first {
            applied[i] = inserted.contains(&(c.to_string(), d.to_string()));
        }
    }
    let mut lines = Vec::new();
    for (w, &fresh) in writes.iter().zip(&applied) {
        match w {
            ConnectionWrite::Inbox { line: Some(l), .. } if fresh => lines.push((&l.event, l.keep)),
            ConnectionWrite::Line(l) => lines.push((&l.event, l.keep)),
            _ => {}
        }
    }
    append_lines(tx, &lines).await?;
    for (event, since, keep) in fold_repeats(writes) {
        count_repeated(tx, &event, since, keep).await?;
    }
    let mut done: Vec<(String, &str)> = writes
        .iter()
        .filter_map(|w| match w {
            ConnectionWrite::Done {
                connection,
                dedup_id,
            } => Some((connection.to_string(), dedup_id.as_str())),
            _ => None,
        })
        .collect();
    if !done.is_empty() {
        // In key order, the order other nodes' batches lock them in.
        done.sort_unstable();
        sqlx::query(
            "UPDATE connector_inbox i SET done = true \
             FROM UNNEST($1::text[], $2::text[]) AS d(c, id) \
             WHERE i.connection_id = d.c AND i.dedup_id = d.id",
        )
        .bind(column(&done, |r| r.0.as_str()))
        .bind(column(&done, |r| r.1))
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    }
    Ok(applied)
}

/// Appends lines in order and trims each connection's log to the fewest lines any of them
/// keeps.
async fn append_lines(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    lines: &[(&NewConnectionEvent, u32)],
) -> StoreResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let rows = lines
        .iter()
        .map(|(e, _)| {
            Ok((
                e.connection_id.to_string(),
                ts(e.at)?,
                e.kind.as_str(),
                to_json(&e.detail, "event detail")?,
            ))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    sqlx::query(
        "INSERT INTO connection_events (connection_id, at, kind, detail) \
         SELECT c, a, k, d FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[]) \
         WITH ORDINALITY AS l(c, a, k, d, n) ORDER BY n",
    )
    .bind(column(&rows, |r| r.0.as_str()))
    .bind(column(&rows, |r| r.1))
    .bind(column(&rows, |r| r.2))
    .bind(column(&rows, |r| r.3.as_str()))
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    let mut touched: Vec<(String, i64)> = Vec::new();
    for (e, keep) in lines {
        let c = e.connection_id.to_string();
        match touched.iter_mut().find(|(t, _)| *t == c) {
            Some((_, k)) => *k = (*k).min(i64::from(*keep)),
            None => touched.push((c, i64::from(*keep))),
        }
    }
    // Everything from the (keep+1)-th newest line on; with fewer lines the bound is NULL
    // and nothing goes. Lines another node's batch is trimming are left to it (SKIP
    // LOCKED): two nodes writing one connection's log never wait on each other's commit.
    sqlx::query(
        "DELETE FROM connection_events WHERE id IN (SELECT e.id FROM connection_events e \
         JOIN (SELECT t.c, (SELECT id FROM connection_events \
         WHERE connection_id = t.c ORDER BY id DESC LIMIT 1 OFFSET t.k) AS bound \
         FROM UNNEST($1::text[], $2::bigint[]) AS t(c, k)) b \
         ON e.connection_id = b.c AND e.id <= b.bound FOR UPDATE OF e SKIP LOCKED)",
    )
    .bind(column(&touched, |t| t.0.as_str()))
    .bind(column(&touched, |t| t.1))
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Counts occurrences into the connection's newest line of their kind if it started at or
/// after `since`, else appends a line for them.
async fn count_repeated(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    event: &RepeatedConnectionEvent,
    since: DateTime<Utc>,
    keep: u32,
) -> StoreResult<()> {
    // FOR UPDATE: nodes counting into the same line one after the other lose no count.
    let newest = sqlx::query(
        "SELECT id, connection_id, at, kind, detail FROM connection_events \
         WHERE connection_id = $1 AND kind = $2 ORDER BY id DESC LIMIT 1 FOR UPDATE",
    )
    .bind(event.connection_id.to_string())
    .bind(&event.kind)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_err)?;
    let joined = newest
        .as_ref()
        .map(event_from_row)
        .transpose()?
        .filter(|line| line.at >= since);
    match joined {
        Some(line) => {
            sqlx::query("UPDATE connection_events SET detail = $1 WHERE id = $2")
                .bind(to_json(&event.detail(Some(&line.detail)), "event detail")?)
                .bind(line.id)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            Ok(())
        }
        None => {
            let line = event.new_line();
            Box::pin(append_lines(tx, &[(&line, keep)])).await
        }
    }
}

fn event_from_row(row: &PgRow) -> StoreResult<ConnectionEvent> {
    Ok(ConnectionEvent {
        id: col(row, "id")?,
        connection_id: parse_uuid(col(row, "connection_id")?)?,
        at: ts_col(row, "at")?,
        kind: col(row, "kind")?,
        detail: parse_json(col(row, "detail")?, "event detail")?,
    })
}

const OUTBOX_COLS: &str = "id, connection_id, msg_id, event_type, body, attempts, \
                           next_attempt_at, last_error, created_at";

fn outbox_from_row(row: &PgRow) -> StoreResult<OutboxEntry> {
    let attempts: i64 = col(row, "attempts")?;
    Ok(OutboxEntry {
        id: col(row, "id")?,
        connection_id: parse_uuid(col(row, "connection_id")?)?,
        msg_id: col(row, "msg_id")?,
        event_type: col(row, "event_type")?,
        body: col(row, "body")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("outbox attempts {attempts}")))?,
        next_attempt_at: ts_col(row, "next_attempt_at")?,
        last_error: col(row, "last_error")?,
        created_at: ts_col(row, "created_at")?,
    })
}

const CUSTOMER_COLS: &str = "id, tenant_id, external_id, email, phone, \
                             attributes::text AS attributes, created_at, updated_at";

fn customer_from_row(row: &PgRow) -> StoreResult<CustomerRecord> {
    Ok(CustomerRecord {
        id: id_col(row, "id")?,
        tenant_id: id_col(row, "tenant_id")?,
        external_id: col(row, "external_id")?,
        email: col(row, "email")?,
        phone: col(row, "phone")?,
        attributes: parse_json(col(row, "attributes")?, "customer attributes")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

const PARTICIPANT_COLS: &str = "p.id, p.campaign_id, p.customer_id, p.object_id, \
                                p.attributes::text AS attributes, p.timezone, p.upload_id, \
                                p.pending, p.result::text AS result, p.result_at, \
                                p.created_at, p.updated_at";

fn participant_from_row(row: &PgRow) -> StoreResult<ParticipantRecord> {
    let object_id: String = col(row, "object_id")?;
    let upload_id: Option<PgUuid> = col(row, "upload_id")?;
    let result_at: Option<i64> = col(row, "result_at")?;
    Ok(ParticipantRecord {
        id: id_col(row, "id")?,
        campaign_id: id_col(row, "campaign_id")?,
        customer_id: id_col(row, "customer_id")?,
        // Stored as '' for none (see the schema).
        object_id: (!object_id.is_empty()).then_some(object_id),
        attributes: parse_json(col(row, "attributes")?, "participant attributes")?,
        timezone: col(row, "timezone")?,
        upload_id: upload_id.map(|u| u.0),
        pending: parse_pending(col(row, "pending")?)?,
        result: parse_json(col(row, "result")?, "participant result")?,
        result_at: result_at.map(from_ts),
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

/// Locks out what would race an upsert: the campaign row is key-share-locked, so a
/// delete_campaign waits for the batch (and a batch after it finds no campaign) while
/// put_campaign, which changes no key, does not; and a transaction-scoped advisory lock on
/// the tenant serialises the tenant's upserts, since two batches creating the same customer
/// at once would otherwise both create it (the identity columns are not unique). No row
/// when the tenant has no such campaign.
const LOCK_FOR_UPSERT: &str = "\
    SELECT pg_advisory_xact_lock(hashtextextended('parley.customers.' || $1::text, 0)) \
    FROM campaigns WHERE id = $2 AND tenant_id = $1 FOR KEY SHARE";

/// The customer each key names, in input order: the tenant's oldest profile whose column of
/// the key's kind holds the key's value. Each input fills only the array of its key's
/// kind; a NULL finds nothing, so COALESCE picks the one lookup that applies.
const LOOKUP_CUSTOMERS: &str = "\
    SELECT COALESCE( \
        (SELECT c.id FROM customers c WHERE c.tenant_id = $1 AND c.external_id = k.external_id \
         ORDER BY c.created_at, c.id LIMIT 1), \
        (SELECT c.id FROM customers c WHERE c.tenant_id = $1 AND c.email = k.email \
         ORDER BY c.created_at, c.id LIMIT 1), \
        (SELECT c.id FROM customers c WHERE c.tenant_id = $1 AND c.phone = k.phone \
         ORDER BY c.created_at, c.id LIMIT 1)) AS id \
    FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY \
         AS k(external_id, email, phone, n) \
    ORDER BY k.n";

/// Creates a round's new customers. A plain INSERT: their ids are fresh, so nothing can
/// conflict, and an upsert's speculative insertion would cost for nothing.
const INSERT_CUSTOMERS: &str = "\
    INSERT INTO customers (id, tenant_id, attributes, created_at, updated_at) \
    SELECT r.id, $1, r.attributes::jsonb, $2, $2 \
    FROM UNNEST($3::uuid[], $4::text[]) AS r(id, attributes)";

/// Merges the given attributes into a round's found customers (`||`: the right side wins,
/// so given values replace and the others stay); the generated external_id/email/phone
/// columns follow. A round names each customer once.
const UPDATE_CUSTOMERS: &str = "\
    UPDATE customers c SET attributes = c.attributes || r.attributes::jsonb, updated_at = $1 \
    FROM UNNEST($2::uuid[], $3::text[]) AS r(id, attributes) \
    WHERE c.id = r.id";

/// The participant columns both participant statements take as arrays, after the
/// campaign ($1), the upload ($2) and the time ($3). A new participant is pending created.
const PARTICIPANT_ROWS: &str = "\
    SELECT r.id, $1, r.customer_id, r.object_id, r.attributes::jsonb, r.timezone, $2, \
           'created', $3, $3 \
    FROM UNNEST($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[]) \
         AS r(id, customer_id, object_id, attributes, timezone)";

/// Creates the participants of a round's new customers, which cannot have any yet.
static INSERT_PARTICIPANTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO participants (id, campaign_id, customer_id, object_id, attributes, \
         timezone, upload_id, pending, created_at, updated_at) {PARTICIPANT_ROWS}"
    )
});

/// Creates or merges the participants of a round's found customers; a zone given replaces
/// the stored one, none keeps it. An existing participant is left pending updated unless
/// its created trigger has not run yet (that run sees the new attributes anyway). Answers
/// each row's id by customer (a round names each customer once): an existing participant
/// answers its own id, a new one the id proposed for it.
static UPSERT_PARTICIPANTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO participants (id, campaign_id, customer_id, object_id, attributes, \
         timezone, upload_id, pending, created_at, updated_at) {PARTICIPANT_ROWS} \
         ON CONFLICT (campaign_id, customer_id, object_id) DO UPDATE SET \
             attributes = participants.attributes || excluded.attributes, \
             timezone = COALESCE(excluded.timezone, participants.timezone), \
             upload_id = excluded.upload_id, updated_at = excluded.updated_at, \
             pending = CASE participants.pending WHEN 'created' THEN 'created' \
                       ELSE 'updated' END \
         RETURNING id, customer_id"
    )
});

/// One input of an upsert batch, serialised once however many rounds it waits.
struct UpsertRow<'a> {
    input: &'a CheckedParticipant,
    customer: String,
    participant: String,
    /// The (column, value) pairs of the identity columns this input writes to its customer.
    identities: Vec<(&'static str, String)>,
}

impl<'a> UpsertRow<'a> {
    fn new(input: &'a CheckedParticipant) -> StoreResult<Self> {
        let identities = ["external_id", "email", "phone"]
            .into_iter()
            .filter_map(|name| {
                // As the generated column reads it (`->>`): text as is, anything else as JSON.
                let v = input.customer.get(name)?;
                Some((
                    name,
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                ))
            })
            .collect();
        Ok(UpsertRow {
            input,
            customer: to_json(&input.customer, "customer attributes")?,
            participant: to_json(&input.participant, "participant attributes")?,
            identities,
        })
    }

    /// The (column, value) pair its customer is looked up by.
    fn key(&self) -> (&'static str, &str) {
        (self.input.key.kind(), self.input.key.value())
    }
}

/// One input of a round, with the ids it is written under.
struct Planned {
    /// Its position in the batch.
    input: usize,
    customer: CustomerId,
    /// Whether the round creates the customer (the lookup found none).
    new_customer: bool,
    /// The id the participant gets if it is new.
    proposed: ParticipantId,
}

/// A participant statement with the rows of `round` bound.
fn bind_participants<'q>(
    sql: &'q str,
    campaign: CampaignId,
    upload: Option<UploadId>,
    at: i64,
    round: &[&Planned],
    rows: &'q [UpsertRow<'q>],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(PgUuid(campaign))
        .bind(upload.map(PgUuid))
        .bind(at)
        .bind(column(round, |p| PgUuid(p.proposed)))
        .bind(column(round, |p| PgUuid(p.customer)))
        .bind(column(round, |p| {
            rows[p.input].input.object_id.as_deref().unwrap_or("")
        }))
        .bind(column(round, |p| rows[p.input].participant.as_str()))
        .bind(column(round, |p| {
            rows[p.input].input.timezone.map(|tz| tz.name())
        }))
}

/// Splits the pending inputs (in order, each with the customer its lookup found) into the
/// round that can be written with set-based statements now and those that must wait.
///
/// Writing a round at once gives what writing its inputs one by one would only if none of
/// them sees another's effect. So an input waits when an earlier input of this pass (in the
/// round or waiting) touches the same customer, or writes an identity value that its lookup
/// searches for (it would find that customer by then), or when it writes a value that the
/// lookup of an earlier waiting input searches for (which must not see it yet). Once one
/// input waits, everything after it that interacts with it waits too, so order is kept
/// wherever it matters. The first pending input never waits, so every round progresses.
fn split_round(
    rows: &[UpsertRow<'_>],
    pending: &[usize],
    found: &[Option<CustomerId>],
) -> (Vec<(usize, Option<CustomerId>)>, Vec<usize>) {
    let mut round = Vec::with_capacity(pending.len());
    let mut waiting = Vec::new();
    let mut customers: HashSet<CustomerId> = HashSet::new();
    let mut written: HashSet<(&str, &str)> = HashSet::new();
    let mut waiting_keys: HashSet<(&str, &str)> = HashSet::new();
    for (&i, &customer) in pending.iter().zip(found) {
        let row = &rows[i];
        let key = row.key();
        let waits = customer.is_some_and(|c| customers.contains(&c))
            || written.contains(&key)
            || row
                .identities
                .iter()
                .any(|(name, value)| waiting_keys.contains(&(*name, value.as_str())));
        customers.extend(customer);
        written.extend(row.identities.iter().map(|(n, v)| (*n, v.as_str())));
        if waits {
            waiting_keys.insert(key);
            waiting.push(i);
        } else {
            round.push((i, customer));
        }
    }
    (round, waiting)
}

/// The FROM and WHERE clauses of a participants listing. The customer filters find the
/// tenant's matching profiles first (by their identity indexes), then the campaign's
/// participants of those.
fn push_participant_filters(
    qb: &mut QueryBuilder<'_, Postgres>,
    campaign: CampaignId,
    q: &ParticipantQuery,
) -> StoreResult<()> {
    qb.push(" FROM participants p WHERE p.campaign_id = ")
        .push_bind(PgUuid(campaign));
    let customer_filters: Vec<(&str, &String)> = [
        ("external_id", &q.external_id),
        ("email", &q.email),
        ("phone", &q.phone),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.as_ref().map(|v| (column, v)))
    .collect();
    if !customer_filters.is_empty() {
        qb.push(
            " AND p.customer_id IN (SELECT c.id FROM customers c WHERE c.tenant_id = \
             (SELECT tenant_id FROM campaigns WHERE id = ",
        )
        .push_bind(PgUuid(campaign))
        .push(")");
        for (column, value) in customer_filters {
            qb.push(format!(" AND c.{column} = "))
                .push_bind(value.clone());
        }
        qb.push(")");
    }
    if let Some(u) = q.upload_id {
        qb.push(" AND p.upload_id = ").push_bind(PgUuid(u));
    }
    if let Some(t) = q.created_from {
        qb.push(" AND p.created_at >= ").push_bind(ts(t)?);
    }
    if let Some(t) = q.created_to {
        qb.push(" AND p.created_at < ").push_bind(ts(t)?);
    }
    if let Some(name) = &q.name {
        let pattern = contains_pattern(name);
        qb.push(" AND (p.attributes ->> 'name' ILIKE ")
            .push_bind(pattern.clone())
            .push(
                " OR EXISTS (SELECT 1 FROM customers c WHERE c.id = p.customer_id \
                 AND c.attributes ->> 'name' ILIKE ",
            )
            .push_bind(pattern)
            .push("))");
    }
    if let Some(status) = q.status {
        let open = " EXISTS (SELECT 1 FROM communications m WHERE m.participant_id = p.id \
                    AND m.status = ANY(";
        match status {
            ParticipantStatus::Pending => {
                qb.push(" AND p.pending IS NOT NULL");
            }
            ParticipantStatus::Active => {
                qb.push(" AND p.pending IS NULL AND")
                    .push(open)
                    .push_bind(status_strs(&CommunicationStatus::OPEN))
                    .push("))");
            }
            ParticipantStatus::Idle => {
                qb.push(" AND p.pending IS NULL AND NOT")
                    .push(open)
                    .push_bind(status_strs(&CommunicationStatus::OPEN))
                    .push("))");
            }
        }
    }
    Ok(())
}

/// A page bound as Postgres takes it; beyond `i64::MAX` is as good as no bound.
/// The FROM and WHERE clauses of a conversations listing.
fn push_conversation_filters(
    qb: &mut QueryBuilder<'_, Postgres>,
    tenant: TenantId,
    q: &ConversationQuery,
) {
    qb.push(" FROM sessions WHERE tenant_id = ")
        .push_bind(PgUuid(tenant));
    if let Some(mode) = q.mode {
        qb.push(" AND mode = ").push_bind(mode.as_str());
        if mode != Mode::Regular {
            // The inbox index's condition: a generic plan, made without the bound mode,
            // uses a partial index only for a query that states it.
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
            qb.push(" AND assignee = ").push_bind(PgUuid(user));
        }
        None => {}
    }
}

fn page_bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} count {n}")))
}

/// A step's attribute patch as the PATCH statements take it: the values to set, as a JSON
/// object, and the names that `null` removes.
fn split_patch(patch: &Map<String, Value>) -> StoreResult<(String, Vec<&str>)> {
    let set: Map<String, Value> = patch
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let removed = patch
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    Ok((to_json(&set, "attribute patch")?, removed))
}

/// Merges a patch into the stored attributes in place (`||`: given values replace, then
/// the removed names go), so keys an upload wrote since the flow read the row stay. Given
/// the id ($1), the values ($2), the removed names ($3) and the time ($4).
const PATCH_PARTICIPANT: &str = "\
    UPDATE participants SET attributes = (attributes || $2::jsonb) - $3::text[], \
        updated_at = $4 \
    WHERE id = $1";

/// As [`PATCH_PARTICIPANT`]; the generated identity columns follow.
const PATCH_CUSTOMER: &str = "\
    UPDATE customers SET attributes = (attributes || $2::jsonb) - $3::text[], updated_at = $4 \
    WHERE id = $1";

async fn patch_row(
    conn: &mut PgConnection,
    sql: &str,
    id: Uuid,
    patch: &Map<String, Value>,
    at: i64,
) -> StoreResult<()> {
    if patch.is_empty() {
        return Ok(());
    }
    let (set, removed) = split_patch(patch)?;
    sqlx::query(sql)
        .bind(PgUuid(id))
        .bind(set)
        .bind(removed)
        .bind(at)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

const INSERT_COMMUNICATIONS: &str = "\
    INSERT INTO communications (id, tenant_id, campaign_id, participant_id, status, channel, \
                                due_at, session_id, connection_id, message_id, created_at, data) \
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], \
                         $6::text[], $7::int8[], $8::uuid[], $9::uuid[], $10::text[], \
                         $11::int8[], $12::text[])";

/// Rewrites a communication's changeable columns and its record.
const UPDATE_COMMUNICATION: &str = "\
    UPDATE communications SET status = $2, due_at = $3, session_id = $4, message_id = $5, \
        data = $6 \
    WHERE id = $1";

/// Cancels communications (status $2); each row carries its new record.
const CANCEL_COMMUNICATIONS: &str = "\
    UPDATE communications c SET status = $2, data = r.data \
    FROM UNNEST($1::uuid[], $3::text[]) AS r(id, data) \
    WHERE c.id = r.id";

/// A communication's columns, serialised before the transaction starts.
struct CommunicationRow<'a> {
    record: &'a CommunicationRecord,
    due_at: i64,
    created_at: i64,
    data: String,
}

impl<'a> CommunicationRow<'a> {
    fn new(record: &'a CommunicationRecord) -> StoreResult<Self> {
        Ok(CommunicationRow {
            record,
            due_at: ts(record.due_at())?,
            created_at: ts(record.created_at)?,
            data: to_json(record, "communication")?,
        })
    }
}

fn communication_from_data(data: &str) -> StoreResult<CommunicationRecord> {
    parse_json(data, "communication")
}

const PARTICIPANT_EVENT_COLS: &str =
    "id, campaign_id, participant_id, trigger_type, communication_id, at";

fn participant_event_from_row(row: &PgRow) -> StoreResult<ParticipantEvent> {
    let communication_id: Option<PgUuid> = col(row, "communication_id")?;
    Ok(ParticipantEvent {
        id: col(row, "id")?,
        campaign_id: id_col(row, "campaign_id")?,
        participant_id: id_col(row, "participant_id")?,
        trigger: parse_trigger(col(row, "trigger_type")?)?,
        communication_id: communication_id.map(|c| c.0),
        at: ts_col(row, "at")?,
    })
}

async fn insert_participant_event(
    conn: &mut PgConnection,
    campaign: CampaignId,
    participant: ParticipantId,
    trigger: TriggerType,
    communication: Option<CommunicationId>,
    at: DateTime<Utc>,
) -> StoreResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO participant_events (campaign_id, participant_id, trigger_type, \
         communication_id, at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(PgUuid(campaign))
    .bind(PgUuid(participant))
    .bind(trigger.as_str())
    .bind(communication.map(PgUuid))
    .bind(ts(at)?)
    .fetch_one(conn)
    .await
    .map_err(map_err)
}

/// The tenant's customers whose attribute `$name` reads `$2` (`->>`), oldest first. The
/// expressions match the customers_<name> indexes exactly, so those answer it.
macro_rules! customers_by_attribute {
    ($name:literal) => {
        concat!(
            "SELECT id FROM customers WHERE tenant_id = $1 AND attributes ? '",
            $name,
            "' AND attributes ->> '",
            $name,
            "' = $2 ORDER BY created_at, id LIMIT $3"
        )
    };
}

#[async_trait]
impl super::Store for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        // sqlx's migrator holds an advisory lock while it runs, so nodes booting together
        // apply each migration once.
        let migrator = Migrator::new(Embedded(MIGRATIONS))
            .await
            .map_err(|e| map_migrate_err(e, map_err))?;
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| map_migrate_err(e, map_err))
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO tenants ({TENANT_COLS}) VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(PgUuid(tenant.id))
        .bind(&tenant.name)
        .bind(&tenant.api_key_hash)
        .bind(ts(tenant.created_at)?)
        .bind(to_json(&tenant.settings, "tenant settings")?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant_by_key_hash(&self, api_key_hash: &str) -> StoreResult<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE api_key_hash = $1");
        let row = sqlx::query(&sql)
            .bind(api_key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn set_tenant_key_hash(&self, tenant: TenantId, api_key_hash: &str) -> StoreResult<()> {
        let q = sqlx::query("UPDATE tenants SET api_key_hash = $1 WHERE id = $2")
            .bind(api_key_hash)
            .bind(PgUuid(tenant));
        self.update_one(q, || format!("no tenant {tenant}")).await
    }

    async fn get_tenant(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(PgUuid(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn update_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let id = tenant.id;
        let q = sqlx::query("UPDATE tenants SET name = $1, settings = $2 WHERE id = $3")
            .bind(&tenant.name)
            .bind(to_json(&tenant.settings, "tenant settings")?)
            .bind(PgUuid(id));
        self.update_one(q, || format!("no tenant {id}")).await
    }

    async fn put_user(&self, user: &UserRecord) -> StoreResult<()> {
        let (created_at, updated_at) = (ts(user.created_at)?, ts(user.updated_at)?);
        let data = to_json(user, "user")?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let admin_of = (user.role == UserRole::Admin).then_some(user.tenant_id);
        refuse_last_admin(&mut tx, user.id, admin_of).await?;
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, role, created_at, updated_at, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
             email = excluded.email, role = excluded.role, created_at = excluded.created_at, \
             updated_at = excluded.updated_at, data = excluded.data",
        )
        .bind(PgUuid(user.id))
        .bind(PgUuid(user.tenant_id))
        .bind(&user.email)
        .bind(user.role.as_str())
        .bind(created_at)
        .bind(updated_at)
        .bind(data)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_user_write_err(e, map_err))?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM users WHERE id = $1")
            .bind(PgUuid(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        data.map(|d| parse_json(&d, "user")).transpose()
    }

    async fn users_by_email(&self, email: &str) -> StoreResult<Vec<UserRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM users WHERE email = $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(email)
        .bind(MAX_USERS_PER_EMAIL as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "user")).collect()
    }

    async fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<UserRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM users WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(PgUuid(tenant))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "user")).collect()
    }

    async fn delete_user(&self, id: UserId) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        refuse_last_admin(&mut tx, id, None).await?;
        sqlx::query("DELETE FROM auth_tokens WHERE user_id = $1")
            .bind(PgUuid(id))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(PgUuid(id))
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
             WHERE scope = $1 AND period_start = $2 AND period_end = $3 AND count > 0",
        )
        .bind(&key)
        .bind(ts(from)?)
        .bind(ts(to)?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn put_auth_token(&self, token: &AuthToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_tokens (token_hash, user_id, tenant_id, expires_at, data) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.token_hash)
        .bind(PgUuid(token.user_id))
        .bind(PgUuid(token.tenant_id))
        .bind(ts(token.expires_at)?)
        .bind(to_json(token, "auth token")?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn auth_token(&self, token_hash: &str) -> StoreResult<Option<AuthToken>> {
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM auth_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        data.map(|d| parse_json(&d, "auth token")).transpose()
    }

    async fn delete_auth_token(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_auth_tokens(&self, user: UserId) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM auth_tokens WHERE user_id = $1")
            .bind(PgUuid(user))
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn prune_auth_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM auth_tokens WHERE expires_at <= $1")
            .bind(ts(now)?)
            .execute(&self.pool)
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
        // into their logs.
        let mut qb = QueryBuilder::new(format!(
            "SELECT {FRESH_SESSION_COLS} FROM (SELECT id, data, updated_at"
        ));
        push_conversation_filters(&mut qb, tenant, query);
        qb.push(" ORDER BY updated_at DESC, id DESC LIMIT ")
            .push_bind(page_bound(query.limit))
            .push(" OFFSET ")
            .push_bind(page_bound(query.offset))
            .push(") AS s ORDER BY s.updated_at DESC, s.id DESC");
        let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
        let page = rows
            .iter()
            .map(fresh_session_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut qb = QueryBuilder::new("SELECT COUNT(*)");
        push_conversation_filters(&mut qb, tenant, query);
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
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
        let (from, to) = (ts(from)?, ts(to)?);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // A new counter starts from the scope's sessions in the period; the count runs only
        // when there is no counter yet. Of concurrent first callers, one inserts; the
        // others' inserts wait for it on the primary key and then do nothing, so the
        // sessions are counted once.
        sqlx::query(&format!(
            "INSERT INTO session_usage_counters (scope, period_start, period_end, count) \
             SELECT $1, $2, $3, \
                 (SELECT count(*) FROM sessions WHERE {column} = $4 \
                  AND created_at >= $2 AND created_at < $3 AND state <> $5) \
             WHERE NOT EXISTS (SELECT 1 FROM session_usage_counters \
                 WHERE scope = $1 AND period_start = $2 AND period_end = $3) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&key)
        .bind(from)
        .bind(to)
        .bind(PgUuid(id))
        .bind(CloseStatus::DailyLimitExceeded.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // Exact under concurrency: an UPDATE that waited for another one's row lock checks
        // `count < $4` again against the row that one left.
        let done = sqlx::query(
            "UPDATE session_usage_counters SET count = count + 1 \
             WHERE scope = $1 AND period_start = $2 AND period_end = $3 AND count < $4",
        )
        .bind(&key)
        .bind(from)
        .bind(to)
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
        let from = ts(from)?;
        let lookback = lookback.max(TimeDelta::zero()).num_nanoseconds();
        let since = from.saturating_sub(lookback.unwrap_or(i64::MAX));
        let (sessions, refused, billable): (i64, i64, i64) = sqlx::query_as(SESSION_USAGE)
            .bind(PgUuid(tenant))
            .bind(from)
            .bind(ts(to)?)
            .bind(ts(now)?)
            .bind(since)
            .bind(WINDOW_NANOS)
            .bind(CloseStatus::DailyLimitExceeded.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(SessionUsage {
            sessions: count(sessions, "session")?,
            billable: count(billable, "billable window")?,
            refused: count(refused, "refused session")?,
        })
    }

    async fn create_agent(&self, record: &AgentRecord, definition: &str) -> StoreResult<()> {
        let id = PgUuid(record.id);
        let created_at = ts(record.created_at)?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query(&format!(
            "INSERT INTO agents ({AGENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(id)
        .bind(PgUuid(record.tenant_id))
        .bind(&record.name)
        .bind(record.status.as_str())
        .bind(record.status_reason.as_deref())
        .bind(record.current_version)
        .bind(&record.token_hash)
        .bind(created_at)
        .bind(ts(record.updated_at)?)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO agent_versions (agent_id, version, definition, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(record.current_version)
        .bind(definition)
        .bind(created_at)
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
        let id = PgUuid(agent);
        let at = ts(at)?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // A missing agent fails the foreign key, so this is a Conflict too.
        sqlx::query(
            "INSERT INTO agent_versions (agent_id, version, definition, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(version)
        .bind(definition)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "UPDATE agents SET current_version = $1, name = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(version)
        .bind(name)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_agent(&self, agent: AgentId) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(PgUuid(agent))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self, tenant: TenantId) -> StoreResult<Vec<AgentRecord>> {
        let sql =
            format!("SELECT {AGENT_COLS} FROM agents WHERE tenant_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql)
            .bind(PgUuid(tenant))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn all_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents ORDER BY tenant_id, created_at, id");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn get_agent_version(&self, agent: AgentId, version: i64) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT definition FROM agent_versions WHERE agent_id = $1 AND version = $2",
        )
        .bind(PgUuid(agent))
        .bind(version)
        .fetch_optional(&self.pool)
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
            "UPDATE agent_versions SET definition = $1 WHERE agent_id = $2 AND version = $3",
        )
        .bind(definition)
        .bind(PgUuid(agent))
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
        let q = sqlx::query("UPDATE agents SET status = $1, status_reason = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(reason)
            .bind(PgUuid(agent));
        self.update_one(q, || format!("no agent {agent}")).await
    }

    async fn set_agent_token_hash(&self, agent: AgentId, token_hash: &str) -> StoreResult<()> {
        let q = sqlx::query("UPDATE agents SET token_hash = $1 WHERE id = $2")
            .bind(token_hash)
            .bind(PgUuid(agent));
        self.update_one(q, || format!("no agent {agent}")).await
    }

    async fn delete_agent(&self, agent: AgentId) -> StoreResult<bool> {
        let id = PgUuid(agent);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for sql in [
            "DELETE FROM messages WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = $1)",
            "DELETE FROM attachments WHERE session_id IN (SELECT id FROM sessions WHERE agent_id = $1)",
            "DELETE FROM sessions WHERE agent_id = $1",
            "DELETE FROM agent_versions WHERE agent_id = $1",
            "DELETE FROM agent_channels WHERE agent_id = $1::text",
            "DELETE FROM widgets WHERE agent_id = $1::text",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let done = sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit_all(
        &self,
        batch: &[SessionWrites],
        connections: &[ConnectionWrite],
    ) -> StoreResult<Committed> {
        if batch.is_empty() && connections.is_empty() {
            return Ok(Committed::default());
        }
        let groups = batch
            .iter()
            .map(GroupRows::new)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut ids: Vec<PgUuid> = batch.iter().map(|g| PgUuid(g.session)).collect();
        ids.sort_unstable();
        ids.dedup();
        let updated_at = ts(Utc::now())?;

        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let stored = if ids.is_empty() {
            HashMap::new()
        } else {
            lock_epochs(&mut tx, ids).await?
        };
        let current = |g: &SessionWrites| stored.get(&g.session).is_none_or(|&e| g.epoch >= e);
        let fenced: Vec<SessionId> = batch
            .iter()
            .filter(|g| !current(g))
            .map(|g| g.session)
            .collect();

        // Gather the current groups' rows by kind. A session written several times keeps
        // its last version.
        let mut sessions: HashMap<SessionId, SessionRow> = HashMap::new();
        let mut messages = Vec::new();
        let mut attachments = Vec::new();
        for (_, rows) in batch.iter().zip(groups).filter(|(g, _)| current(g)) {
            for s in rows.sessions {
                sessions.insert(s.session.id, s);
            }
            messages.extend(rows.messages);
            attachments.extend(rows.attachments);
        }

        if !sessions.is_empty() {
            // In id order, the order lock_epochs locked them in.
            let mut s: Vec<SessionRow> = sessions.into_values().collect();
            s.sort_unstable_by_key(|r| r.session.id);
            sqlx::query(UPSERT_SESSIONS)
                .bind(column(&s, |r| PgUuid(r.session.id)))
                .bind(column(&s, |r| PgUuid(r.session.tenant_id)))
                .bind(column(&s, |r| PgUuid(r.session.agent_id)))
                .bind(column(&s, |r| r.session.user_id.as_str()))
                .bind(column(&s, |r| r.session.ext_type.as_str()))
                .bind(column(&s, |r| r.session.status_str()))
                .bind(column(&s, |r| r.next_deadline))
                .bind(column(&s, |r| r.created_at))
                .bind(column(&s, |r| r.data.as_str()))
                .bind(column(&s, |r| r.epoch))
                .bind(column(&s, |r| r.closed_at))
                .bind(column(&s, |r| r.session.mode.as_str()))
                .bind(column(&s, |r| r.session.assignee.map(PgUuid)))
                .bind(updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        if !messages.is_empty() {
            let m = &messages;
            sqlx::query(INSERT_MESSAGES)
                .bind(column(m, |r| PgUuid(r.message.session_id)))
                .bind(column(m, |r| r.message.id))
                .bind(column(m, |r| r.message.role.as_str()))
                .bind(column(m, |r| r.message.text.as_str()))
                .bind(column(m, |r| r.ts))
                .bind(column(m, |r| r.attachments.as_deref()))
                .bind(column(m, |r| r.metadata.as_deref()))
                .bind(column(m, |r| feedback_str(r.message.feedback)))
                .bind(column(m, |r| r.message.idempotency_key.as_deref()))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        if !attachments.is_empty() {
            let a = &attachments;
            sqlx::query(INSERT_ATTACHMENTS)
                .bind(column(a, |r| PgUuid(r.meta.id)))
                .bind(column(a, |r| PgUuid(r.session_id)))
                .bind(column(a, |r| r.meta.filename.as_str()))
                .bind(column(a, |r| r.meta.content_type.as_str()))
                .bind(column(a, |r| r.size))
                .bind(column(a, |r| r.bytes))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let applied = write_connections(&mut tx, connections).await?;
        // Any error above returns early and drops `tx`, which rolls the whole batch back.
        tx.commit().await.map_err(map_err)?;
        Ok(Committed { fenced, applied })
    }

    async fn claim_session(&self, session: SessionId) -> StoreResult<Option<Epoch>> {
        sqlx::query_scalar("UPDATE sessions SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch")
            .bind(PgUuid(session))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn load_session(&self, session: SessionId) -> StoreResult<Option<Session>> {
        let sql = format!("SELECT {FRESH_SESSION_COLS} FROM sessions s WHERE s.id = $1");
        let row = sqlx::query(&sql)
            .bind(PgUuid(session))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(fresh_session_from_row).transpose()
    }

    async fn load_messages(&self, session: SessionId) -> StoreResult<Vec<Message>> {
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE session_id = $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(PgUuid(session))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(message_from_row).collect()
    }

    async fn load_recent_messages(
        &self,
        session: SessionId,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE session_id = $1 ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(PgUuid(session))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
            "SELECT {MESSAGE_COLS} FROM messages WHERE session_id = $1 AND idempotency_key = $2"
        );
        let row = sqlx::query(&sql)
            .bind(PgUuid(session))
            .bind(key)
            .fetch_optional(&self.pool)
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
             WHERE tenant_id = $1 AND user_id = $2 AND ext_type = $3 \
               AND ($4::uuid IS NULL OR agent_id = $4) \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(PgUuid(tenant))
        .bind(ext_id)
        .bind(ext_type)
        .bind(agent.map(PgUuid))
        .fetch_all(&self.pool)
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
             WHERE next_deadline IS NOT NULL AND next_deadline <= $1 \
             ORDER BY next_deadline, id LIMIT $2",
        )
        .bind(now.timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((id_col(r, "id")?, id_col(r, "agent_id")?)))
            .collect()
    }

    async fn set_feedback(
        &self,
        session: SessionId,
        log_id: i64,
        feedback: Feedback,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE messages SET feedback = $1 WHERE session_id = $2 AND id = $3")
                .bind(feedback_str(feedback))
                .bind(PgUuid(session))
                .bind(log_id)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_attachment(
        &self,
        id: Uuid,
    ) -> StoreResult<Option<(SessionId, AttachmentMeta, Bytes)>> {
        let row = sqlx::query(
            "SELECT id, session_id, filename, content_type, size, bytes \
             FROM attachments WHERE id = $1",
        )
        .bind(PgUuid(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let size: i64 = col(&row, "size")?;
        let meta = AttachmentMeta {
            id: id_col(&row, "id")?,
            filename: col(&row, "filename")?,
            content_type: col(&row, "content_type")?,
            size: u64::try_from(size)
                .map_err(|_| StoreError::Corrupt(format!("attachment size {size}")))?,
        };
        let bytes: Vec<u8> = col(&row, "bytes")?;
        Ok(Some((
            id_col(&row, "session_id")?,
            meta,
            Bytes::from(bytes),
        )))
    }

    async fn put_connection(&self, c: &ConnectionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connections (id, tenant_id, created_at, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
        )
        .bind(c.id.to_string())
        .bind(c.tenant_id.to_string())
        .bind(rfc3339(c.created_at))
        .bind(to_json(c, "connection")?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_connection(&self, id: ConnectionId) -> StoreResult<Option<ConnectionRecord>> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM connections WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        data.map(|d| parse_json(&d, "connection")).transpose()
    }

    async fn list_connections(&self, tenant: TenantId) -> StoreResult<Vec<ConnectionRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM connections WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "connection")).collect()
    }

    async fn delete_connection(&self, id: ConnectionId) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for sql in [
            "DELETE FROM agent_channels WHERE connection_id = $1",
            "DELETE FROM connector_inbox WHERE connection_id = $1",
            "DELETE FROM channel_sessions WHERE connection_id = $1",
            "DELETE FROM connection_events WHERE connection_id = $1",
            "DELETE FROM connector_cursors WHERE connection_id = $1",
            "DELETE FROM webhook_outbox WHERE connection_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let done = sqlx::query("DELETE FROM connections WHERE id = $1")
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("DELETE FROM agent_channels WHERE agent_id = $1")
            .bind(agent.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        for c in channels {
            sqlx::query(
                "INSERT INTO agent_channels (agent_id, connection_id, inbound) VALUES ($1, $2, $3)",
            )
            .bind(agent.to_string())
            .bind(c.connection_id.to_string())
            .bind(i32::from(c.inbound))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn agent_channels(&self, agent: AgentId) -> StoreResult<Vec<AgentChannel>> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT connection_id, inbound FROM agent_channels WHERE agent_id = $1 ORDER BY connection_id",
        )
        .bind(agent.to_string())
        .fetch_all(&self.pool)
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
            "SELECT agent_id FROM agent_channels WHERE connection_id = $1 AND inbound = 1",
        )
        .bind(connection.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        agent.as_deref().map(parse_uuid).transpose()
    }

    async fn put_widget(&self, widget: &WidgetRecord) -> StoreResult<()> {
        let mut q = sqlx::query(UPSERT_WIDGET);
        for col in widget_row(widget)? {
            q = q.bind(col);
        }
        q.execute(&self.pool).await.map_err(map_err)?;
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
             VALUES ($1, $2, $3, 'null', true) ON CONFLICT (connection_id, dedup_id) DO NOTHING",
        )
        .bind(connection.to_string())
        .bind(dedup_id)
        .bind(ts(at)?)
        .execute(&self.pool)
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
            "SELECT message FROM connector_inbox WHERE connection_id = $1 AND NOT done \
             ORDER BY seq LIMIT $2",
        )
        .bind(connection.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|m| parse_json(m, "inbound message"))
            .collect()
    }

    async fn inbox_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM connector_inbox WHERE done AND received_at < $1")
            .bind(ts(before)?)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn channel_session(
        &self,
        connection: ConnectionId,
        chat_key: &str,
    ) -> StoreResult<Option<ChannelSession>> {
        let row: Option<(PgUuid, i64)> = sqlx::query_as(
            "SELECT session_id, started_at FROM channel_sessions \
             WHERE connection_id = $1 AND chat_key = $2",
        )
        .bind(connection.to_string())
        .bind(chat_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.map(|(session_id, started_at)| ChannelSession {
            session_id: session_id.0,
            started_at: from_ts(started_at),
        }))
    }

    async fn set_channel_session(
        &self,
        connection: ConnectionId,
        chat_key: &str,
        session: &ChannelSession,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO channel_sessions (connection_id, chat_key, session_id, started_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (connection_id, chat_key) DO UPDATE SET \
             session_id = excluded.session_id, started_at = excluded.started_at",
        )
        .bind(connection.to_string())
        .bind(chat_key)
        .bind(PgUuid(session.session_id))
        .bind(ts(session.started_at)?)
        .execute(&self.pool)
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
             WHERE connection_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(connection.to_string())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn connector_cursor(&self, connection: ConnectionId) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT cursor FROM connector_cursors WHERE connection_id = $1")
            .bind(connection.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn set_connector_cursor(
        &self,
        connection: ConnectionId,
        cursor: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO connector_cursors (connection_id, cursor) VALUES ($1, $2) \
             ON CONFLICT (connection_id) DO UPDATE SET cursor = excluded.cursor",
        )
        .bind(connection.to_string())
        .bind(cursor)
        .execute(&self.pool)
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
        sqlx::query_scalar(
            "INSERT INTO webhook_outbox (connection_id, msg_id, event_type, body, attempts, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 0, $5, $5) RETURNING id",
        )
        .bind(connection.to_string())
        .bind(&event.msg_id)
        .bind(&event.event_type)
        .bind(&event.body)
        .bind(ts(at)?)
        .fetch_one(&self.pool)
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
        let lease = ts(lease_until)?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Locked in id order: a concurrent claim waits here, then reads the lease this one
        // sets and finds the head not due.
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM webhook_outbox WHERE connection_id = $1 \
             ORDER BY id LIMIT $2 FOR UPDATE"
        ))
        .bind(connection.to_string())
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
        if claimed.is_empty() {
            return Ok(claimed);
        }
        let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
        sqlx::query("UPDATE webhook_outbox SET next_attempt_at = $1 WHERE id = ANY($2)")
            .bind(lease)
            .bind(ids)
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
            "UPDATE webhook_outbox SET attempts = $1, next_attempt_at = $2, last_error = $3 \
             WHERE id = $4",
        )
        .bind(i64::from(attempts))
        .bind(ts(next_attempt_at)?)
        .bind(last_error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn outbox_done(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM webhook_outbox WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn outbox_len(&self, connection: ConnectionId) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox WHERE connection_id = $1")
                .bind(connection.to_string())
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("outbox length {n}")))
    }

    async fn put_campaign(&self, c: &CampaignRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO campaigns (id, tenant_id, created_at, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, \
             created_at = excluded.created_at, data = excluded.data",
        )
        .bind(PgUuid(c.campaign.id))
        .bind(PgUuid(c.campaign.tenant_id))
        .bind(ts(c.campaign.created_at)?)
        .bind(to_json(c, "campaign")?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<CampaignRecord>> {
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM campaigns WHERE id = $1")
            .bind(PgUuid(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        data.map(|d| parse_json(&d, "campaign")).transpose()
    }

    async fn list_campaigns(&self, tenant: TenantId) -> StoreResult<Vec<CampaignRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM campaigns WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(PgUuid(tenant))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "campaign")).collect()
    }

    async fn list_running_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        // Campaigns are few and their status lives in `data`: filtered here.
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT data FROM campaigns ORDER BY created_at, id")
                .fetch_all(&self.pool)
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
        let id = PgUuid(id);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The campaign row first: it waits for upserts running on the campaign (they
        // lock it, see LOCK_FOR_UPSERT) before touching their participants, so the two
        // cannot deadlock.
        let done = sqlx::query("DELETE FROM campaigns WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // Participants before their communications, the order every transaction that
        // takes both locks them in.
        for sql in [
            "DELETE FROM campaign_flows WHERE campaign_id = $1",
            "DELETE FROM participants WHERE campaign_id = $1",
            "DELETE FROM campaign_uploads WHERE campaign_id = $1",
            "DELETE FROM communications WHERE campaign_id = $1",
            "DELETE FROM participant_events WHERE campaign_id = $1",
            "DELETE FROM flow_steps WHERE campaign_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_flow(&self, flow: &FlowRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO campaign_flows (campaign_id, name, data) VALUES ($1, $2, $3) \
             ON CONFLICT (campaign_id, name) DO UPDATE SET data = excluded.data",
        )
        .bind(PgUuid(flow.campaign_id))
        .bind(&flow.name)
        .bind(to_json(flow, "flow")?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_flow(&self, campaign: CampaignId, name: &str) -> StoreResult<Option<FlowRecord>> {
        let data: Option<String> = sqlx::query_scalar(
            "SELECT data FROM campaign_flows WHERE campaign_id = $1 AND name = $2",
        )
        .bind(PgUuid(campaign))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        data.map(|d| parse_json(&d, "flow")).transpose()
    }

    async fn list_flows(&self, campaign: CampaignId) -> StoreResult<Vec<FlowRecord>> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM campaign_flows WHERE campaign_id = $1 ORDER BY name COLLATE \"C\"",
        )
        .bind(PgUuid(campaign))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| parse_json(d, "flow")).collect()
    }

    async fn delete_flow(&self, campaign: CampaignId, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM campaign_flows WHERE campaign_id = $1 AND name = $2")
            .bind(PgUuid(campaign))
            .bind(name)
            .execute(&self.pool)
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
        let at = ts(at)?;
        let rows = batch
            .iter()
            .map(UpsertRow::new)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut out: Vec<Option<Upserted>> = vec![None; batch.len()];
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let locked = sqlx::query(LOCK_FOR_UPSERT)
            .bind(PgUuid(tenant))
            .bind(PgUuid(campaign))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if locked.is_none() {
            return Err(StoreError::Conflict(format!(
                "no campaign {campaign} of tenant {tenant}"
            )));
        }
        // A few statements per round instead of several per row. Usually the whole batch
        // is one round; inputs that would see each other's effects wait for a later one
        // (see split_round), whose lookups then see the earlier rounds' writes.
        let mut pending: Vec<usize> = (0..rows.len()).collect();
        while !pending.is_empty() {
            let key_of = |kind: &str| -> Vec<Option<&str>> {
                pending
                    .iter()
                    .map(|&i| {
                        let (k, v) = rows[i].key();
                        (k == kind).then_some(v)
                    })
                    .collect()
            };
            let found: Vec<Option<PgUuid>> = sqlx::query_scalar(LOOKUP_CUSTOMERS)
                .bind(PgUuid(tenant))
                .bind(key_of("external_id"))
                .bind(key_of("email"))
                .bind(key_of("phone"))
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
            if found.len() != pending.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} customer lookups answered {} rows",
                    pending.len(),
                    found.len()
                )));
            }
            let found: Vec<Option<CustomerId>> =
                found.into_iter().map(|c| c.map(|c| c.0)).collect();
            let (round, waiting) = split_round(&rows, &pending, &found);
            // Ids are drawn in input order and time-ordered, so what one batch creates
            // lists (created_at, then id) in the batch's order.
            let round: Vec<Planned> = round
                .into_iter()
                .map(|(input, found)| Planned {
                    input,
                    customer: found.unwrap_or_else(Uuid::now_v7),
                    new_customer: found.is_none(),
                    proposed: Uuid::now_v7(),
                })
                .collect();
            let (fresh, known): (Vec<&Planned>, Vec<&Planned>) =
                round.iter().partition(|p| p.new_customer);
            if !fresh.is_empty() {
                sqlx::query(INSERT_CUSTOMERS)
                    .bind(PgUuid(tenant))
                    .bind(at)
                    .bind(column(&fresh, |p| PgUuid(p.customer)))
                    .bind(column(&fresh, |p| rows[p.input].customer.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                bind_participants(&INSERT_PARTICIPANTS, campaign, upload, at, &fresh, &rows)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for p in &fresh {
                    out[p.input] = Some(Upserted {
                        participant_id: p.proposed,
                        customer_id: p.customer,
                        created: true,
                    });
                }
            }
            if !known.is_empty() {
                sqlx::query(UPDATE_CUSTOMERS)
                    .bind(at)
                    .bind(column(&known, |p| PgUuid(p.customer)))
                    .bind(column(&known, |p| rows[p.input].customer.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let answered: Vec<(PgUuid, PgUuid)> =
                    bind_participants(&UPSERT_PARTICIPANTS, campaign, upload, at, &known, &rows)
                        .try_map(|row: PgRow| Ok((row.try_get(0)?, row.try_get(1)?)))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                let by_customer: HashMap<CustomerId, ParticipantId> =
                    answered.into_iter().map(|(p, c)| (c.0, p.0)).collect();
                for p in &known {
                    let participant_id = *by_customer.get(&p.customer).ok_or_else(|| {
                        StoreError::Corrupt(format!("no participant answered for {}", p.customer))
                    })?;
                    out[p.input] = Some(Upserted {
                        participant_id,
                        customer_id: p.customer,
                        created: participant_id == p.proposed,
                    });
                }
            }
            pending = waiting;
        }
        tx.commit().await.map_err(map_err)?;
        // Every input was in exactly one round.
        out.into_iter()
            .map(|u| u.ok_or_else(|| StoreError::Corrupt("an input was not upserted".into())))
            .collect()
    }

    async fn get_participant(&self, id: ParticipantId) -> StoreResult<Option<ParticipantRecord>> {
        let sql = format!("SELECT {PARTICIPANT_COLS} FROM participants p WHERE p.id = $1");
        let row = sqlx::query(&sql)
            .bind(PgUuid(id))
            .fetch_optional(&self.pool)
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
        push_participant_filters(&mut qb, campaign, query)?;
        qb.push(" ORDER BY p.created_at, p.id LIMIT ")
            .push_bind(page_bound(query.limit))
            .push(" OFFSET ")
            .push_bind(page_bound(query.offset));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(map_err)?;
        let page = rows
            .iter()
            .map(participant_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut qb = QueryBuilder::new("SELECT COUNT(*)");
        push_participant_filters(&mut qb, campaign, query)?;
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok((page, count(total, "participant")?))
    }

    async fn delete_participant(&self, id: ParticipantId) -> StoreResult<bool> {
        let id = PgUuid(id);
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let campaign: Option<PgUuid> =
            sqlx::query_scalar("DELETE FROM participants WHERE id = $1 RETURNING campaign_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let Some(campaign) = campaign else {
            return Ok(false);
        };
        // The communications before the events: a change_communication holding one of them
        // may still queue an event, which this statement then sees once it committed.
        sqlx::query("DELETE FROM communications WHERE participant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // By campaign too, so the campaign's (short) queue is all that is searched.
        sqlx::query(
            "DELETE FROM participant_events WHERE campaign_id = $1 AND participant_id = $2",
        )
        .bind(campaign)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query("DELETE FROM flow_steps WHERE participant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn get_customer(&self, id: CustomerId) -> StoreResult<Option<CustomerRecord>> {
        let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(PgUuid(id))
            .fetch_optional(&self.pool)
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
            "SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 \
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(&sql)
            .bind(PgUuid(tenant))
            .bind(page_bound(limit))
            .bind(page_bound(offset))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        let page = rows
            .iter()
            .map(customer_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE tenant_id = $1")
            .bind(PgUuid(tenant))
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        Ok((page, count(total, "customer")?))
    }

    async fn put_upload(&self, upload: &UploadRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO campaign_uploads (id, campaign_id, created_at, data) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET campaign_id = excluded.campaign_id, \
             created_at = excluded.created_at, data = excluded.data",
        )
        .bind(PgUuid(upload.id))
        .bind(PgUuid(upload.campaign_id))
        .bind(ts(upload.created_at)?)
        .bind(to_json(upload, "upload")?)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<UploadRecord>> {
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM campaign_uploads WHERE id = $1")
                .bind(PgUuid(id))
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        data.map(|d| parse_json(&d, "upload")).transpose()
    }

    async fn list_uploads(&self, campaign: CampaignId) -> StoreResult<Vec<UploadRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM campaign_uploads WHERE campaign_id = $1 \
             ORDER BY created_at DESC, id DESC",
        )
        .bind(PgUuid(campaign))
        .fetch_all(&self.pool)
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
        let ids: Vec<PgUuid> = sqlx::query_scalar(
            "SELECT id FROM participants WHERE campaign_id = $1 AND pending IS NOT NULL \
             AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(PgUuid(campaign))
        .bind(PgUuid(after.unwrap_or(Uuid::nil())))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(ids.into_iter().map(|id| id.0).collect())
    }

    async fn add_participant_event(
        &self,
        campaign: CampaignId,
        participant: ParticipantId,
        trigger: TriggerType,
        communication: Option<CommunicationId>,
        at: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
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
             WHERE campaign_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(PgUuid(campaign))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(participant_event_from_row).collect()
    }

    async fn commit_participant_step(&self, step: &ParticipantStep) -> StoreResult<StepOutcome> {
        let id = PgUuid(step.participant_id);
        let at = ts(step.at)?;
        let new_rows = step
            .new_communications
            .iter()
            .map(CommunicationRow::new)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Rows are locked customer, then participant, then communications, as upserts
        // (customer, participant), delete_participant and change_communication (participant,
        // communication) take them, so none of these can deadlock with another.
        if !step.customer_patch.is_empty() {
            sqlx::query("SELECT 1 FROM customers WHERE id = $1 FOR NO KEY UPDATE")
                .bind(PgUuid(step.customer_id))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let exists = sqlx::query("SELECT 1 FROM participants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
            .is_some();
        if let Some(event) = step.event_done {
            sqlx::query("DELETE FROM participant_events WHERE id = $1")
                .bind(event)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        if !exists {
            tx.commit().await.map_err(map_err)?;
            return Ok(StepOutcome::default());
        }
        // Before the patch moves updated_at: an upload since the read moved it already, and
        // its trigger stays.
        if let Some(read_at) = step.clear_pending {
            sqlx::query("UPDATE participants SET pending = NULL WHERE id = $1 AND updated_at = $2")
                .bind(id)
                .bind(ts(read_at)?)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        patch_row(
            &mut tx,
            PATCH_PARTICIPANT,
            step.participant_id,
            &step.participant_patch,
            at,
        )
        .await?;
        patch_row(
            &mut tx,
            PATCH_CUSTOMER,
            step.customer_id,
            &step.customer_patch,
            at,
        )
        .await?;
        let mut canceled = Vec::new();
        if step.cancel_open {
            let open: Vec<String> = sqlx::query_scalar(
                "SELECT data FROM communications WHERE participant_id = $1 \
                 AND status = ANY($2) ORDER BY created_at, id FOR UPDATE",
            )
            .bind(id)
            .bind(status_strs(&CommunicationStatus::OPEN))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            canceled = open
                .iter()
                .map(|d| Ok(cancel(communication_from_data(d)?, step.at)))
                .collect::<StoreResult<Vec<_>>>()?;
            if !canceled.is_empty() {
                let data = canceled
                    .iter()
                    .map(|c| to_json(c, "communication"))
                    .collect::<StoreResult<Vec<_>>>()?;
                sqlx::query(CANCEL_COMMUNICATIONS)
                    .bind(column(&canceled, |c| PgUuid(c.id)))
                    .bind(CommunicationStatus::Canceled.as_str())
                    .bind(data)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
            }
        }
        if !new_rows.is_empty() {
            sqlx::query(INSERT_COMMUNICATIONS)
                .bind(column(&new_rows, |r| PgUuid(r.record.id)))
                .bind(column(&new_rows, |r| PgUuid(r.record.tenant_id)))
                .bind(column(&new_rows, |r| PgUuid(r.record.campaign_id)))
                .bind(column(&new_rows, |r| PgUuid(r.record.participant_id)))
                .bind(column(&new_rows, |r| r.record.status.as_str()))
                .bind(column(&new_rows, |r| r.record.channel.as_str()))
                .bind(column(&new_rows, |r| r.due_at))
                .bind(column(&new_rows, |r| r.record.session_id.map(PgUuid)))
                .bind(column(&new_rows, |r| r.record.connection_id.map(PgUuid)))
                .bind(column(&new_rows, |r| r.record.message_id.as_deref()))
                .bind(column(&new_rows, |r| r.created_at))
                .bind(column(&new_rows, |r| r.data.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        if !step.visited.is_empty() {
            sqlx::query(
                "INSERT INTO flow_steps (campaign_id, participant_id, flow, node, at) \
                 SELECT $1, $2, r.flow, r.node, $3 FROM UNNEST($4::text[], $5::text[]) \
                 AS r(flow, node)",
            )
            .bind(PgUuid(step.campaign_id))
            .bind(id)
            .bind(at)
            .bind(column(&step.visited, |(f, _)| f.as_str()))
            .bind(column(&step.visited, |(_, n)| n.as_str()))
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
            sqlx::query_scalar("SELECT data FROM communications WHERE id = $1")
                .bind(PgUuid(id))
                .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        if change.results.is_some() {
            // The participant first, the order commit_participant_step and
            // delete_participant lock the two in (a communication's participant never
            // changes, so it can be looked up before the communication is locked).
            sqlx::query(
                "SELECT 1 FROM participants WHERE id = \
                 (SELECT participant_id FROM communications WHERE id = $1) FOR NO KEY UPDATE",
            )
            .bind(PgUuid(id))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        // The row lock keeps a concurrent change from passing the same status check.
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM communications WHERE id = $1 FOR UPDATE")
                .bind(PgUuid(id))
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
        sqlx::query(UPDATE_COMMUNICATION)
            .bind(PgUuid(c.id))
            .bind(c.status.as_str())
            .bind(ts(c.due_at())?)
            .bind(c.session_id.map(PgUuid))
            .bind(c.message_id.as_deref())
            .bind(to_json(&c, "communication")?)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if let Some(results) = &change.results {
            sqlx::query("UPDATE participants SET result = $2::jsonb, result_at = $3 WHERE id = $1")
                .bind(PgUuid(c.participant_id))
                .bind(to_json(results, "results")?)
                .bind(ts(change.at)?)
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
            "SELECT data FROM communications WHERE campaign_id = $1 AND status = 'Planned' \
             AND due_at <= $2 ORDER BY due_at, id LIMIT $3",
        )
        .bind(PgUuid(campaign))
        .bind(ts(now)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| communication_from_data(d)).collect()
    }

    async fn next_due_communication(
        &self,
        campaign: CampaignId,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(due_at) FROM communications WHERE campaign_id = $1 \
             AND status = 'Planned'",
        )
        .bind(PgUuid(campaign))
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(due.map(from_ts))
    }

    async fn live_communications(
        &self,
        campaign: CampaignId,
    ) -> StoreResult<Vec<(CommunicationId, SessionId)>> {
        let rows: Vec<(PgUuid, PgUuid)> = sqlx::query_as(
            "SELECT id, session_id FROM communications WHERE campaign_id = $1 \
             AND status = ANY($2) AND session_id IS NOT NULL ORDER BY id",
        )
        .bind(PgUuid(campaign))
        .bind(status_strs(&CommunicationStatus::LIVE))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows.into_iter().map(|(c, s)| (c.0, s.0)).collect())
    }

    async fn communication_by_session(
        &self,
        session: SessionId,
    ) -> StoreResult<Option<CommunicationRecord>> {
        let data: Option<String> = sqlx::query_scalar(
            "SELECT data FROM communications WHERE session_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(PgUuid(session))
        .fetch_optional(&self.pool)
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
            "SELECT data FROM communications WHERE connection_id = $1 AND message_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(PgUuid(connection))
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        data.as_deref().map(communication_from_data).transpose()
    }

    async fn list_communications(
        &self,
        participant: ParticipantId,
    ) -> StoreResult<Vec<CommunicationRecord>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM communications WHERE participant_id = $1 ORDER BY created_at, id",
        )
        .bind(PgUuid(participant))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|d| communication_from_data(d)).collect()
    }

    async fn campaign_stats(&self, campaign: CampaignId) -> StoreResult<CampaignStats> {
        let campaign = PgUuid(campaign);
        let (participants, pending): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(pending) FROM participants WHERE campaign_id = $1",
        )
        .bind(campaign)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        let communications: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT status, channel, COUNT(*) FROM communications WHERE campaign_id = $1 \
             GROUP BY status, channel",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let nodes: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT flow, node, COUNT(*) FROM flow_steps WHERE campaign_id = $1 \
             GROUP BY flow, node",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
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
                "SELECT id FROM customers WHERE tenant_id = $1 AND phone = $2 \
                 ORDER BY created_at, id LIMIT $3"
            }
            _ => {
                return Err(StoreError::Conflict(format!(
                    "cannot look customers up by {name}"
                )))
            }
        };
        let ids: Vec<PgUuid> = sqlx::query_scalar(sql)
            .bind(PgUuid(tenant))
            .bind(value)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(ids.into_iter().map(|id| id.0).collect())
    }

    async fn participants_of_customer(
        &self,
        campaign: CampaignId,
        customer: CustomerId,
    ) -> StoreResult<Vec<ParticipantId>> {
        let ids: Vec<PgUuid> = sqlx::query_scalar(
            "SELECT id FROM participants WHERE campaign_id = $1 AND customer_id = $2 \
             ORDER BY created_at, id",
        )
        .bind(PgUuid(campaign))
        .bind(PgUuid(customer))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(ids.into_iter().map(|id| id.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::pg_testing::{fresh_database, TestDatabase};
    use crate::store::tests as suite;
    use crate::store::Store;

    /// A migrated store on a database of its own, or None if Postgres is unreachable.
    async fn fresh_store() -> Option<(PgStore, TestDatabase)> {
        let db = fresh_database().await?;
        let store = PgStore::connect(db.url()).await.unwrap();
        store.migrate().await.unwrap();
        Some((store, db))
    }

    async fn finish(store: PgStore, db: TestDatabase) {
        store.close().await;
        db.drop_now().await;
    }

    /// Runs one suite function on a fresh database.
    macro_rules! on_postgres {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                let Some((store, db)) = fresh_store().await else { return };
                suite::$name(&store).await;
                finish(store, db).await;
            }
        )*};
    }

    on_postgres!(
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
        suite_nul_text_fails_alone,
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
    async fn unreachable_database_answers_unavailable_quickly() {
        // Nothing listens on port 1.
        let store = PgStore::connect("postgres://postgres@127.0.0.1:1/parley")
            .await
            .unwrap();
        let started = Instant::now();
        let result = store.load_session(Uuid::new_v4()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < ACQUIRE_TIMEOUT + Duration::from_secs(2));
    }

    #[tokio::test]
    async fn bad_url_is_unavailable() {
        assert!(matches!(
            PgStore::connect("postgres://host:port/db").await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn store_recovers_after_its_connections_are_killed() {
        let Some((store, db)) = fresh_store().await else {
            return;
        };
        let t = suite::tenant("acme", "key");
        store.create_tenant(&t).await.unwrap();
        // Several connections open at once, so the pool holds more than one dead one.
        let reads = (0..4).map(|_| store.list_tenants());
        for r in futures::future::join_all(reads).await {
            assert_eq!(r.unwrap(), vec![t.clone()]);
        }
        assert!(db.terminate_connections().await.unwrap() > 0);

        let mut failures = 0;
        loop {
            match store.tenant_by_key_hash("key").await {
                Ok(found) => {
                    assert_eq!(found, Some(t.clone()));
                    break;
                }
                Err(StoreError::Unavailable(_)) if failures < 2 => failures += 1,
                Err(e) => panic!("not recovered after {failures} failures: {e}"),
            }
        }
        // Writes work again too.
        let s = suite::session(t.id, Uuid::new_v4(), "u1", 0);
        let fenced = store
            .commit(&suite::grouped(&[Write::Session(Box::new(s.clone()))]))
            .await
            .unwrap();
        assert!(fenced.is_empty());
        assert_eq!(store.load_session(s.id).await.unwrap(), Some(s));
        finish(store, db).await;
    }

    #[tokio::test]
    async fn concurrent_migrations_agree() {
        let Some(db) = fresh_database().await else {
            return;
        };
        // Nodes booting together on an empty database.
        let (a, b) = (
            PgStore::connect(db.url()).await.unwrap(),
            PgStore::connect(db.url()).await.unwrap(),
        );
        let (ra, rb) = futures::join!(a.migrate(), b.migrate());
        ra.unwrap();
        rb.unwrap();
        a.migrate().await.unwrap();
        assert!(a.list_tenants().await.unwrap().is_empty());
        b.close().await;
        finish(a, db).await;
    }

    #[tokio::test]
    async fn unmigrated_store_is_unavailable() {
        let Some(db) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(db.url()).await.unwrap();
        assert!(matches!(
            store.load_session(Uuid::new_v4()).await,
            Err(StoreError::Unavailable(_))
        ));
        finish(store, db).await;
    }

    /// Sessions stored before closed_at existed get it from their JSON, to the nanosecond
    /// whatever fraction serde wrote.
    #[tokio::test]
    async fn migration_fills_in_closed_at() {
        let Some(db) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(db.url()).await.unwrap();
        // The schema as it was before closed_at.
        Migrator::new(Embedded(&MIGRATIONS[..7]))
            .await
            .unwrap()
            .run(&store.pool)
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
                 created_at, updated_at, data) VALUES ($1, $2, $3, 'u', 'x', $4, $5, $5, $6)",
            )
            .bind(PgUuid(s.id))
            .bind(PgUuid(t))
            .bind(PgUuid(a))
            .bind(s.status_str())
            .bind(ts(s.created_at).unwrap())
            .bind(to_json(s, "session").unwrap())
            .execute(&store.pool)
            .await
            .unwrap();
        }
        store.migrate().await.unwrap();
        for s in &sessions {
            let stored: Option<i64> =
                sqlx::query_scalar("SELECT closed_at FROM sessions WHERE id = $1")
                    .bind(PgUuid(s.id))
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(stored, s.closed_at.map(|t| ts(t).unwrap()));
        }
        finish(store, db).await;
    }

    /// Sessions stored before the inbox's columns existed get their mode and assignee from
    /// their JSON.
    #[tokio::test]
    async fn migration_fills_in_mode_and_assignee() {
        let Some(db) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(db.url()).await.unwrap();
        // The schema as it was before mode and assignee.
        Migrator::new(Embedded(&MIGRATIONS[..8]))
            .await
            .unwrap()
            .run(&store.pool)
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
                 created_at, updated_at, data) VALUES ($1, $2, $3, 'u', 'x', $4, $5, $5, $6)",
            )
            .bind(PgUuid(s.id))
            .bind(PgUuid(t))
            .bind(PgUuid(a))
            .bind(s.status_str())
            .bind(ts(s.created_at).unwrap())
            .bind(to_json(s, "session").unwrap())
            .execute(&store.pool)
            .await
            .unwrap();
        }
        store.migrate().await.unwrap();
        for s in &sessions {
            let (mode, assignee): (String, Option<PgUuid>) =
                sqlx::query_as("SELECT mode, assignee FROM sessions WHERE id = $1")
                    .bind(PgUuid(s.id))
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(mode, s.mode.as_str());
            assert_eq!(assignee.map(|u| u.0), s.assignee);
        }
        finish(store, db).await;
    }

    #[tokio::test]
    async fn bad_rows_are_corrupt_not_panics() {
        let Some((store, db)) = fresh_store().await else {
            return;
        };
        let (sid, aid) = (Uuid::new_v4(), Uuid::new_v4());
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, agent_id, user_id, ext_type, state, \
             next_deadline, created_at, updated_at, data) \
             VALUES ($1, $1, $1, 'u', 'x', 'active', 0, 0, 0, '{broken')",
        )
        .bind(PgUuid(sid))
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO messages (session_id, id, role, text, ts, feedback) \
             VALUES ($1, 1, 'ROBOT', 't', 0, 'MEH')",
        )
        .bind(PgUuid(sid))
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, status, current_version, token_hash, \
             created_at, updated_at) VALUES ($1, $1, 'n', 'Sleeping', 1, 'h', 0, 0)",
        )
        .bind(PgUuid(aid))
        .execute(&store.pool)
        .await
        .unwrap();

        let corrupt = |r: &StoreError| matches!(r, StoreError::Corrupt(_));
        assert!(corrupt(&store.load_session(sid).await.unwrap_err()));
        assert!(corrupt(&store.load_messages(sid).await.unwrap_err()));
        assert!(corrupt(&store.get_agent(aid).await.unwrap_err()));
        finish(store, db).await;
    }

    /// Postgres text cannot hold NUL characters (SQLite's can): such a batch is refused as a
    /// Conflict, not retried as if the database were down, and the store stays usable.
    #[tokio::test]
    async fn nul_in_text_is_a_conflict() {
        let Some((store, db)) = fresh_store().await else {
            return;
        };
        let s = suite::session(Uuid::new_v4(), Uuid::new_v4(), "u1", 0);
        let bad = suite::message(s.id, 1, Role::Human, "nul \0 here");
        let result = store
            .commit(&suite::grouped(&[
                Write::Session(Box::new(s.clone())),
                Write::Message(Box::new(bad)),
            ]))
            .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
        assert_eq!(store.load_session(s.id).await.unwrap(), None);
        store
            .commit(&suite::grouped(&[Write::Session(Box::new(s.clone()))]))
            .await
            .unwrap();
        assert_eq!(store.load_session(s.id).await.unwrap(), Some(s));
        finish(store, db).await;
    }
}

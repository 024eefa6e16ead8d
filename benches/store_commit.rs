//! Group-commit throughput of the Postgres store in rows per second, against a bare baseline
//! measured in the same run on the same tables: the same kind of rows written with plain
//! multi-row UNNEST statements in one transaction per batch, prepared before the clock
//! starts, so without the store's work (the epoch check and its row locks, serialising
//! sessions to JSON, grouping writes by kind).
//!
//! A turn is a session upsert and two messages (the customer's and the answer), as in an
//! ordinary turn; batches of `BATCH` turns, committed one at a time as the persistence
//! actor does, alternate between the two sides so both see the tables at the same size.
//!
//! `cargo bench --bench store_commit`. Needs Postgres (see `pg_testing`); without one it
//! says so and exits 0.

use std::time::{Duration, Instant};

use chrono::Utc;
use parley_engine::model::{Feedback, Message, Mode, Role, Session, SessionState};
use parley_engine::store::pg_testing::{self, sqlx};
use parley_engine::store::{PgStore, SessionWrites, Store, Write, FIRST_EPOCH};
use uuid::Uuid;

/// Turns per group commit.
const BATCH: usize = 200;
/// Timed batches per side, after `WARMUP` untimed ones.
const BATCHES: usize = 300;
const WARMUP: usize = 20;
/// Sessions per side: each gets several turns, so most upserts update an existing row.
const SESSIONS: usize = 10_000;
/// Rows a turn writes.
const ROWS_PER_TURN: usize = 3;

/// The baseline's statements: the store's, less its epoch check (the benched sessions
/// stay open and REGULAR with nobody assigned, so their `closed_at` and `assignee` are
/// always null and their `mode` REGULAR). Ids travel as text (the workspace's sqlx has no
/// uuid support of its own); casting them costs far less than a round trip.
const BARE_SESSIONS: &str = "\
    INSERT INTO sessions (id, tenant_id, agent_id, user_id, ext_type, state, next_deadline, \
                          created_at, updated_at, data, epoch, closed_at, mode, assignee) \
    SELECT id, tenant_id, agent_id, user_id, ext_type, state, next_deadline, created_at, $11, \
           data, epoch, NULL::int8, 'REGULAR', NULL::uuid \
    FROM UNNEST($1::text[]::uuid[], $2::text[]::uuid[], $3::text[]::uuid[], $4::text[], \
                $5::text[], $6::text[], $7::int8[], $8::int8[], $9::text[], $10::int8[]) \
         AS r(id, tenant_id, agent_id, user_id, ext_type, state, next_deadline, created_at, \
              data, epoch) \
    ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, ext_type = excluded.ext_type, \
        state = excluded.state, next_deadline = excluded.next_deadline, \
        updated_at = excluded.updated_at, data = excluded.data, \
        closed_at = excluded.closed_at, mode = excluded.mode, assignee = excluded.assignee";

const BARE_MESSAGES: &str = "\
    INSERT INTO messages (session_id, id, role, text, ts, attachments, metadata, feedback, \
                          idempotency_key) \
    SELECT * FROM UNNEST($1::text[]::uuid[], $2::int8[], $3::text[], $4::text[], $5::int8[], \
                         $6::text[], $7::text[], $8::text[], $9::text[])";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let Some(db) = pg_testing::fresh_database().await else {
        println!("store_commit: no Postgres to measure, nothing done");
        return;
    };
    let store = PgStore::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let bare = sqlx::PgPool::connect(db.url()).await.unwrap();
    let (mut store_turns, mut bare_turns) = (Turns::new(), Turns::new());
    let (mut store_time, mut bare_time) = (Duration::ZERO, Duration::ZERO);

    for i in 0..WARMUP + BATCHES {
        let batch = store_batch(store_turns.next_batch());
        let started = Instant::now();
        let fenced = store.commit(&batch).await.unwrap();
        let took = started.elapsed();
        assert!(fenced.is_empty());

        let columns = Columns::new(bare_turns.next_batch());
        let started = Instant::now();
        columns.commit(&bare).await;
        let bare_took = started.elapsed();

        if i >= WARMUP {
            store_time += took;
            bare_time += bare_took;
        }
    }

    let rows = (BATCHES * BATCH * ROWS_PER_TURN) as f64;
    let (store_rate, bare_rate) = (
        rows / store_time.as_secs_f64(),
        rows / bare_time.as_secs_f64(),
    );
    let per_batch = |d: Duration| d.as_secs_f64() * 1e3 / BATCHES as f64;
    println!("\n== store_commit (this run) ==");
    println!(
        "{BATCHES} batches of {BATCH} turns ({ROWS_PER_TURN} rows each) per side, \
         {SESSIONS} sessions per side"
    );
    println!(
        "PgStore::commit (fencing, serialising): {store_rate:>10.0} rows/s, {:.2} ms/batch",
        per_batch(store_time)
    );
    println!(
        "bare UNNEST inserts, same rows:         {bare_rate:>10.0} rows/s, {:.2} ms/batch",
        per_batch(bare_time)
    );
    println!(
        "ratio store / bare:                     {:>10.3}",
        store_rate / bare_rate
    );

    store.close().await;
    bare.close().await;
    db.drop_now().await;
}

/// Sessions taking turns round-robin.
struct Turns {
    sessions: Vec<Session>,
    next: usize,
    turn: u64,
}

impl Turns {
    fn new() -> Turns {
        let (tenant, agent) = (Uuid::now_v7(), Uuid::now_v7());
        let sessions = (0..SESSIONS)
            .map(|i| session(tenant, agent, format!("user-{i}")))
            .collect();
        Turns {
            sessions,
            next: 0,
            turn: 0,
        }
    }

    /// The next `BATCH` turns: each session's new version and its two new messages.
    fn next_batch(&mut self) -> Vec<(Session, [Message; 2])> {
        (0..BATCH)
            .map(|_| {
                let s = &mut self.sessions[self.next];
                self.next = (self.next + 1) % SESSIONS;
                self.turn += 1;
                let n = s.message_count;
                let human = message(s, n + 1, Role::Human, "where is my order?", None);
                let ai = message(
                    s,
                    n + 2,
                    Role::Ai,
                    "It ships tomorrow; the tracking link follows by e-mail.",
                    Some(format!("k{}", self.turn)),
                );
                s.message_count = n + 2;
                s.last_activity = Utc::now();
                (s.clone(), [human, ai])
            })
            .collect()
    }
}

fn session(tenant: Uuid, agent: Uuid, user_id: String) -> Session {
    let now = Utc::now();
    Session {
        // Time-ordered ids keep a busy period's index entries together.
        id: Uuid::now_v7(),
        tenant_id: tenant,
        agent_id: agent,
        agent_version: 1,
        session_type: "chat".into(),
        mode: Mode::Regular,
        ext_type: "telegram".into(),
        user_id,
        name: Some("Ada".into()),
        email: None,
        phone: None,
        channel_id: Some("chan-1".into()),
        timeout: 86_400,
        user_timeout: Some(3600),
        greeting_text: None,
        start_phrase: None,
        language: Some("en".into()),
        llm_backend: Some("builtin".into()),
        workflow_state: "SalesSupport".into(),
        conversation_result: Default::default(),
        kwargs: Default::default(),
        user_info: serde_json::json!({"vip": false}),
        created_at: now,
        last_activity: now,
        closed_at: None,
        state: SessionState::Active,
        message_count: 0,
        assignee: None,
        channel: None,
    }
}

fn message(s: &Session, id: i64, role: Role, text: &str, key: Option<String>) -> Message {
    Message {
        id,
        session_id: s.id,
        role,
        text: text.into(),
        timestamp: Utc::now(),
        attachments: Vec::new(),
        metadata: serde_json::Value::Null,
        feedback: Feedback::None,
        idempotency_key: key,
    }
}

fn store_batch(turns: Vec<(Session, [Message; 2])>) -> Vec<SessionWrites> {
    turns
        .into_iter()
        .map(|(s, [human, ai])| SessionWrites {
            session: s.id,
            epoch: FIRST_EPOCH,
            writes: vec![
                Write::Session(Box::new(s)),
                Write::Message(Box::new(human)),
                Write::Message(Box::new(ai)),
            ],
        })
        .collect()
}

fn nanos(t: chrono::DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap()
}

/// A batch's rows as the baseline's statements bind them.
#[derive(Default)]
struct Columns {
    s_id: Vec<String>,
    s_tenant: Vec<String>,
    s_agent: Vec<String>,
    s_user: Vec<String>,
    s_ext_type: Vec<String>,
    s_state: Vec<&'static str>,
    s_deadline: Vec<Option<i64>>,
    s_created: Vec<i64>,
    s_data: Vec<String>,
    s_epoch: Vec<i64>,
    m_session: Vec<String>,
    m_id: Vec<i64>,
    m_role: Vec<&'static str>,
    m_text: Vec<String>,
    m_ts: Vec<i64>,
    m_attachments: Vec<Option<String>>,
    m_metadata: Vec<Option<String>>,
    m_feedback: Vec<&'static str>,
    m_key: Vec<Option<String>>,
}

impl Columns {
    fn new(turns: Vec<(Session, [Message; 2])>) -> Columns {
        let mut c = Columns::default();
        for (s, messages) in turns {
            c.s_id.push(s.id.to_string());
            c.s_tenant.push(s.tenant_id.to_string());
            c.s_agent.push(s.agent_id.to_string());
            c.s_ext_type.push(s.ext_type.clone());
            c.s_state.push(s.status_str());
            c.s_deadline
                .push(s.next_deadline().map(|t| t.timestamp_millis()));
            c.s_created.push(nanos(s.created_at));
            c.s_data.push(serde_json::to_string(&s).unwrap());
            c.s_epoch.push(FIRST_EPOCH);
            c.s_user.push(s.user_id);
            for m in messages {
                c.m_session.push(m.session_id.to_string());
                c.m_id.push(m.id);
                c.m_role.push(m.role.as_str());
                c.m_ts.push(nanos(m.timestamp));
                c.m_attachments.push(None);
                c.m_metadata.push(None);
                c.m_feedback.push("NONE");
                c.m_text.push(m.text);
                c.m_key.push(m.idempotency_key);
            }
        }
        c
    }

    async fn commit(self, pool: &sqlx::PgPool) {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(BARE_SESSIONS)
            .bind(self.s_id)
            .bind(self.s_tenant)
            .bind(self.s_agent)
            .bind(self.s_user)
            .bind(self.s_ext_type)
            .bind(self.s_state)
            .bind(self.s_deadline)
            .bind(self.s_created)
            .bind(self.s_data)
            .bind(self.s_epoch)
            .bind(nanos(Utc::now()))
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(BARE_MESSAGES)
            .bind(self.m_session)
            .bind(self.m_id)
            .bind(self.m_role)
            .bind(self.m_text)
            .bind(self.m_ts)
            .bind(self.m_attachments)
            .bind(self.m_metadata)
            .bind(self.m_feedback)
            .bind(self.m_key)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

//! Store round trips during a phase of a bench, counted from outside the product:
//! - statements: sqlx logs every statement it runs as a tracing event (target
//!   `sqlx::query`, at DEBUG unless the connect options say otherwise; parley's stores
//!   keep the default). A layer counts those events while counting is on. Statements the
//!   SQLite store runs through rusqlite on the writer's raw handle (the group commit and
//!   the message-index fold) are not seen here; they are the turn's own batch.
//! - SQLite write transactions: the WAL index (the `-shm` file) holds a counter that
//!   SQLite raises with each committed write transaction (sqlite.org/walformat.html,
//!   section 2.1, `iChange`), whichever connection or driver ran it.
//!
//! While counting is off the layer's filter answers "not enabled", so sqlx does not even
//! format its summaries and the timed phases run as they would without it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::Registry;

const TARGET: &str = "sqlx::query";

/// Counts the statements sqlx runs while [`StatementCounter::start`]ed.
#[derive(Default)]
pub struct StatementCounter {
    on: AtomicBool,
    /// Statement text (shortened) -> times run.
    seen: Mutex<HashMap<String, u64>>,
}

impl StatementCounter {
    /// Installs the process's tracing subscriber: this counter, and warnings and errors
    /// printed to stderr (a bench whose path fails should say why), but not sqlx's slow
    /// statements, which a loaded machine makes common.
    pub fn install() -> Arc<StatementCounter> {
        let counter = Arc::new(StatementCounter::default());
        let subscriber = Registry::default()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(
                        Targets::new()
                            .with_default(LevelFilter::WARN)
                            .with_target(TARGET, LevelFilter::OFF),
                    ),
            )
            .with(CountLayer(counter.clone()).with_filter(WhileOn(counter.clone())));
        tracing::subscriber::set_global_default(subscriber).expect("no subscriber yet");
        counter
    }

    /// Forgets what was counted and counts from now on.
    pub fn start(&self) {
        self.seen.lock().unwrap().clear();
        self.on.store(true, Ordering::SeqCst);
    }

    /// Stops counting; answers what was counted since [`StatementCounter::start`].
    pub fn stop(&self) -> Statements {
        self.on.store(false, Ordering::SeqCst);
        Statements(std::mem::take(&mut *self.seen.lock().unwrap()))
    }
}

/// What kind of round trip a statement is, by its first keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    /// The end of an explicit transaction. sqlx-postgres logs its COMMITs (not its
    /// BEGINs, which it queues unlogged); sqlx-sqlite logs neither (see
    /// [`sqlite_commits`]).
    Commit,
    /// ROLLBACK, savepoints, PRAGMA and the like.
    Other,
}

pub fn kind(statement: &str) -> Kind {
    let first = statement
        .split(|c: char| c.is_whitespace() || c == '(')
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_uppercase();
    match first.as_str() {
        "SELECT" | "WITH" | "VALUES" => Kind::Read,
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" => Kind::Write,
        "COMMIT" | "END" => Kind::Commit,
        _ => Kind::Other,
    }
}

/// The statements of one phase, by text.
#[derive(Debug, Default, Clone)]
pub struct Statements(pub HashMap<String, u64>);

impl Statements {
    pub fn count(&self, k: Kind) -> u64 {
        self.0
            .iter()
            .filter(|(s, _)| kind(s) == k)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Committed write transactions of the SQLite database at `db` so far (wrapping), read
/// from its WAL index; None if the database has no WAL index (not in WAL mode, not open).
pub fn sqlite_commits(db: &Path) -> Option<u32> {
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    let bytes = std::fs::read(shm).ok()?;
    // The header's fields are in the host's byte order.
    Some(u32::from_ne_bytes(bytes.get(8..12)?.try_into().ok()?))
}

struct WhileOn(Arc<StatementCounter>);

impl<S> Filter<S> for WhileOn {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.target() == TARGET && self.0.on.load(Ordering::Relaxed)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Asked again at each event (counting goes on and off), and only at sqlx's.
        if meta.target() == TARGET {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}

struct CountLayer(Arc<StatementCounter>);

impl<S: Subscriber> Layer<S> for CountLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut v = StatementText::default();
        event.record(&mut v);
        // sqlx gives the whole statement only when it is longer than its summary.
        let text = if v.statement.trim().is_empty() {
            v.summary
        } else {
            v.statement
        };
        let short: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(100)
            .collect();
        *self.0.seen.lock().unwrap().entry(short).or_default() += 1;
    }
}

#[derive(Default)]
struct StatementText {
    summary: String,
    statement: String,
}

impl Visit for StatementText {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

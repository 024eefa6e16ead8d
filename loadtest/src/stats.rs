//! What a run records while it runs: latencies, failures by kind, the sessions and their
//! turns (for the verification at the end), and live counters for the progress bar.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::verify::SessionRecord;

/// Why a request failed; its `Display` is the key errors are counted under, so it holds
/// categories, never free text that would make every error a kind of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A non-2xx answer with the API's JSON error code (`-` when the body had none).
    Http {
        status: u16,
        code: String,
    },
    Timeout,
    /// Connection refused or reset, a broken body, a closed socket.
    Transport(&'static str),
    /// An answer the harness cannot read.
    Protocol(&'static str),
}

impl Failure {
    pub fn from_reqwest(e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Transport("connect")
        } else if e.is_body() || e.is_decode() {
            Failure::Transport("body")
        } else {
            Failure::Transport("request")
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Http { status, code } => write!(f, "HTTP {status} {code}"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Transport(what) => write!(f, "transport: {what}"),
            Failure::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

/// A latency histogram in microseconds, from 1 µs to an hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

pub struct Tally {
    /// Acknowledged turns (or baseline requests).
    pub turns: Histogram<u64>,
    pub session_starts: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub sessions: Vec<SessionRecord>,
}

/// Shared by every customer of a run. Recording takes a mutex for a few hundred
/// nanoseconds, far below a turn's cost, so one lock does not skew what is measured.
pub struct Recorder {
    tally: Mutex<Tally>,
    turns_ok: AtomicU64,
    failures: AtomicU64,
    active: AtomicUsize,
    peak_active: AtomicUsize,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            turns: histogram(),
            session_starts: histogram(),
            errors: BTreeMap::new(),
            sessions: Vec::new(),
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            tally: Mutex::default(),
            turns_ok: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            peak_active: AtomicUsize::new(0),
        }
    }
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        f(&mut self.tally.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn turn(&self, latency: Duration) {
        self.with(|t| t.turns.saturating_record(micros(latency)));
        self.turns_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_started(&self, latency: Duration) {
        self.with(|t| t.session_starts.saturating_record(micros(latency)));
    }

    pub fn failure(&self, f: &Failure) {
        self.with(|t| *t.errors.entry(f.to_string()).or_default() += 1);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_done(&self, record: SessionRecord) {
        self.with(|t| t.sessions.push(record));
    }

    /// Counts a customer as active until the guard drops.
    pub fn active(&self) -> ActiveGuard<'_> {
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_active.fetch_max(now, Ordering::Relaxed);
        ActiveGuard(self)
    }

    pub fn turns_ok(&self) -> u64 {
        self.turns_ok.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn active_now(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn peak_active(&self) -> usize {
        self.peak_active.load(Ordering::Relaxed)
    }

    /// What was recorded so far; the recorder starts over empty.
    pub fn take(&self) -> Tally {
        self.with(std::mem::take)
    }
}

pub struct ActiveGuard<'a>(&'a Recorder);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

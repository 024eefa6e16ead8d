//! Every figure of a run, as one JSON object (`--json`) or a human summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::capacity::CapacityReport;
use crate::cli::{MockKind, Model, Spread, Transport};
use crate::stats::Tally;
use crate::verify::Findings;

/// Latency percentiles in milliseconds (recorded in microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        let ms = |us: f64| us.round() / 1000.0;
        let q = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q) as f64)
            }
        };
        LatencySummary {
            count: h.len(),
            mean_ms: if h.is_empty() { 0.0 } else { ms(h.mean()) },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p99_9_ms: q(0.999),
            max_ms: if h.is_empty() {
                0.0
            } else {
                ms(h.max() as f64)
            },
        }
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2}) ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p99_9_ms, self.max_ms, self.mean_ms
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    pub total: u64,
    /// `HTTP <status> <code>`, `timeout`, `transport: …`, `protocol: …`.
    pub by_kind: BTreeMap<String, u64>,
}

impl Errors {
    fn of(t: &Tally) -> Errors {
        Errors {
            total: t.errors.values().sum(),
            by_kind: t.errors.clone(),
        }
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.total)?;
        if !self.by_kind.is_empty() {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}

/// What the run was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub model: Model,
    pub transport: Transport,
    pub sessions: Option<usize>,
    pub turns: u32,
    /// Open model only.
    pub rate: Option<f64>,
    pub duration_secs: Option<f64>,
    pub ramp_up_secs: f64,
    pub think_ms: String,
    pub targets: Vec<String>,
    /// The harness started the target itself.
    pub spawned_server: bool,
    pub spread: Spread,
    pub llm_mock: Option<MockKind>,
    pub llm_latency_ms: Option<String>,
}

/// What the parley run (or capacity mode's opening phase) did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub elapsed_secs: f64,
    pub sessions_started: u64,
    pub turns_ok: u64,
    pub turns_per_sec: f64,
    pub latency: LatencySummary,
    pub session_start_latency: LatencySummary,
    pub errors: Errors,
    pub peak_active_sessions: usize,
    /// Requests the mock LLM answered.
    pub llm_mock_calls: Option<u64>,
}

impl LoadReport {
    pub fn new(
        t: &Tally,
        elapsed: Duration,
        peak_active: usize,
        llm_mock_calls: Option<u64>,
    ) -> Self {
        LoadReport {
            elapsed_secs: elapsed.as_secs_f64(),
            sessions_started: t.session_starts.len(),
            turns_ok: t.turns.len(),
            turns_per_sec: per_sec(t.turns.len(), elapsed),
            latency: LatencySummary::of(&t.turns),
            session_start_latency: LatencySummary::of(&t.session_starts),
            errors: Errors::of(t),
            peak_active_sessions: peak_active,
            llm_mock_calls,
        }
    }
}

/// The bare echo server under the same client load.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub concurrency: usize,
    pub elapsed_secs: f64,
    pub requests_ok: u64,
    pub requests_per_sec: f64,
    pub latency: LatencySummary,
    pub errors: Errors,
}

impl BaselineReport {
    pub fn new(t: &Tally, elapsed: Duration, concurrency: usize) -> Self {
        BaselineReport {
            concurrency,
            elapsed_secs: elapsed.as_secs_f64(),
            requests_ok: t.turns.len(),
            requests_per_sec: per_sec(t.turns.len(), elapsed),
            latency: LatencySummary::of(&t.turns),
            errors: Errors::of(t),
        }
    }
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: RunConfig,
    pub load: LoadReport,
    pub verification: Option<Findings>,
    pub baseline: Option<BaselineReport>,
    /// parley turns/s ÷ bare echo requests/s.
    pub ratio: Option<f64>,
    pub capacity: Option<CapacityReport>,
}

impl Report {
    /// False when verification found anything: the process then exits non-zero.
    pub fn passed(&self) -> bool {
        self.verification.as_ref().is_none_or(Findings::clean)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let l = &self.load;
        let backend = match (c.llm_mock, &c.llm_latency_ms) {
            (Some(kind), Some(lat)) => {
                let kind = match kind {
                    MockKind::Webhook => "webhook",
                    MockKind::Openai => "openai",
                };
                format!("mock {kind} LLM ({lat} ms)")
            }
            _ => "builtin backend".into(),
        };
        let server = if c.spawned_server { " (spawned)" } else { "" };
        if let Some(cap) = &self.capacity {
            writeln!(
                f,
                "capacity: {} sessions with {} turn(s) each over {}, {} target(s){server}",
                cap.sessions_requested,
                cap.turns_per_session,
                c.transport,
                c.targets.len()
            )?;
            writeln!(
                f,
                "  opened       {} in {:.2} s, errors {}",
                cap.sessions_opened, l.elapsed_secs, l.errors
            )?;
            writeln!(
                f,
                "  RSS          {:.1} MiB -> {:.1} MiB; resident sessions {} -> {} (after {} s)",
                cap.before.rss_bytes / 1048576.0,
                cap.after.rss_bytes / 1048576.0,
                cap.before.resident_sessions,
                cap.after.resident_sessions,
                cap.hold_secs
            )?;
            let bytes = |b: Option<f64>| b.map_or("n/a".into(), |b| format!("{b:.0} B"));
            writeln!(
                f,
                "  per session  {} per open session, {} per resident session",
                bytes(cap.bytes_per_open_session),
                bytes(cap.bytes_per_resident_session)
            )?;
            return Ok(());
        }
        let shape = match c.model {
            Model::Closed => format!(
                "closed model, {} customers x {} turns",
                c.sessions.unwrap_or(0),
                c.turns
            ),
            Model::Open => format!(
                "open model, {}/s new sessions of {} turns",
                c.rate.unwrap_or(0.0),
                c.turns
            ),
        };
        writeln!(
            f,
            "{shape} over {}, {} target(s){server}, {backend}, think {} ms",
            c.transport,
            c.targets.len(),
            c.think_ms
        )?;
        writeln!(
            f,
            "  throughput   {} turns in {:.2} s = {:.1} turns/s",
            l.turns_ok, l.elapsed_secs, l.turns_per_sec
        )?;
        writeln!(f, "  latency      {}", l.latency)?;
        writeln!(
            f,
            "  sessions     {} started (peak {} at once); start {}",
            l.sessions_started, l.peak_active_sessions, l.session_start_latency
        )?;
        writeln!(f, "  errors       {}", l.errors)?;
        if let Some(calls) = l.llm_mock_calls {
            writeln!(f, "  mock LLM     {calls} requests")?;
        }
        if let Some(v) = &self.verification {
            writeln!(
                f,
                "  history      {} sessions read: {} lost, {} duplicated, {} reordered, {} unexpected, {} unreadable -> {}",
                v.sessions_checked,
                v.lost,
                v.duplicated,
                v.reordered,
                v.unexpected,
                v.unreadable,
                if v.clean() { "OK" } else { "FAILED" }
            )?;
        }
        if let Some(b) = &self.baseline {
            writeln!(
                f,
                "  baseline     bare axum echo, {} concurrent, {:.2} s: {:.1} requests/s, {}; errors {}",
                b.concurrency, b.elapsed_secs, b.requests_per_sec, b.latency, b.errors
            )?;
        }
        if let Some(r) = self.ratio {
            writeln!(
                f,
                "  ratio        {r:.3} (parley turns/s / bare requests/s)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::histogram;

    #[test]
    fn percentiles_of_known_samples() {
        let mut h = histogram();
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let s = LatencySummary::of(&h);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert_eq!(s.count, 1000);
        assert!(near(s.p50_ms, 500.0), "{s:?}");
        assert!(near(s.p90_ms, 900.0), "{s:?}");
        assert!(near(s.p99_ms, 990.0), "{s:?}");
        assert!(near(s.p99_9_ms, 999.0), "{s:?}");
        assert!(near(s.max_ms, 1000.0), "{s:?}");
        assert!(near(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn a_tail_shows_only_in_the_high_percentiles() {
        let mut h = histogram();
        for _ in 0..995 {
            h.record(2_000).unwrap();
        }
        for _ in 0..5 {
            h.record(250_000).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (2.0, 2.0, 2.0));
        assert!((s.p99_9_ms - 250.0).abs() < 0.25, "{s:?}");
        assert!((s.max_ms - 250.0).abs() < 0.25, "{s:?}");
    }

    #[test]
    fn an_empty_histogram_is_all_zero() {
        let s = LatencySummary::of(&histogram());
        assert_eq!(s.count, 0);
        assert_eq!((s.p50_ms, s.max_ms, s.mean_ms), (0.0, 0.0, 0.0));
    }

    #[test]
    fn throughput_is_per_second_of_the_run() {
        let mut t = Tally::default();
        for _ in 0..300 {
            t.turns.record(1_000).unwrap();
        }
        *t.errors.entry("HTTP 503 unavailable".into()).or_default() += 2;
        let r = LoadReport::new(&t, Duration::from_millis(1500), 10, None);
        assert_eq!(r.turns_ok, 300);
        assert!((r.turns_per_sec - 200.0).abs() < 1e-9);
        assert_eq!(r.errors.total, 2);
    }
}

//! Capacity mode: open K sessions, hold them, and divide the growth of the servers' own
//! resident memory (GET /metrics, Prometheus text) by the sessions opened and by the
//! sessions that became resident.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::Transport;
use crate::client::{Chat, WsSession};
use crate::progress;
use crate::stats::Recorder;
use crate::verify::message_text;

pub const RSS_METRIC: &str = "parley_process_resident_memory_bytes";
pub const RESIDENT_METRIC: &str = "parley_sessions_resident";

/// The sum of every series of metric `name` in Prometheus text exposition format.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `rest` must continue this name, not a longer one (`name_total`).
        let value_part = if rest.starts_with('{') {
            &rest[rest.rfind('}')? + 1..]
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue;
        };
        let v: f64 = value_part.split_whitespace().next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// Memory and resident sessions, summed over the targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scrape {
    pub rss_bytes: f64,
    pub resident_sessions: f64,
}

pub async fn scrape(http: &reqwest::Client, targets: &[String]) -> anyhow::Result<Scrape> {
    let mut total = Scrape {
        rss_bytes: 0.0,
        resident_sessions: 0.0,
    };
    for t in targets {
        let url = format!("{t}/metrics");
        let resp = http.get(&url).send().await.with_context(|| url.clone())?;
        anyhow::ensure!(
            resp.status().is_success(),
            "GET {url}: {} (does this parley serve /metrics?)",
            resp.status()
        );
        let text = resp.text().await.with_context(|| url.clone())?;
        let get = |name: &str| {
            metric_value(&text, name).with_context(|| format!("GET {url}: no {name} in the answer"))
        };
        total.rss_bytes += get(RSS_METRIC)?;
        total.resident_sessions += get(RESIDENT_METRIC)?;
    }
    Ok(total)
}

#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub sessions_requested: usize,
    pub sessions_opened: u64,
    pub turns_per_session: u32,
    /// How long opening the sessions (and their turns) took.
    pub opening_secs: f64,
    pub hold_secs: f64,
    pub before: Scrape,
    pub after: Scrape,
    /// RSS growth ÷ sessions opened.
    pub bytes_per_open_session: Option<f64>,
    /// RSS growth ÷ growth of `parley_sessions_resident`.
    pub bytes_per_resident_session: Option<f64>,
}

/// How capacity mode opens its sessions.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sessions: usize,
    pub turns: u32,
    pub transport: Transport,
    pub concurrency: usize,
    pub hold: Duration,
}

pub async fn run(
    chat: &Chat,
    http: &reqwest::Client,
    targets: &[String],
    plan: &Plan,
    rec: &Recorder,
) -> anyhow::Result<CapacityReport> {
    let before = scrape(http, targets).await?;
    let bar = progress::counter("opening", plan.sessions as u64);
    let started = Instant::now();
    // Open sockets are kept here: a session with a socket and a turn stays resident where
    // it is (in a cluster the socket alone keeps it).
    let opened: Vec<Option<WsSession>> = futures::stream::iter(0..plan.sessions)
        .map(|i| open_one(chat, plan, rec, i))
        .buffer_unordered(plan.concurrency.max(1))
        .inspect(|_| bar.inc(1))
        .filter_map(|session| async move { session })
        .collect()
        .await;
    let opening = started.elapsed();
    bar.finish_and_clear();
    tokio::time::sleep(plan.hold).await;
    let after = scrape(http, targets).await?;
    let opened_count = opened.len() as u64;
    for socket in opened.into_iter().flatten() {
        socket.close().await;
    }
    let growth = after.rss_bytes - before.rss_bytes;
    let resident = after.resident_sessions - before.resident_sessions;
    Ok(CapacityReport {
        sessions_requested: plan.sessions,
        sessions_opened: opened_count,
        turns_per_session: plan.turns,
        opening_secs: opening.as_secs_f64(),
        hold_secs: plan.hold.as_secs_f64(),
        before,
        after,
        bytes_per_open_session: (opened_count > 0).then(|| growth / opened_count as f64),
        bytes_per_resident_session: (resident > 0.0).then(|| growth / resident),
    })
}

/// Opens session `i` and sends its turns. None: it could not be opened; Some holds its
/// socket over WebSocket.
async fn open_one(chat: &Chat, plan: &Plan, rec: &Recorder, i: usize) -> Option<Option<WsSession>> {
    let t0 = Instant::now();
    let id = chat
        .open_session(chat.pick(i))
        .await
        .map_err(|f| rec.failure(&f))
        .ok()?;
    rec.session_started(t0.elapsed());
    let mut socket = match plan.transport {
        Transport::Rest => None,
        Transport::Ws => Some(
            chat.connect_ws(chat.pick(i), &id)
                .await
                .map_err(|f| rec.failure(&f))
                .ok()?,
        ),
    };
    for seq in 1..=plan.turns {
        let t0 = Instant::now();
        let result = match &mut socket {
            Some(ws) => ws.turn(seq, chat.timeout()).await,
            None => chat.send_rest(chat.pick(i), &id, &message_text(seq)).await,
        };
        match result {
            Ok(()) => rec.turn(t0.elapsed()),
            Err(f) => rec.failure(&f),
        }
    }
    Some(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP parley_process_resident_memory_bytes Resident set size of the process.
# TYPE parley_process_resident_memory_bytes gauge
parley_process_resident_memory_bytes 123456789
# TYPE parley_sessions_resident gauge
parley_sessions_resident{shard=\"0\"} 40
parley_sessions_resident{shard=\"1\"} 2 1700000000000
parley_sessions_resident_total 999
parley_turns_total 7e3
";

    #[test]
    fn reads_gauges_and_sums_their_series() {
        assert_eq!(metric_value(TEXT, RSS_METRIC), Some(123_456_789.0));
        assert_eq!(metric_value(TEXT, RESIDENT_METRIC), Some(42.0));
        assert_eq!(metric_value(TEXT, "parley_turns_total"), Some(7000.0));
        assert_eq!(metric_value(TEXT, "parley_missing"), None);
    }
}

//! Command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::distribution::Dist;

/// Drives simulated customers against parley's Chat API and reports throughput, latency,
/// errors and whether every acknowledged turn is in the history, once and in order.
#[derive(Debug, Clone, Parser)]
#[command(name = "parley-loadtest", version)]
pub struct Args {
    /// A parley node to drive (repeat for a cluster). Without it, a `parley serve` is
    /// spawned on a free port with a fresh data dir and stopped at the end.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,

    /// The tenant's admin key on the targets (the harness creates its own agent).
    #[arg(long, env = "PARLEY_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// The `parley` binary to spawn (default: `parley` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub parley_bin: Option<PathBuf>,

    /// An extra argument for the spawned `parley serve` (repeatable), e.g.
    /// `--server-arg=--shards=8`.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,

    #[arg(long, value_enum, default_value_t = Transport::Rest)]
    pub transport: Transport,

    #[arg(long, value_enum, default_value_t = Model::Closed)]
    pub model: Model,

    /// Closed model: concurrent customers (default 200). Open model: sessions started in
    /// all (default 200, or unlimited with --duration).
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,

    /// Customer messages per session.
    #[arg(long, value_name = "M", default_value_t = 20)]
    pub turns: u32,

    /// Open model: new sessions per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 50.0)]
    pub rate: f64,

    /// Stop starting turns after this many seconds; closed-model customers start new
    /// sessions until then.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Closed model: customers start evenly spread over this time. Open model: the
    /// arrival rate climbs linearly to --rate over it.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub ramp_up: f64,

    /// Pause between a reply and the customer's next message: MS, fixed:MS,
    /// uniform:MIN-MAX or exp:MEAN.
    #[arg(long, value_name = "DIST", default_value = "0")]
    pub think_ms: Dist,

    /// Which target gets a customer's requests: all to one (customers spread round-robin),
    /// or each to a random one (exercises cluster forwarding).
    #[arg(long, value_enum, default_value_t = Spread::Session)]
    pub spread: Spread,

    /// Per-request timeout.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout_secs: f64,

    /// Run a mock LLM backend in this process and give the agent that backend.
    #[arg(long, value_enum)]
    pub llm_mock: Option<MockKind>,

    /// The mock LLM's latency before it answers: MS, fixed:MS, uniform:MIN-MAX or
    /// exp:MEAN.
    #[arg(long, value_name = "DIST", default_value = "20")]
    pub llm_latency_ms: Dist,

    /// Where the mock LLM listens; must be reachable from the targets.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub llm_mock_listen: SocketAddr,

    /// Skip the bare echo-server baseline.
    #[arg(long)]
    pub no_baseline: bool,

    /// Skip reading every session's history at the end.
    #[arg(long)]
    pub no_verify: bool,

    /// Capacity mode: open this many sessions, hold them, and report the server's memory
    /// per session (from GET /metrics) instead of driving turns.
    #[arg(long, value_name = "K")]
    pub capacity: Option<usize>,

    /// Capacity mode: turns sent in each session after opening it (0 = none).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub capacity_turns: u32,

    /// Capacity mode: how long the sessions are held before memory is read again.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub hold_secs: f64,

    /// Print one JSON object with every figure instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// POST run_v2 per message.
    Rest,
    /// One WebSocket per session; a turn ends with the AI message event.
    Ws,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Rest => "REST",
            Transport::Ws => "WebSocket",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// A fixed number of customers, each sending its next message after the last reply.
    Closed,
    /// New sessions arrive at a fixed rate, however slow the server gets.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Every request of a customer to one target; customers round-robin over them.
    Session,
    /// Each request (session start, turn, WebSocket) to a random target.
    Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MockKind {
    /// The webhook contract: one JSON answer.
    Webhook,
    /// OpenAI-compatible /v1/chat/completions, streamed.
    Openai,
}

impl Args {
    /// Closed model: the concurrency; open model: the number of arrivals (None: until
    /// --duration).
    pub fn session_count(&self) -> Option<usize> {
        match (self.sessions, self.model, self.duration) {
            (Some(n), _, _) => Some(n),
            (None, Model::Open, Some(_)) => None,
            (None, _, _) => Some(200),
        }
    }

    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }

    pub fn ramp_up(&self) -> Duration {
        Duration::from_secs_f64(self.ramp_up)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    /// Checks what clap cannot: value ranges and flags that only make sense together.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.targets.is_empty() || self.admin_key.is_some(),
            "--target needs --admin-key (or PARLEY_ADMIN_KEY)"
        );
        anyhow::ensure!(self.turns > 0, "--turns must be at least 1");
        anyhow::ensure!(
            self.session_count() != Some(0),
            "--sessions must be at least 1"
        );
        anyhow::ensure!(
            self.model == Model::Closed || (self.rate.is_finite() && self.rate > 0.0),
            "--rate must be a positive number"
        );
        for (flag, v) in [
            ("--duration", self.duration.unwrap_or(1.0)),
            ("--timeout-secs", self.timeout_secs),
        ] {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{flag} must be positive");
        }
        for (flag, v) in [("--ramp-up", self.ramp_up), ("--hold-secs", self.hold_secs)] {
            anyhow::ensure!(v.is_finite() && v >= 0.0, "{flag} must not be negative");
        }
        anyhow::ensure!(
            self.capacity != Some(0),
            "--capacity must be at least 1 session"
        );
        Ok(())
    }
}

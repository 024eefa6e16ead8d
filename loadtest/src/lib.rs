//! parley's load harness: simulated customers over the Chat API (REST or WebSocket) in a
//! closed or open model, an optional mock LLM backend, a bare echo-server baseline, an
//! ordering/completeness check of every session's history, and a capacity mode that reads
//! the server's memory per session.

pub mod agent;
pub mod baseline;
pub mod capacity;
pub mod cli;
pub mod client;
pub mod distribution;
pub mod mock_llm;
pub mod models;
pub mod progress;
pub mod report;
pub mod server;
pub mod stats;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use cli::{Args, Model};
use client::{Chat, Script};
use mock_llm::MockLlm;
use progress::{Goal, LiveProgress};
use report::{BaselineReport, LoadReport, Report, RunConfig};
use stats::Recorder;

/// Histories read at once during verification.
const VERIFY_CONCURRENCY: usize = 32;

/// Runs what `args` ask for and reports it. Verification findings are in the report
/// ([`Report::passed`]); errors are for runs that could not be carried out.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    args.validate()?;
    let http = reqwest::Client::new();
    let mock = match args.llm_mock {
        Some(_) => Some(MockLlm::start(args.llm_mock_listen, args.llm_latency_ms).await?),
        None => None,
    };
    if args.targets.is_empty() {
        let binary = match &args.parley_bin {
            Some(p) => p.clone(),
            None => server::default_binary()?,
        };
        let mut extra = args.server_args.clone();
        if args.capacity.is_some() && !extra.iter().any(|a| a.starts_with("--passivate-after")) {
            // Held sessions must stay resident until memory is read again.
            extra.extend(["--passivate-after".into(), "86400".into()]);
        }
        // Every simulated customer comes from this one address with one agent's token:
        // the node's opening limits would measure themselves, not the engine.
        for flag in ["--open-rate-per-credential", "--open-rate-per-address"] {
            if !extra.iter().any(|a| a.starts_with(flag)) {
                extra.extend([flag.into(), "0".into()]);
            }
        }
        // The mock LLM listens on loopback, which the node's egress policy denies.
        if mock.is_some() {
            extra.extend(["--egress-allow".into(), "127.0.0.0/8".into()]);
        }
        let spawned = server::spawn(binary, &extra).await?;
        let targets = [spawned.url.clone()];
        let report = drive(
            &args,
            &http,
            &targets,
            &spawned.admin_key,
            mock.as_ref(),
            true,
        )
        .await;
        spawned.stop().await;
        return report;
    }
    let admin_key = args
        .admin_key
        .as_deref()
        .context("--target needs --admin-key")?;
    let targets: Vec<String> = args
        .targets
        .iter()
        .map(|t| t.trim_end_matches('/').to_string())
        .collect();
    drive(&args, &http, &targets, admin_key, mock.as_ref(), false).await
}

async fn drive(
    args: &Args,
    http: &reqwest::Client,
    targets: &[String],
    admin_key: &str,
    mock: Option<&MockLlm>,
    spawned: bool,
) -> anyhow::Result<Report> {
    let backend = args.llm_mock.zip(mock.map(|m| m.url.as_str()));
    let agent = agent::create(http, &targets[0], admin_key, agent::definition(backend)).await?;
    let chat = Arc::new(Chat::new(
        http.clone(),
        targets,
        agent,
        args.spread,
        args.timeout(),
    ));
    let rec = Arc::new(Recorder::default());
    let config = run_config(args, targets, spawned);
    let mock_calls = || mock.map(MockLlm::calls);

    if let Some(sessions) = args.capacity {
        let plan = capacity::Plan {
            sessions,
            turns: args.capacity_turns,
            transport: args.transport,
            concurrency: args.session_count().unwrap_or(sessions),
            hold: Duration::from_secs_f64(args.hold_secs),
        };
        let cap = capacity::run(&chat, http, targets, &plan, &rec).await?;
        let opening = Duration::from_secs_f64(cap.opening_secs);
        return Ok(Report {
            config,
            load: LoadReport::new(&rec.take(), opening, rec.peak_active(), mock_calls()),
            verification: None,
            baseline: None,
            ratio: None,
            capacity: Some(cap),
        });
    }

    let plan = models::Plan {
        model: args.model,
        sessions: args.session_count(),
        rate: args.rate,
        duration: args.duration(),
        ramp_up: args.ramp_up(),
    };
    let script = Arc::new(Script {
        transport: args.transport,
        turns: args.turns,
        think: args.think_ms,
    });
    let goal = match plan.duration {
        Some(d) => Goal::Time(d),
        None => Goal::Turns(plan.sessions.unwrap_or(0) as u64 * u64::from(args.turns)),
    };
    let elapsed = {
        let _bar = LiveProgress::start("parley", goal, rec.clone());
        models::drive(chat.clone(), script, rec.clone(), &plan).await?
    };
    let tally = rec.take();
    let load = LoadReport::new(&tally, elapsed, rec.peak_active(), mock_calls());

    let verification = if args.no_verify {
        None
    } else {
        let bar = progress::counter("history", tally.sessions.len() as u64);
        let found =
            verify::verify_all(&chat, &tally.sessions, VERIFY_CONCURRENCY, || bar.inc(1)).await;
        bar.finish_and_clear();
        Some(found)
    };

    let baseline = if args.no_baseline {
        None
    } else {
        let echo = baseline::EchoServer::start().await?;
        let load = baseline::Load {
            transport: args.transport,
            // The concurrency the parley run reached (the open model has no fixed one).
            concurrency: load.peak_active_sessions.max(1),
            duration: elapsed,
            think: args.think_ms,
            timeout: args.timeout(),
        };
        let brec = Arc::new(Recorder::default());
        let took = {
            let _bar = LiveProgress::start("baseline", Goal::Time(elapsed), brec.clone());
            baseline::drive(http.clone(), &echo.url, &load, brec.clone()).await?
        };
        Some(BaselineReport::new(&brec.take(), took, load.concurrency))
    };
    let ratio = baseline
        .as_ref()
        .filter(|b| b.requests_per_sec > 0.0)
        .map(|b| load.turns_per_sec / b.requests_per_sec);
    Ok(Report {
        config,
        load,
        verification,
        baseline,
        ratio,
        capacity: None,
    })
}

fn run_config(args: &Args, targets: &[String], spawned: bool) -> RunConfig {
    RunConfig {
        model: args.model,
        transport: args.transport,
        sessions: args.capacity.or(args.session_count()),
        turns: args.capacity.map_or(args.turns, |_| args.capacity_turns),
        rate: (args.model == Model::Open).then_some(args.rate),
        duration_secs: args.duration,
        ramp_up_secs: args.ramp_up,
        think_ms: args.think_ms.to_string(),
        targets: targets.to_vec(),
        spawned_server: spawned,
        spread: args.spread,
        llm_mock: args.llm_mock,
        llm_latency_ms: args.llm_mock.map(|_| args.llm_latency_ms.to_string()),
    }
}

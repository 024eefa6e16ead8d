//! `parley tree`: a node's live actor tree in the terminal, from the admin API.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct TreeArgs {
    pub url: String,
    pub admin_key: String,
    /// Only actors of this kind (a flat list).
    pub kind: Option<String>,
    /// Levels below the node to show.
    pub depth: usize,
    /// Children shown per actor.
    pub limit: usize,
}

async fn page(
    http: &reqwest::Client,
    args: &TreeArgs,
    query: &[(&str, String)],
) -> anyhow::Result<Value> {
    let url = format!("{}/api/v1/admin/actors", args.url.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .bearer_auth(&args.admin_key)
        .query(query)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.context("reading the answer")?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body["error"]["message"]
                .as_str()
                .unwrap_or("unexpected answer")
        );
    }
    Ok(body)
}

/// One actor as a line: id, kind, status, mailbox, restarts, uptime, children.
pub fn line(a: &Value) -> String {
    let mut s = format!(
        "{} [{}] {}",
        a["id"].as_str().unwrap_or("?"),
        a["kind"].as_str().unwrap_or("?"),
        a["status"].as_str().unwrap_or("?")
    );
    if let Some(m) = a["mailbox"].as_u64() {
        let _ = write!(s, "  mailbox {m}");
    }
    let _ = write!(
        s,
        "  restarts {}  up {}s",
        a["restarts"].as_u64().unwrap_or(0),
        a["uptime_secs"].as_u64().unwrap_or(0)
    );
    if let Some(c) = a["children"].as_u64().filter(|&c| c > 0) {
        let _ = write!(s, "  children {c}");
    }
    s
}

/// Renders the tree under `root`, fetching children level by level.
pub async fn render(args: &TreeArgs) -> anyhow::Result<String> {
    // The operator names the node to ask: no egress policy, short timeouts.
    let timeouts = parley_engine::egress::Timeouts {
        total: Duration::from_secs(10),
        ..parley_engine::egress::Timeouts::default()
    };
    let http = parley_engine::egress::builder(None, timeouts)
        .build()
        .context("building the HTTP client")?;
    let limit = args.limit.to_string();
    let mut out = String::new();
    if let Some(kind) = &args.kind {
        let p = page(&http, args, &[("kind", kind.clone()), ("limit", limit)]).await?;
        let _ = writeln!(out, "{} actors of kind {kind}", p["total"]);
        for a in p["children"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  {}", line(a));
        }
        return Ok(out);
    }
    let root = page(&http, args, &[("limit", limit.clone())]).await?;
    let _ = writeln!(out, "{}", line(&root["actor"]));
    Box::pin(children(&http, args, &root, "", 1, &mut out)).await?;
    Ok(out)
}

async fn children(
    http: &reqwest::Client,
    args: &TreeArgs,
    page_of: &Value,
    prefix: &str,
    level: usize,
    out: &mut String,
) -> anyhow::Result<()> {
    let list = page_of["children"].as_array().cloned().unwrap_or_default();
    let total = page_of["total"].as_u64().unwrap_or(list.len() as u64);
    let more = total.saturating_sub(list.len() as u64);
    for (i, a) in list.iter().enumerate() {
        let last = i + 1 == list.len() && more == 0;
        let _ = writeln!(
            out,
            "{prefix}{}{}",
            if last { "└─ " } else { "├─ " },
            line(a)
        );
        if level < args.depth && a["children"].as_u64().unwrap_or(0) > 0 {
            let id = a["id"].as_str().unwrap_or_default().to_string();
            let sub = page(
                http,
                args,
                &[("parent", id), ("limit", args.limit.to_string())],
            )
            .await?;
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            Box::pin(children(http, args, &sub, &deeper, level + 1, out)).await?;
        }
    }
    if more > 0 {
        let _ = writeln!(out, "{prefix}└─ … {more} more");
    }
    Ok(())
}

/// Prints the tree once, or every `watch` until interrupted.
pub async fn run(args: TreeArgs, watch: Option<Duration>) -> anyhow::Result<()> {
    let Some(every) = watch else {
        print!("{}", render(&args).await?);
        return Ok(());
    };
    loop {
        let text = match render(&args).await {
            Ok(t) => t,
            Err(e) => format!("error: {e:#}\n"),
        };
        // Clear the screen and redraw in place.
        print!("\x1b[2J\x1b[H{text}");
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

//! Spawning a `parley serve` of our own when no target is given: a free port, a fresh data
//! dir, a random admin key; killed at the end.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use rand::distributions::{Alphanumeric, DistString};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct SpawnedServer {
    pub url: String,
    pub admin_key: String,
    child: Child,
    // Removed when the server is dropped, after the process is gone.
    _data_dir: tempfile::TempDir,
}

/// `parley` beside this executable: `cargo build --release` puts both in target/release.
pub fn default_binary() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(format!("parley{}", std::env::consts::EXE_SUFFIX)))
}

pub async fn spawn(binary: PathBuf, extra_args: &[String]) -> anyhow::Result<SpawnedServer> {
    let data_dir = tempfile::Builder::new()
        .prefix("parley-loadtest-")
        .tempdir()?;
    let admin_key = format!(
        "pk_load_{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    );
    let mut cmd = Command::new(&binary);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-examples", "--admin-key"])
        .arg(&admin_key)
        .arg("--data-dir")
        .arg(data_dir.path());
    // Its info logs would scroll through the progress bar; errors still show.
    if !extra_args.iter().any(|a| a.starts_with("--log-level")) {
        cmd.args(["--log-level", "error"]);
    }
    cmd.args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (build it, or pass --parley-bin)",
            binary.display()
        )
    })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some((_, url)) = line.split_once("listening on ") {
                return Ok(url.trim().to_string());
            }
        }
        anyhow::bail!("{} exited before listening", binary.display())
    })
    .await
    .context("parley did not report its address within 60 s")??;
    // Keep reading so the banner that follows never fills the pipe and blocks the server.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(SpawnedServer {
        url,
        admin_key,
        child,
        _data_dir: data_dir,
    })
}

impl SpawnedServer {
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

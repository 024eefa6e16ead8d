//! The progress bar (on stderr; indicatif draws nothing when stderr is not a terminal).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::Recorder;

/// How a phase's progress is measured.
pub enum Goal {
    /// Turns (acknowledged or failed) out of a known total.
    Turns(u64),
    /// Time elapsed out of the phase's duration.
    Time(Duration),
}

/// Redraws the bar from the recorder's counters until dropped.
pub struct LiveProgress {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

impl LiveProgress {
    pub fn start(label: &'static str, goal: Goal, rec: Arc<Recorder>) -> LiveProgress {
        let (len, template) = match goal {
            Goal::Turns(n) => (
                n,
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            ),
            Goal::Time(d) => (
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                "{prefix} [{elapsed_precise}] {wide_bar} {percent}% {msg}",
            ),
        };
        let bar = ProgressBar::new(len)
            .with_prefix(label)
            .with_style(ProgressStyle::with_template(template).expect("valid progress template"));
        let by_time = matches!(goal, Goal::Time(_));
        let (b, started) = (bar.clone(), Instant::now());
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let (ok, failed) = (rec.turns_ok(), rec.failures());
                b.set_position(if by_time {
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
                } else {
                    ok + failed
                });
                b.set_message(format!(
                    "{ok} ok, {failed} errors, {} active",
                    rec.active_now()
                ));
            }
        });
        LiveProgress { bar, ticker }
    }
}

impl Drop for LiveProgress {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// A plain counting bar (history reads, sessions opened).
pub fn counter(label: &'static str, len: u64) -> ProgressBar {
    ProgressBar::new(len).with_prefix(label).with_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .expect("valid progress template"),
    )
}

//! Progress display: a bar on a terminal (files done, found so far, rate, workers alive, memory),
//! plain log lines otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    last_log: Instant,
    started: Instant,
}

pub struct Snapshot {
    pub done: u64,
    pub found: u64,
    pub scan_finished: bool,
    pub workers_alive: usize,
    pub busy: usize,
    pub memory_share: f64,
    pub workers_rss: u64,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        });
        Progress {
            bar,
            last_log: Instant::now(),
            started: Instant::now(),
        }
    }

    pub fn update(&mut self, s: &Snapshot) {
        let msg = format!(
            "workers {} ({} busy, {}) mem {:.0}%{}",
            s.workers_alive,
            s.busy,
            crate::units::format_size(s.workers_rss),
            s.memory_share * 100.0,
            if s.scan_finished { "" } else { " scanning…" }
        );
        if let Some(b) = &self.bar {
            b.set_length(s.found);
            b.set_position(s.done);
            b.set_message(msg);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = s.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(
                "progress: {}/{} files, {rate:.1} files/s, {msg}",
                s.done,
                s.found
            );
        }
    }

    /// Prints a line above the bar (or logs it).
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

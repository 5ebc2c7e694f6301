//! One file through one fresh worker, for `trackmill inspect`: a one-slot worker `Pool` with the
//! scan's own spawning, hello check, deadline and termination ladder, and exit classification.
//! Nothing is stored.

use crate::config::Config;
use crate::event::Event;
use crate::pool::{FileJob, OsProcesses, Pool, PoolSettings, Reply};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use trackmill_types::{FileKey, FileStats, Outcome, PathBytes, TrackAnalysis};

/// How inspect's worker is started: as a scan's workers are.
pub struct InspectSpawn {
    pub exe: PathBuf,
    /// The worker subcommand's arguments (models included); `--recycle-after 1` is added.
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub gpu: bool,
}

/// What happened to one inspected file.
pub enum InspectResult {
    Analyzed(Box<TrackAnalysis>, FileStats),
    /// The worker answered with a classified failure, or died (then `stats` is `None`).
    Failed {
        class: &'static str,
        stage: &'static str,
        message: String,
        stats: Option<FileStats>,
    },
}

impl InspectResult {
    fn worker(message: String) -> Self {
        InspectResult::Failed {
            class: "crash",
            stage: "worker",
            message,
            stats: None,
        }
    }
}

const TICK: Duration = Duration::from_millis(50);

/// Analyses `path` in a fresh worker that exits after it (`--recycle-after 1`): hello, job,
/// result, exit. A worker that dies is classified as the supervisor would classify it.
pub async fn inspect_file(spawn: &InspectSpawn, path: &Path, cfg: &Config) -> InspectResult {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let procs = OsProcesses {
        exe: spawn.exe.clone(),
        args: spawn.args.clone(),
        env: spawn.env.clone(),
        gpu: spawn.gpu,
        events: events_tx,
    };
    let settings = PoolSettings {
        recycle_after: 1,
        ..PoolSettings::new(cfg)
    };
    let mut pool = Pool::new(procs, 1, settings, Instant::now());
    if let Err(e) = pool.spawn_missing(1, Instant::now()) {
        return InspectResult::worker(format!("cannot start a worker: {e}"));
    }
    let meta = std::fs::metadata(path).ok();
    let mut job = Some(FileJob::new(FileKey {
        path: PathBytes::from_path(path),
        size: meta.as_ref().map_or(0, |m| m.len()),
        mtime_ns: meta.as_ref().map_or(0, |m| m.mtime() * 1_000_000_000),
    }));
    let mut result = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Worker { slot, gen, msg }) => {
                    match pool.on_event(slot, gen, msg, Instant::now()) {
                        Reply::Nothing => {}
                        Reply::Finished(f) => result = Some(match f.outcome {
                            Outcome::Analyzed(a) => InspectResult::Analyzed(a, f.stats),
                            Outcome::Failed(e) => InspectResult::Failed {
                                class: e.class.as_str(),
                                stage: e.stage.as_str(),
                                message: e.message.as_str().to_string(),
                                stats: Some(f.stats),
                            },
                        }),
                        Reply::Exited(exit) => {
                            return result.unwrap_or(InspectResult::Failed {
                                class: exit.kind.failure_class().as_str(),
                                stage: "worker",
                                message: exit.message,
                                stats: None,
                            });
                        }
                    }
                }
                // Only the worker's tasks hold the sender.
                Some(
                    Event::Db { .. } | Event::Api { .. } | Event::Control { .. } | Event::FsChanged,
                ) => {}
                None => return InspectResult::worker("the worker's events ended".into()),
            },
            _ = tick.tick() => pool.tick(Instant::now()),
        }
        if let Some(ix) = pool.idle_slot() {
            if let Some(job) = job.take() {
                pool.send_job(ix, job, Instant::now());
            }
        }
    }
}

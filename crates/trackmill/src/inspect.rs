//! `trackmill inspect FILE... [--json]`: analyses files through a capped worker, spawned exactly as
//! a scan spawns its workers, and prints the result (or the classified failure) directly, for
//! operators debugging a file. Nothing is stored.

use crate::models;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;
use trackmill_supervisor::event::{attach, ChildMsg, Event, Who};
use trackmill_supervisor::spawn::{signal_group, spawn_child, ChildSpec};
use trackmill_supervisor::units::{format_size, parse_duration, parse_size};
use trackmill_supervisor::{classify, exit_message, Config, KillReason};
use trackmill_types::{
    FileStats, FromWorker, Job, Outcome, PathBytes, Role, ToWorker, TrackAnalysis, PROTOCOL_VERSION,
};

/// Exit code when at least one file was not analysed (documented in the README).
pub const SOME_FAILED: u8 = 9;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Audio files to analyse.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    config: Option<PathBuf>,
    /// The worker's memory cap, e.g. 512MiB (default: workers.memory_limit).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Per-file deadline, e.g. 90s (default: workers.job_timeout).
    #[arg(long)]
    job_timeout: Option<String>,
    /// Skip the models: DSP-only analysis.
    #[arg(long)]
    no_models: bool,
}

/// What happened to one file.
enum Verdict {
    Analysed(Box<TrackAnalysis>, FileStats),
    /// The worker answered with a classified failure.
    Failed {
        class: &'static str,
        stage: &'static str,
        message: String,
        stats: Option<FileStats>,
    },
}

pub fn run(a: InspectArgs) -> ExitCode {
    let mut cfg = match &a.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return crate::config_error(e),
        },
        None => Config::default(),
    };
    if let Some(s) = &a.memory_limit {
        match parse_size(s) {
            Ok(v) => cfg.workers.memory_limit = v,
            Err(e) => return crate::config_error(format!("--memory-limit: {e}")),
        }
    }
    if let Some(s) = &a.job_timeout {
        match parse_duration(s) {
            Ok(v) => cfg.workers.job_timeout = v,
            Err(e) => return crate::config_error(format!("--job-timeout: {e}")),
        }
    }
    if a.no_models {
        cfg.analysis.models.clear();
    }
    if let Err(e) = cfg.validate() {
        return crate::config_error(e);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("trackmill: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = crate::children::worker_env();
    let mut args = models::worker_args(&cfg, a.config.as_deref(), &exe, &env).args;
    args.push("--recycle-after".into());
    args.push("1".into());
    let spec = ChildSpec::worker(exe, args, env, cfg.workers.memory_limit, cfg.analysis.gpu);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trackmill: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut all_ok = true;
    let mut reports = Vec::new();
    for file in &a.files {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        let verdict = rt.block_on(inspect_one(&spec, &abs, &cfg));
        all_ok &= matches!(verdict, Verdict::Analysed(..));
        if a.json {
            reports.push(to_json(&abs, &verdict));
        } else {
            print_human(&abs, &verdict);
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(reports)).unwrap_or_default()
        );
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_FAILED)
    }
}

/// One file through one fresh worker (`--recycle-after 1`): hello, job, result, exit; the
/// worker's death, if it dies, classified as the supervisor would.
async fn inspect_one(spec: &ChildSpec, path: &Path, cfg: &Config) -> Verdict {
    let worker_failure = |message: String| Verdict::Failed {
        class: "crash",
        stage: "worker",
        message,
        stats: None,
    };
    let spawned = match spawn_child(spec) {
        Ok(s) => s,
        Err(e) => return worker_failure(format!("cannot start a worker: {e}")),
    };
    let pid = spawned.pid;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let who = Who::Worker { slot: 0, gen: 1 };
    let tx = match attach::<FromWorker, ToWorker>(spawned, who, events_tx, ChildMsg::Worker) {
        Ok(tx) => tx,
        Err(e) => return worker_failure(format!("cannot talk to the worker: {e}")),
    };
    let timeout = cfg.workers.job_timeout;
    let grace = cfg.workers.kill_grace;
    let far = Duration::from_secs(365 * 24 * 3600);
    let deadline = tokio::time::sleep(far);
    tokio::pin!(deadline);
    let mut kill: Option<KillReason> = None;
    let mut result: Option<Verdict> = None;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Child { msg: ChildMsg::Worker(FromWorker::Hello(h)), .. }) => {
                    if h.protocol != PROTOCOL_VERSION || h.role != Role::Worker {
                        kill = Some(KillReason::Protocol);
                        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                        continue;
                    }
                    let job = Job { id: 1, path: PathBytes::from_path(path), attempt: 1 };
                    let _ = tx.send(ToWorker::Job(job));
                    deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                Some(Event::Child { msg: ChildMsg::Worker(FromWorker::Done { outcome, stats, .. }), .. }) => {
                    result = Some(match outcome {
                        Outcome::Analysed(a) => Verdict::Analysed(a, stats),
                        Outcome::Failed(f) => Verdict::Failed {
                            class: f.class.as_str(),
                            stage: f.stage.as_str(),
                            message: f.message.as_str().to_string(),
                            stats: Some(stats),
                        },
                    });
                    // `--recycle-after 1`: the worker exits on its own now.
                    deadline.as_mut().reset(tokio::time::Instant::now() + far);
                }
                Some(Event::Child { msg: ChildMsg::BadChannel(_), .. }) if result.is_some() => {}
                Some(Event::Child { msg: ChildMsg::BadChannel(e), .. }) => {
                    kill.get_or_insert(KillReason::Protocol);
                    tracing::error!("worker {pid} broke the protocol: {e}");
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
                // Only the supervisor's loop sends control requests and file-system changes.
                Some(Event::Child { .. } | Event::Control { .. } | Event::FsChanged) => {}
                Some(Event::Exited { status, oom_message, last_stderr, .. }) => {
                    if let Some(r) = result {
                        return r;
                    }
                    let kind = classify(status, kill, oom_message);
                    let mut message =
                        exit_message(kind, pid, status, cfg.workers.memory_limit, timeout);
                    if !last_stderr.is_empty() {
                        message.push_str(": ");
                        message.push_str(&last_stderr);
                    }
                    return Verdict::Failed {
                        class: kind.failure_class().as_str(),
                        stage: "worker",
                        message,
                        stats: None,
                    };
                }
                None => return worker_failure("the worker's events ended".into()),
            },
            _ = &mut deadline => match kill {
                None => {
                    kill = Some(KillReason::Timeout);
                    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                    deadline.as_mut().reset(tokio::time::Instant::now() + grace);
                }
                Some(_) => {
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    deadline.as_mut().reset(tokio::time::Instant::now() + far);
                }
            },
        }
    }
}

fn to_json(path: &Path, v: &Verdict) -> Value {
    match v {
        Verdict::Analysed(a, stats) => json!({
            "path": path.display().to_string(),
            "status": "analyzed",
            "analysis": serde_json::to_value(a).unwrap_or_default(),
            "stats": serde_json::to_value(stats).unwrap_or_default(),
        }),
        Verdict::Failed {
            class,
            stage,
            message,
            stats,
        } => json!({
            "path": path.display().to_string(),
            "status": "failed",
            "class": class,
            "stage": stage,
            "message": message,
            "stats": stats.as_ref().map(|s| serde_json::to_value(s).unwrap_or_default()),
        }),
    }
}

const PITCH: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

fn print_human(path: &Path, v: &Verdict) {
    let Verdict::Analysed(a, stats) = v else {
        if let Verdict::Failed {
            class,
            stage,
            message,
            ..
        } = v
        {
            println!(
                "{}: FAILED ({class}, stage {stage}): {message}",
                path.display()
            );
        }
        return;
    };
    println!(
        "{}: analysed in {:.2} s, worker peak RSS {}{}",
        path.display(),
        stats.wall_us as f64 / 1e6,
        format_size(stats.peak_rss_bytes),
        if a.partial { " (PARTIAL)" } else { "" }
    );
    let au = &a.audio;
    println!(
        "  audio:      {} / {}, {} Hz, {} ch, {:.1} s decoded{}",
        au.container.as_str(),
        au.codec.as_str(),
        au.sample_rate,
        au.channels,
        au.decoded_s,
        au.bitrate_kbps
            .map(|b| format!(", {b} kbit/s"))
            .unwrap_or_default()
    );
    let t = &a.tags;
    if let Some(title) = &t.title {
        let artists: Vec<&str> = t.artists.iter().map(|x| x.as_str()).collect();
        println!("  tags:       {} - {}", artists.join(", "), title.as_str());
    }
    if let Some(f) = &a.features {
        println!(
            "  loudness:   {:.1} LUFS, range {:.1} LU, true peak {:.1} dBTP, track gain {:.2} dB",
            f.integrated_lufs, f.loudness_range_lu, f.true_peak_dbtp, f.replaygain_track_gain_db
        );
        println!(
            "  rhythm:     {:.2} BPM, {:.2} onsets/s; key {} {} (strength {:.2})",
            f.bpm,
            f.onset_rate,
            PITCH[usize::from(f.key) % 12],
            f.mode.as_str(),
            f.key_strength
        );
    }
    for e in &a.embeddings {
        let head: Vec<String> = e.values.iter().take(4).map(|x| format!("{x:.3}")).collect();
        println!(
            "  embedding:  {} [{}] {}{}",
            e.model.as_str(),
            e.values.len(),
            head.join(" "),
            if e.values.len() > 4 { " …" } else { "" }
        );
    }
    for n in &a.notes {
        println!("  note:       {}", n.as_str());
    }
}

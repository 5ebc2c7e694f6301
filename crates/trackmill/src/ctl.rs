//! The operator's clients of a running `trackmill serve`: `status`, `workers`, `kill`, `drain`,
//! `resume` and `retry` talk to its control socket; `failures` reads the database.

use crate::cli::{exit, load_config, CliError, CliResult, Overrides};
use crate::db_url;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use trackmill_supervisor::control;
use trackmill_types::{ControlCommand, ControlResponse, PathBytes, ServiceStatus};

/// Which service to talk to.
#[derive(clap::Args)]
pub struct Target {
    /// The control socket (default: `service.control_socket` of --config, else
    /// `$XDG_RUNTIME_DIR/trackmill/control.sock`, or `/run/trackmill/control.sock` for root).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The service's configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum CtlCmd {
    /// Show the running service: workers, queue, DB writer, totals, memory pressure.
    Status {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Set the number of worker processes until the next reload (0: one per CPU).
    Workers {
        count: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Signal one worker (by the id `status` shows); its file is requeued, not held against it.
    Kill {
        worker: u32,
        /// TERM, KILL, INT… or a number.
        #[arg(long, default_value = "TERM")]
        signal: String,
        #[command(flatten)]
        target: Target,
    },
    /// Start no new files; those in flight finish.
    Drain {
        #[command(flatten)]
        target: Target,
    },
    /// Undo `drain`.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Files stored as failed or quarantined, with every attempt's cause.
    Failures {
        #[arg(long)]
        json: bool,
        #[arg(long, env = crate::DB_URL_ENV, hide_env_values = true)]
        db: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Analyse files (or directories) again even if stored as failed or quarantined.
    Retry {
        paths: Vec<PathBuf>,
        /// Every file stored as failed or quarantined.
        #[arg(long, conflicts_with = "paths")]
        all_failed: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: CtlCmd) -> CliResult {
    match cmd {
        CtlCmd::Status { target, json } => match send(&target, ControlCommand::Status)? {
            ControlResponse::Status(s) => {
                if json {
                    println!("{}", status_json(&s));
                } else {
                    print!("{}", status_text(&s));
                }
                Ok(ExitCode::from(exit::OK))
            }
            other => answer(other),
        },
        CtlCmd::Workers { count, target } => reply(&target, ControlCommand::Workers { count }),
        CtlCmd::Kill {
            worker,
            signal,
            target,
        } => match parse_signal(&signal) {
            Some(signal) => reply(&target, ControlCommand::Kill { worker, signal }),
            None => Err(CliError::config(format!(
                "--signal {signal}: not a signal name or number"
            ))),
        },
        CtlCmd::Drain { target } => reply(&target, ControlCommand::Drain),
        CtlCmd::Resume { target } => reply(&target, ControlCommand::Resume),
        CtlCmd::Retry {
            paths,
            all_failed,
            target,
        } => {
            if all_failed {
                return reply(&target, ControlCommand::RetryAllFailed);
            }
            if paths.is_empty() {
                return Err(CliError::config("retry: name paths or --all-failed"));
            }
            let abs = paths
                .iter()
                .map(|p| PathBytes::from_path(&std::path::absolute(p).unwrap_or(p.clone())))
                .collect();
            reply(&target, ControlCommand::Retry { paths: abs })
        }
        CtlCmd::Failures {
            json,
            db,
            config,
            limit,
        } => failures(json, db, config, limit),
    }
}

fn socket(target: &Target) -> Result<PathBuf, CliError> {
    if let Some(s) = &target.socket {
        return Ok(s.clone());
    }
    let cfg = load_config(target.config.as_deref(), &Overrides::default())?;
    Ok(control::socket_path(&cfg.service.control_socket))
}

fn send(target: &Target, command: ControlCommand) -> Result<ControlResponse, CliError> {
    let path = socket(target)?;
    control::request(&path, command).map_err(|e| CliError::new(exit::NO_SERVICE, e))
}

fn reply(target: &Target, command: ControlCommand) -> CliResult {
    answer(send(target, command)?)
}

fn answer(r: ControlResponse) -> CliResult {
    match r {
        ControlResponse::Done(text) => {
            println!("{text}");
            Ok(ExitCode::from(exit::OK))
        }
        ControlResponse::Refused(text) => {
            Err(CliError::new(exit::REFUSED, format!("refused: {text}")))
        }
        ControlResponse::Status(_) => Ok(ExitCode::from(exit::OK)),
    }
}

fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .ok()
        .map(|s| s as i32)
}

fn pairs(v: &[(String, u64)]) -> Value {
    Value::Object(v.iter().map(|(k, n)| (k.clone(), json!(n))).collect())
}

/// JSON with the (class, count) lists as objects.
pub fn status_json(s: &ServiceStatus) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    v["totals"]["failed"] = pairs(&s.totals.failed);
    v["totals"]["worker_exits"] = pairs(&s.totals.worker_exits);
    v["alive_workers"] = json!(s.workers.iter().filter(|w| w.pid != 0).count());
    v
}

fn mib(b: u64) -> String {
    format!("{:.0}MiB", b as f64 / f64::from(1u32 << 20))
}

fn status_text(s: &ServiceStatus) -> String {
    let mut out = format!(
        "trackmill {} (pid {}, run {}), up {:.0}s, {} passes; {} of {} workers; queue {} ready, {} retrying{}\n",
        s.state,
        s.pid,
        s.run_id,
        s.uptime_s,
        s.passes,
        s.workers.iter().filter(|w| w.pid != 0).count(),
        s.target_workers,
        s.queue_ready,
        s.queue_retries,
        if s.degraded { "; DEGRADED" } else { "" }
    );
    out += &format!(
        "{:>3} {:>8} {:<9} {:>8} {:>8} {:>6} {:>8} {:<9} file\n",
        "id", "pid", "state", "busy", "rss", "done", "restarts", "last exit"
    );
    for w in &s.workers {
        out += &format!(
            "{:>3} {:>8} {:<9} {:>7.1}s {:>8} {:>6} {:>8} {:<9} {}\n",
            w.id,
            w.pid,
            w.state,
            w.busy_s,
            mib(w.rss_bytes),
            w.files_done,
            w.restarts,
            w.last_exit.as_deref().unwrap_or("-"),
            w.file.as_ref().map_or("", |f| f.as_str())
        );
    }
    let t = &s.totals;
    let list = |v: &[(String, u64)]| {
        v.iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    out += &format!(
        "files: {} seen, {} analysed, {} unchanged, {} quarantined, failed [{}], {} found gone \
         ({} missing in the database); worker exits [{}]\n",
        t.files_seen,
        t.analyzed,
        t.skipped_unchanged,
        t.quarantined,
        list(&t.failed),
        t.missing,
        t.missing_in_db,
        list(&t.worker_exits)
    );
    out += &format!(
        "db writer: pid {}, {}, {} unacknowledged, {} restarts; memory {} ({:.0}% used), busy limit {}, workers {}\n",
        s.db_writer.pid,
        if s.db_writer.ready { "ready" } else { "not ready" },
        s.db_writer.unacked,
        s.db_writer.restarts,
        s.memory.level,
        s.memory.used_share * 100.0,
        s.memory.busy_limit,
        mib(s.memory.workers_rss_bytes)
    );
    if !s.api.addr.is_empty() {
        out += &format!(
            "api: http://{}/, pid {}, {}, {} restarts\n",
            s.api.addr,
            s.api.pid,
            if s.api.ready { "ready" } else { "not ready" },
            s.api.restarts
        );
    }
    out
}

fn failures(json: bool, db: Option<String>, config: Option<PathBuf>, limit: usize) -> CliResult {
    let cfg = load_config(config.as_deref(), &Overrides::default())?;
    let url = db_url(db, &cfg)?;
    let rows =
        trackmill_dbwriter::failures(&url, limit).map_err(|e| CliError::new(exit::BAD_DB, e))?;
    if json {
        println!("{}", Value::Array(rows));
        return Ok(ExitCode::from(exit::OK));
    }
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    for r in &rows {
        println!(
            "{} [{}] {}: {}",
            s(&r["status"]),
            s(&r["class"]),
            s(&r["display_path"]),
            s(&r["message"])
        );
        for a in r["attempts"].as_array().into_iter().flatten() {
            println!(
                "    attempt {} [{}] worker {}: {}",
                a["attempt"],
                s(&a["class"]),
                a["worker_pid"],
                s(&a["message"])
            );
        }
    }
    if rows.is_empty() {
        println!("no failed or quarantined files");
    }
    Ok(ExitCode::from(exit::OK))
}

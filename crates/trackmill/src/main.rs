//! The trackmill binary: the operator CLI (`scan`, `show`, `inspect`, `doctor`, `serve` and its
//! clients) and the hidden `worker` and `db-writer` subcommands that the supervisor re-executes
//! itself as.

mod children;
mod ctl;
mod doctor;
mod inspect;
mod logging;
mod models;
mod serve;
mod worker_cmd;

use clap::{Parser, Subcommand};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use trackmill_dbwriter::DbUrl;
use trackmill_supervisor::config::{canonical_roots, RootError};
use trackmill_supervisor::units::{parse_duration, parse_size};
use trackmill_supervisor::{Config, ScanOptions};

/// Exit codes (documented in the README).
mod exit {
    pub const OK: u8 = 0;
    /// Internal error during the run.
    pub const FAILURE: u8 = 1;
    /// Invalid configuration file or option.
    pub const BAD_CONFIG: u8 = 2;
    /// The database URL is invalid or the database cannot be opened.
    pub const BAD_DB: u8 = 3;
    /// A library root does not exist or is not a directory.
    pub const BAD_ROOT: u8 = 4;
    /// `show`: nothing stored for that path.
    pub const NOT_FOUND: u8 = 5;
    /// `serve`: the control socket cannot be set up (another service answers on it, or its
    /// directory is not private).
    pub const CONTROL: u8 = 6;
    /// A control command found no running service.
    pub const NO_SERVICE: u8 = 7;
    /// The service refused the command (wrong uid, no such worker, shutting down).
    pub const REFUSED: u8 = 8;
}

/// The database URL's environment variable, read by `scan`, `show` and the DB writer.
const DB_URL_ENV: &str = "TRACKMILL_DATABASE_URL";

#[derive(Parser)]
#[command(
    name = "trackmill",
    version,
    about = "Analyse whole music libraries without running out of memory"
)]
struct Cli {
    /// More log output (-v debug, -vv trace); TRACKMILL_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scan and analyse library directories (resumes where an earlier scan stopped).
    Scan(ScanArgs),
    /// Show what is stored for one file.
    Show {
        path: PathBuf,
        #[arg(long, env = DB_URL_ENV, hide_env_values = true)]
        db: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run as a host service: scan `library.roots` at start, on an interval and on file-system
    /// changes; controlled through its socket; SIGHUP reloads the config.
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Ctl(ctl::CtlCmd),
    /// Analyse files through a capped worker and print the result (nothing is stored).
    Inspect(inspect::InspectArgs),
    /// Check the ONNX Runtime, the models, the GPU, the database and the effective limits.
    Doctor(doctor::DoctorArgs),
    #[command(hide = true)]
    Worker(worker_cmd::WorkerArgs),
    #[command(hide = true, name = "db-writer")]
    DbWriter {
        /// For a run by hand only: the supervisor sends the URL through a pipe, so that no
        /// password is in `ps` or /proc/PID/environ.
        #[arg(long)]
        db: Option<String>,
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        #[arg(long, default_value_t = 200)]
        batch_ms: u64,
        #[arg(long, default_value_t = 60)]
        lease_ttl_s: u64,
    },
}

#[derive(clap::Args)]
struct ScanArgs {
    /// Library directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `sqlite://PATH` (default: ~/.local/share/trackmill/trackmill.db) or `postgres://…`.
    #[arg(long, env = DB_URL_ENV, hide_env_values = true)]
    db: Option<String>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    workers: Option<usize>,
    /// e.g. 512MiB, 1GiB
    #[arg(long)]
    memory_limit: Option<String>,
    /// e.g. 90s, 5m
    #[arg(long)]
    job_timeout: Option<String>,
    #[arg(long)]
    recycle_after: Option<u32>,
    #[arg(long)]
    max_attempts: Option<u32>,
    /// e.g. 30s
    #[arg(long)]
    shutdown_grace: Option<String>,
    /// Re-analyse files stored as failed or quarantined.
    #[arg(long)]
    retry_failed: bool,
    /// Write the run summary as JSON to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Children log plainly to the stderr the supervisor reads; every command a person runs logs
    // as the options say.
    if matches!(cli.cmd, Cmd::Worker(_) | Cmd::DbWriter { .. }) {
        logging::init_child();
    } else {
        logging::init(cli.verbose, &cli.log_format);
    }
    match cli.cmd {
        Cmd::Worker(args) => {
            std::process::exit(worker_cmd::run(args));
        }
        Cmd::DbWriter {
            db,
            batch_size,
            batch_ms,
            lease_ttl_s,
        } => {
            let db = match children::db_writer_url(db) {
                Ok(db) => db,
                Err(e) => {
                    eprintln!("db-writer: {e}");
                    return ExitCode::from(exit::BAD_DB);
                }
            };
            // SAFETY: as for the worker.
            let chan = unsafe { UnixStream::from_raw_fd(3) };
            let url = match DbUrl::parse(&db) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("db-writer: {e}");
                    return ExitCode::from(exit::BAD_DB);
                }
            };
            let opts = trackmill_dbwriter::WriterOptions {
                batch_max: batch_size,
                batch_ms,
                lease_ttl_s,
            };
            match trackmill_dbwriter::run(&url, chan, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("db-writer: {e}");
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
        Cmd::Show { path, db, json } => show(path, db, json),
        Cmd::Scan(args) => scan(args),
        Cmd::Serve(args) => serve::serve(args),
        Cmd::Ctl(cmd) => ctl::run(cmd),
        Cmd::Inspect(args) => inspect::run(args),
        Cmd::Doctor(args) => doctor::run(args),
    }
}

fn db_url(arg: Option<String>, cfg: &Config) -> Result<DbUrl, ExitCode> {
    let text = arg.or_else(|| (!cfg.database.url.is_empty()).then(|| cfg.database.url.clone()));
    let text = text.unwrap_or_else(trackmill_dbwriter::default_url);
    let url = DbUrl::parse(&text).map_err(|e| {
        eprintln!("trackmill: invalid database URL: {e}");
        ExitCode::from(exit::BAD_DB)
    })?;
    if let DbUrl::Sqlite(p) = &url {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    trackmill_dbwriter::check(&url).map_err(|e| {
        eprintln!("trackmill: cannot open database {}: {e}", url.redacted());
        ExitCode::from(exit::BAD_DB)
    })?;
    Ok(url)
}

fn show(path: PathBuf, db: Option<String>, json: bool) -> ExitCode {
    let url = match db_url(db, &Config::default()) {
        Ok(u) => u,
        Err(c) => return c,
    };
    let abs = std::path::absolute(&path).unwrap_or(path);
    match trackmill_dbwriter::show(&url, abs.as_os_str().as_bytes()) {
        Ok(Some(v)) => {
            if json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            ExitCode::from(exit::OK)
        }
        Ok(None) => {
            eprintln!("trackmill: nothing stored for {}", abs.display());
            ExitCode::from(exit::NOT_FOUND)
        }
        Err(e) => {
            eprintln!("trackmill: {e}");
            ExitCode::from(exit::BAD_DB)
        }
    }
}

fn config_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("trackmill: {msg}");
    ExitCode::from(exit::BAD_CONFIG)
}

fn scan(a: ScanArgs) -> ExitCode {
    let mut cfg = match &a.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return config_error(e),
        },
        None => Config::default(),
    };
    if let Some(n) = a.workers {
        cfg.workers.count = n;
    }
    if let Some(s) = &a.memory_limit {
        match parse_size(s) {
            Ok(v) => cfg.workers.memory_limit = v,
            Err(e) => return config_error(format!("--memory-limit: {e}")),
        }
    }
    for (opt, val, slot) in [
        (
            "--job-timeout",
            &a.job_timeout,
            &mut cfg.workers.job_timeout,
        ),
        (
            "--shutdown-grace",
            &a.shutdown_grace,
            &mut cfg.service.shutdown_grace,
        ),
    ] {
        if let Some(s) = val {
            match parse_duration(s) {
                Ok(v) => *slot = v,
                Err(e) => return config_error(format!("{opt}: {e}")),
            }
        }
    }
    if let Some(n) = a.recycle_after {
        cfg.workers.recycle_after = n;
    }
    if let Some(n) = a.max_attempts {
        cfg.workers.max_attempts = n;
    }
    if let Err(e) = cfg.validate() {
        return config_error(e);
    }
    let roots = match library_roots(&a.paths) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let url = match db_url(a.db.clone(), &cfg) {
        Ok(u) => u,
        Err(c) => return c,
    };
    let spawn = match children::spawn_spec(&cfg, &roots, &url, a.db.as_deref(), a.config.as_deref())
    {
        Ok(s) => s,
        Err(c) => return c,
    };
    tracing::info!(
        "scanning {} root(s) into {} with {} workers",
        roots.len(),
        url.redacted(),
        cfg.worker_count()
    );
    let opts = ScanOptions {
        roots,
        retry_failed: a.retry_failed,
        progress: !a.no_progress,
        spawn,
    };
    match trackmill_supervisor::scan(cfg, opts) {
        Ok(summary) => {
            eprintln!("trackmill: {}", summary.line());
            if let Some(p) = &a.summary {
                let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
                if let Err(e) = std::fs::write(p, text) {
                    eprintln!("trackmill: cannot write summary {}: {e}", p.display());
                    return ExitCode::from(exit::FAILURE);
                }
            }
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("trackmill: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// The library roots as absolute directories; a missing one or a file is reported and gives
/// the documented exit code.
fn library_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ExitCode> {
    canonical_roots(paths).map_err(|e| {
        match e {
            RootError::NotADirectory(p) => {
                eprintln!("trackmill: {} is not a directory", p.display())
            }
            RootError::Unreadable(p, e) => {
                eprintln!("trackmill: cannot open library root {}: {e}", p.display())
            }
        }
        ExitCode::from(exit::BAD_ROOT)
    })
}

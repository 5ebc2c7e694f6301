//! The trackmill binary: the operator CLI (`scan`, `show`, `inspect`, `doctor`, `serve` and its
//! clients) and the hidden `worker`, `db-writer` and `api-child` subcommands that the supervisor
//! re-executes itself as.

mod api;
mod children;
mod cli;
mod ctl;
mod doctor;
mod inspect;
mod logging;
mod models;
mod query;
mod serve;
mod show;
mod similar;
mod worker_cmd;

use clap::{Parser, Subcommand};
use cli::{exit, load_config, CliError, CliResult, Overrides};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use trackmill_dbwriter::DbUrl;
use trackmill_supervisor::config::{canonical_roots, RootError};
use trackmill_supervisor::{Config, ScanOptions};

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
    /// Delete the tracks whose files are gone (marked missing by a completed pass), with their
    /// analysis.
    Prune {
        #[arg(long, env = DB_URL_ENV, hide_env_values = true)]
        db: Option<String>,
        /// Where `database.url` is read from when `--db` is not given.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only count them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run as a host service: scan `library.roots` at start, on an interval and on file-system
    /// changes; controlled through its socket; SIGHUP reloads the config.
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Ctl(ctl::CtlCmd),
    #[command(flatten)]
    Similar(similar::SimilarCmd),
    /// Analyse files through a capped worker and print the result (nothing is stored).
    Inspect(inspect::InspectArgs),
    /// Check the ONNX Runtime, the models, the GPU, the database and the effective limits.
    Doctor(doctor::DoctorArgs),
    #[command(hide = true)]
    Worker(worker_cmd::WorkerArgs),
    #[command(hide = true, name = "api-child")]
    ApiChild(api::ApiArgs),
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
    if matches!(
        cli.cmd,
        Cmd::Worker(_) | Cmd::DbWriter { .. } | Cmd::ApiChild(_)
    ) {
        logging::init_child();
    } else {
        logging::init(cli.verbose, &cli.log_format);
    }
    run(cli.cmd).unwrap_or_else(CliError::report)
}

fn run(cmd: Cmd) -> CliResult {
    match cmd {
        Cmd::Worker(args) => std::process::exit(worker_cmd::run(args)),
        Cmd::ApiChild(args) => api::run(args),
        Cmd::DbWriter {
            db,
            batch_size,
            batch_ms,
            lease_ttl_s,
        } => {
            let db = children::db_writer_url(db)
                .map_err(|e| CliError::new(exit::BAD_DB, format!("db-writer: {e}")))?;
            // SAFETY: as for the worker.
            let chan = unsafe { UnixStream::from_raw_fd(3) };
            let url = DbUrl::parse(&db)
                .map_err(|e| CliError::new(exit::BAD_DB, format!("db-writer: {e}")))?;
            let opts = trackmill_dbwriter::WriterOptions {
                batch_max: batch_size,
                batch_ms,
                lease_ttl_s,
            };
            trackmill_dbwriter::run(&url, chan, opts)
                .map_err(|e| CliError::failure(format!("db-writer: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { path, db, json } => show(path, db, json),
        Cmd::Prune {
            db,
            config,
            dry_run,
        } => prune(db, config, dry_run),
        Cmd::Scan(args) => scan(args),
        Cmd::Serve(args) => serve::serve(args),
        Cmd::Ctl(cmd) => ctl::run(cmd),
        Cmd::Similar(cmd) => similar::run(cmd),
        Cmd::Inspect(args) => inspect::run(args),
        Cmd::Doctor(args) => doctor::run(args),
    }
}

fn db_url(arg: Option<String>, cfg: &Config) -> Result<DbUrl, CliError> {
    let text = arg.or_else(|| (!cfg.database.url.is_empty()).then(|| cfg.database.url.clone()));
    let text = text.unwrap_or_else(trackmill_dbwriter::default_url);
    let url = DbUrl::parse(&text)
        .map_err(|e| CliError::new(exit::BAD_DB, format!("invalid database URL: {e}")))?;
    if let DbUrl::Sqlite(p) = &url {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    trackmill_dbwriter::check(&url).map_err(|e| {
        CliError::new(
            exit::BAD_DB,
            format!("cannot open database {}: {e}", url.redacted()),
        )
    })?;
    Ok(url)
}

fn show(path: PathBuf, db: Option<String>, json: bool) -> CliResult {
    let url = db_url(db, &Config::default())?;
    let abs = std::path::absolute(&path).unwrap_or(path);
    match trackmill_dbwriter::show(&url, abs.as_os_str().as_bytes()) {
        Ok(Some(v)) => {
            if json {
                println!("{v}");
            } else {
                print!("{}", show::render(&v));
            }
            Ok(ExitCode::from(exit::OK))
        }
        Ok(None) => Err(CliError::new(
            exit::NOT_FOUND,
            format!("nothing stored for {}", abs.display()),
        )),
        Err(e) => Err(CliError::new(exit::BAD_DB, e)),
    }
}

fn prune(db: Option<String>, config: Option<PathBuf>, dry_run: bool) -> CliResult {
    let cfg = load_config(config.as_deref(), &Overrides::default())?;
    let url = db_url(db, &cfg)?;
    let n = trackmill_dbwriter::prune(&url, dry_run).map_err(|e| CliError::new(exit::BAD_DB, e))?;
    if dry_run {
        println!("{n} missing tracks would be deleted");
    } else {
        println!("{n} missing tracks deleted");
    }
    Ok(ExitCode::from(exit::OK))
}

fn scan(a: ScanArgs) -> CliResult {
    let cfg = load_config(
        a.config.as_deref(),
        &Overrides {
            workers: a.workers,
            memory_limit: a.memory_limit.as_deref(),
            job_timeout: a.job_timeout.as_deref(),
            shutdown_grace: a.shutdown_grace.as_deref(),
            recycle_after: a.recycle_after,
            max_attempts: a.max_attempts,
            no_models: false,
        },
    )?;
    let roots = library_roots(&a.paths)?;
    let url = db_url(a.db.clone(), &cfg)?;
    let spawn = children::spawn_spec(&cfg, &roots, &url, a.db.as_deref(), a.config.as_deref())?;
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
    let summary = trackmill_supervisor::scan(cfg, opts).map_err(CliError::failure)?;
    eprintln!("trackmill: {}", summary.line());
    if let Some(p) = &a.summary {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        std::fs::write(p, text)
            .map_err(|e| CliError::failure(format!("cannot write summary {}: {e}", p.display())))?;
    }
    cli::run_outcome(&summary)
}

/// The library roots as absolute directories; a missing one or a file is reported and gives
/// the documented exit code.
fn library_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    canonical_roots(paths).map_err(|e| {
        CliError::new(
            exit::BAD_ROOT,
            match e {
                RootError::NotADirectory(p) => format!("{} is not a directory", p.display()),
                RootError::Unreadable(p, e) => {
                    format!("cannot open library root {}: {e}", p.display())
                }
            },
        )
    })
}

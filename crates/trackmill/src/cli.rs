//! How a command ends: the documented exit codes, one error type that carries its code and
//! message (printed in one place, by `main`), and loading the configuration with the command
//! line's overrides, the same for every command.

use std::path::Path;
use std::process::ExitCode;
use trackmill_supervisor::units::{parse_duration, parse_size};
use trackmill_supervisor::Config;

/// Exit codes (documented in the README).
pub mod exit {
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
    /// `inspect`: a file was not analysed; `doctor`: a check failed.
    pub const CHECK_FAILED: u8 = 9;
    /// The run failed: the DB writer could not commit anything (the message names the
    /// database's error); the run's status is `failed`.
    pub const RUN_FAILED: u8 = 10;
    /// The run ended with results the DB writer had not committed (status `interrupted`); the
    /// next scan analyses those files.
    pub const UNSTORED: u8 = 11;
}

/// How a run that returned ends: its status decides the exit code.
pub fn run_outcome(summary: &trackmill_supervisor::Summary) -> CliResult {
    if summary.status == "failed" {
        return Err(CliError::new(
            exit::RUN_FAILED,
            format!(
                "run failed: {}",
                summary
                    .error
                    .as_deref()
                    .unwrap_or("the DB writer cannot go on")
            ),
        ));
    }
    if summary.unstored > 0 {
        return Err(CliError::new(
            exit::UNSTORED,
            format!(
                "{} results were not stored; the next scan analyses those files",
                summary.unstored
            ),
        ));
    }
    Ok(ExitCode::from(exit::OK))
}

/// A command that ends with a documented exit code other than success, and why.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl std::fmt::Display) -> Self {
        CliError {
            code,
            message: message.to_string(),
        }
    }

    /// Exit 2: a bad configuration file or option.
    pub fn config(message: impl std::fmt::Display) -> Self {
        CliError::new(exit::BAD_CONFIG, message)
    }

    /// Exit 1: an internal error.
    pub fn failure(message: impl std::fmt::Display) -> Self {
        CliError::new(exit::FAILURE, message)
    }

    /// Prints the message (if any) and gives the exit code.
    pub fn report(self) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("trackmill: {}", self.message);
        }
        ExitCode::from(self.code)
    }
}

/// What a command returns: its exit code, or the error that ends it.
pub type CliResult = Result<ExitCode, CliError>;

/// Command-line options that override the configuration file (each command sets those it has).
#[derive(Default)]
pub struct Overrides<'a> {
    pub workers: Option<usize>,
    pub memory_limit: Option<&'a str>,
    pub job_timeout: Option<&'a str>,
    pub shutdown_grace: Option<&'a str>,
    pub recycle_after: Option<u32>,
    pub max_attempts: Option<u32>,
    /// Skip the models: DSP-only analysis.
    pub no_models: bool,
}

/// The configuration file (or the defaults), with the command line's overrides, validated.
pub fn load_config(path: Option<&Path>, o: &Overrides<'_>) -> Result<Config, CliError> {
    let mut cfg = match path {
        Some(p) => Config::load(p).map_err(CliError::config)?,
        None => Config::default(),
    };
    let w = &mut cfg.workers;
    if let Some(n) = o.workers {
        w.count = n;
    }
    if let Some(s) = o.memory_limit {
        w.memory_limit =
            parse_size(s).map_err(|e| CliError::config(format!("--memory-limit: {e}")))?;
    }
    for (opt, val, slot) in [
        ("--job-timeout", o.job_timeout, &mut w.job_timeout),
        (
            "--shutdown-grace",
            o.shutdown_grace,
            &mut cfg.service.shutdown_grace,
        ),
    ] {
        if let Some(s) = val {
            *slot = parse_duration(s).map_err(|e| CliError::config(format!("{opt}: {e}")))?;
        }
    }
    if let Some(n) = o.recycle_after {
        cfg.workers.recycle_after = n;
    }
    if let Some(n) = o.max_attempts {
        cfg.workers.max_attempts = n;
    }
    if o.no_models {
        cfg.analysis.models.clear();
    }
    cfg.validate().map_err(CliError::config)?;
    Ok(cfg)
}

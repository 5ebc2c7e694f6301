//! How the supervisor starts its children: the same binary with the hidden `worker`,
//! `db-writer` and `api-child` subcommands, their arguments and the environment they inherit.
//! Children start from a cleared environment (`spawn::ENV_ALLOWLIST` plus what is named here);
//! the DB writer and the API server get the database URL through a pipe (`spawn::SECRET_ENV`),
//! read it once at start and make themselves non-dumpable, so no password is in any child's argv
//! or environment.

use crate::cli::CliError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use trackmill_dbwriter::DbUrl;
use trackmill_supervisor::spawn::{read_secret, with_library_roots, SECRET_ENV};
use trackmill_supervisor::{Config, SpawnSpec};

/// Variables a worker keeps from the supervisor's environment, besides those every child keeps
/// (`spawn::ENV_ALLOWLIST`).
const PASSTHROUGH: [&str; 4] = [
    "TRACKMILL_FAULT_INJECTION",
    "TRACKMILL_FAULT_HELLO_WHILE",
    "TRACKMILL_LOG",
    trackmill_analysis::model::ORT_LIB_ENV,
];

/// The environment a worker inherits from the supervisor (everything else is not passed).
pub fn worker_env() -> Vec<(OsString, OsString)> {
    PASSTHROUGH
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
        .collect()
}

/// `roots` are the library roots the workers' sandbox may read; `db_arg` is the URL as given on
/// the command line, if it was; `config_file` the configuration file, against which a relative
/// `analysis.models_dir` resolves. Checks the configured models once (see
/// [`crate::models::worker_args`]) and logs what the workers' sandbox will be granted.
pub fn spawn_spec(
    cfg: &Config,
    roots: &[PathBuf],
    url: &DbUrl,
    db_arg: Option<&str>,
    config_file: Option<&Path>,
) -> Result<SpawnSpec, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find my own executable: {e}")))?;
    let url_text = match url {
        DbUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
        _ => db_arg.map_or_else(|| cfg.database.url.clone(), str::to_string),
    };
    let db_args: Vec<OsString> = vec![
        "db-writer".into(),
        "--batch-size".into(),
        cfg.database.batch_size.to_string().into(),
        "--batch-ms".into(),
        cfg.database.batch_interval.as_millis().to_string().into(),
        "--lease-ttl-s".into(),
        cfg.database.lease_ttl.as_secs().max(1).to_string().into(),
    ];
    let worker_env = worker_env();
    let worker = crate::models::worker_args(cfg, config_file, &exe, &worker_env);
    let mut worker_args = with_library_roots(&worker.args, roots);
    if !cfg.library.follow_symlinks {
        worker_args.push("--no-follow-symlinks".into());
    }
    tracing::info!("worker sandbox: {}", trackmill_worker::sandbox::probe());
    Ok(SpawnSpec {
        exe,
        worker_args,
        worker_env,
        db_args,
        api_args: api_args(cfg, roots, config_file),
        // Through a pipe, not the environment (see `spawn::SECRET_ENV`).
        db_env: vec![(SECRET_ENV.into(), url_text.into())],
        gpu: cfg.analysis.gpu,
        models: worker.models,
        lease_on_dispatch: matches!(url, DbUrl::Postgres(..)),
    })
}

/// The arguments of the API server (`api-child`): the `[api]` limits, the library roots that
/// relative track paths are resolved against, and the similarity inputs the configured models
/// declare (so the server needs no manifest).
fn api_args(cfg: &Config, roots: &[PathBuf], config_file: Option<&Path>) -> Vec<OsString> {
    if cfg.api.addr.is_empty() {
        // No API server runs (a scan, or serve without `api.addr`): no manifest is read for it.
        return Vec::new();
    }
    let mut args: Vec<OsString> = vec![
        "api-child".into(),
        "--max-body".into(),
        cfg.api.max_body.to_string().into(),
        "--request-timeout-ms".into(),
        cfg.api.request_timeout.as_millis().to_string().into(),
        "--max-concurrent".into(),
        cfg.api.max_concurrent.to_string().into(),
    ];
    for r in roots {
        args.push("--library-root".into());
        args.push(r.clone().into());
    }
    for e in crate::models::similarity_space(cfg, config_file).embeddings {
        args.push("--similarity-input".into());
        args.push(format!("{}={}:{}", e.name, e.dims, e.weight).into());
    }
    args
}

/// Start-up of a child that holds the database URL (the DB writer, the API server): marks this
/// process non-dumpable (another process of the same user can then neither read its memory nor
/// its environment, nor attach to it), then reads the URL from the pipe the supervisor gave it,
/// or takes `--db` when run by hand.
pub fn db_writer_url(db_arg: Option<String>) -> Result<String, String> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make this process non-dumpable: {e}"))?;
    if let Some(url) = db_arg {
        return Ok(url);
    }
    let secret =
        read_secret().ok_or("no database URL: give --db (the supervisor sends it on fd 4)")?;
    String::from_utf8(secret).map_err(|_| "the database URL is not UTF-8".to_string())
}

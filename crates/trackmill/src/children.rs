//! How the supervisor starts its children: the same binary with the hidden `worker` and
//! `db-writer` subcommands, their arguments and the environment they inherit.

use crate::cli::CliError;
use std::ffi::OsString;
use std::path::Path;
use trackmill_dbwriter::DbUrl;
use trackmill_supervisor::{Config, SpawnSpec};

/// Variables a worker keeps from the supervisor's environment.
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

/// `db_arg` is the URL as given on the command line, if it was; `config_file` the configuration
/// file, against which a relative `analysis.models_dir` resolves. Checks the configured models
/// once (see [`crate::models::worker_args`]).
pub fn spawn_spec(
    cfg: &Config,
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
    Ok(SpawnSpec {
        exe,
        worker_args: worker.args,
        worker_env,
        db_args,
        db_env: vec![(crate::DB_URL_ENV.into(), url_text.into())],
        gpu: cfg.analysis.gpu,
        models: worker.models,
        lease_on_dispatch: matches!(url, DbUrl::Postgres(..)),
    })
}

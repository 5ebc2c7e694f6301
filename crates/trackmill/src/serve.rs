//! `trackmill serve`: checks the configuration, library roots, database and control socket, then
//! runs the long-running service until SIGTERM/SIGINT.

use crate::cli::{exit, load_config, CliError, CliResult, Overrides};
use crate::db_url;
use std::path::PathBuf;
use trackmill_supervisor::{control, ServeOptions};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The configuration file; `library.roots` lists the directories to serve. SIGHUP re-reads it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `database.url`.
    #[arg(long, env = crate::DB_URL_ENV, hide_env_values = true)]
    db: Option<String>,
}

pub fn serve(a: ServeArgs) -> CliResult {
    let mut cfg = load_config(a.config.as_deref(), &Overrides::default())?;
    if cfg.library.roots.is_empty() {
        return Err(CliError::config(
            "library.roots is empty: name the directories to serve in the config file",
        ));
    }
    cfg.library.roots = crate::library_roots(&cfg.library.roots)?;
    // Before the database: a second service on the same socket stops here and touches nothing.
    let control_path = control::socket_path(&cfg.service.control_socket);
    let claim = control::claim(&control_path).map_err(|e| CliError::new(exit::CONTROL, e))?;
    let url = db_url(a.db.clone(), &cfg)?;
    let spawn = crate::children::spawn_spec(
        &cfg,
        &cfg.library.roots,
        &url,
        a.db.as_deref(),
        a.config.as_deref(),
    )?;
    // `_lock` is held until the service returns: no other service may take this socket meanwhile.
    let control::Bound {
        listener,
        lock: _lock,
    } = claim.bind().map_err(|e| CliError::new(exit::CONTROL, e))?;
    let metrics = if cfg.service.metrics_addr.is_empty() {
        None
    } else {
        let l = trackmill_supervisor::metrics::bind(&cfg.service.metrics_addr).map_err(|e| {
            CliError::config(format!(
                "service.metrics_addr: cannot listen on {}: {e}",
                cfg.service.metrics_addr
            ))
        })?;
        Some(l)
    };
    let api = bind_api(&cfg)?;
    tracing::info!(
        "serving {} root(s) into {}; control socket {}",
        cfg.library.roots.len(),
        url.redacted(),
        control_path.display()
    );
    let opts = ServeOptions {
        config_path: a.config.clone(),
        control: listener,
        control_path,
        metrics,
        api,
        spawn,
    };
    let summary = trackmill_supervisor::serve(cfg, opts).map_err(CliError::failure)?;
    tracing::info!("stopped: {}", summary.line());
    crate::cli::run_outcome(&summary)
}

/// Binds `api.addr` here, before anything starts, so a port in use is a start-up error; the API
/// server process gets the socket (see `trackmill_supervisor::api`).
fn bind_api(cfg: &trackmill_supervisor::Config) -> Result<Option<std::net::TcpListener>, CliError> {
    if cfg.api.addr.is_empty() {
        return Ok(None);
    }
    let l = trackmill_supervisor::api::bind(&cfg.api.addr).map_err(|e| {
        CliError::config(format!("api.addr: cannot listen on {}: {e}", cfg.api.addr))
    })?;
    if let Ok(a) = l.local_addr() {
        tracing::info!("API listening on http://{a}/");
    }
    Ok(Some(l))
}

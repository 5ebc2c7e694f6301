//! `trackmill serve`: checks the configuration, library roots, database and control socket, then
//! runs the long-running service until SIGTERM/SIGINT.

use crate::{config_error, db_url, exit};
use std::path::PathBuf;
use std::process::ExitCode;
use trackmill_supervisor::{control, Config, ServeOptions};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The configuration file; `library.roots` lists the directories to serve. SIGHUP re-reads it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `database.url`.
    #[arg(long, env = crate::DB_URL_ENV, hide_env_values = true)]
    db: Option<String>,
}

pub fn serve(a: ServeArgs) -> ExitCode {
    let mut cfg = match &a.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return config_error(e),
        },
        None => Config::default(),
    };
    if cfg.library.roots.is_empty() {
        return config_error(
            "library.roots is empty: name the directories to serve in the config file",
        );
    }
    let roots = match crate::library_roots(&cfg.library.roots) {
        Ok(r) => r,
        Err(c) => return c,
    };
    cfg.library.roots = roots;
    // Before the database: a second service on the same socket stops here and touches nothing.
    let control_path = control::socket_path(&cfg.service.control_socket);
    let claim = match control::claim(&control_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("trackmill: {e}");
            return ExitCode::from(exit::CONTROL);
        }
    };
    let url = match db_url(a.db.clone(), &cfg) {
        Ok(u) => u,
        Err(c) => return c,
    };
    let spawn = match crate::children::spawn_spec(
        &cfg,
        &cfg.library.roots,
        &url,
        a.db.as_deref(),
        a.config.as_deref(),
    ) {
        Ok(s) => s,
        Err(c) => return c,
    };
    // `_lock` is held until the service returns: no other service may take this socket meanwhile.
    let control::Bound {
        listener,
        lock: _lock,
    } = match claim.bind() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("trackmill: {e}");
            return ExitCode::from(exit::CONTROL);
        }
    };
    let metrics = if cfg.service.metrics_addr.is_empty() {
        None
    } else {
        match trackmill_supervisor::metrics::bind(&cfg.service.metrics_addr) {
            Ok(l) => Some(l),
            Err(e) => {
                return config_error(format!(
                    "service.metrics_addr: cannot listen on {}: {e}",
                    cfg.service.metrics_addr
                ))
            }
        }
    };
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
        spawn,
    };
    match trackmill_supervisor::serve(cfg, opts) {
        Ok(summary) => {
            tracing::info!("stopped: {}", summary.line());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("trackmill: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

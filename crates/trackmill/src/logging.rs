//! Tracing set-up in one place: `-v` count and `TRACKMILL_LOG`, text on a terminal, JSON lines for
//! services and log shippers.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logging of the hidden child subcommands: warnings and errors only, no colours (the supervisor
/// relays each line). The model set's own GPU-fallback warning is left to the supervisor, which
/// says it once per run after its probe instead of once per worker.
pub fn init_child() {
    let filter = EnvFilter::try_from_env("TRACKMILL_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,symphonia=off,trackmill_analysis::model=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .init();
}

pub fn init(verbose: u8, format: &str) {
    let default = match verbose {
        // The PostgreSQL driver logs every server NOTICE (e.g. "schema … already exists") at info.
        0 => "info,symphonia=warn,tokio_postgres=warn",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("TRACKMILL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

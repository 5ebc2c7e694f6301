//! The hidden `api-child` subcommand: the HTTP API for music servers, run by `serve` as a child
//! process (see `trackmill_supervisor::api`). It inherits the listening socket on
//! `spawn::LISTEN_FD` and its channel on fd 3, reads the database URL once from the secret pipe,
//! and answers queries from read-only connections, so nothing it does can change the library or
//! stall the supervisor. It lives as long as its channel: when the supervisor goes, so does it.

mod bliss;
mod http;
mod params;
mod routes;

use crate::cli::{exit, CliError, CliResult};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trackmill_dbwriter::DbUrl;
use trackmill_similarity::{EmbeddingInput, Space};
use trackmill_supervisor::spawn::{CHANNEL_FD, LISTEN_FD};
use trackmill_types::frame::{read_frame, write_frame, MAX_FRAME};
use trackmill_types::{FromApi, Hello, Role, ToApi};

#[derive(clap::Args)]
pub struct ApiArgs {
    /// A request body larger than this (bytes) is answered 413.
    #[arg(long)]
    max_body: usize,
    /// Headers, body and answer each within this, else 408.
    #[arg(long)]
    request_timeout_ms: u64,
    /// Queries at the same time; one more is answered 503.
    #[arg(long)]
    max_concurrent: usize,
    /// Relative track paths (a music server's) are looked up under these directories.
    #[arg(long = "library-root")]
    roots: Vec<PathBuf>,
    /// The database, when run by hand (the service sends it through a pipe on fd 4).
    #[arg(long)]
    db: Option<String>,
    /// A model embedding that takes part in similarity, `NAME=DIMS:WEIGHT` (repeated).
    #[arg(long = "similarity-input", value_parser = parse_input)]
    inputs: Vec<EmbeddingInput>,
}

fn parse_input(text: &str) -> Result<EmbeddingInput, String> {
    let bad = || format!("{text:?}: expected NAME=DIMS:WEIGHT");
    let (name, rest) = text.rsplit_once('=').ok_or_else(bad)?;
    let (dims, weight) = rest.split_once(':').ok_or_else(bad)?;
    Ok(EmbeddingInput {
        name: name.to_string(),
        dims: dims.parse().map_err(|_| bad())?,
        weight: weight.parse().map_err(|_| bad())?,
    })
}

/// What every request handler shares.
pub struct Shared {
    pub url: DbUrl,
    pub roots: Vec<PathBuf>,
    /// The similarity space of the service's configuration.
    pub space: Space,
    pub queries: Arc<tokio::sync::Semaphore>,
    /// The Prometheus text the supervisor pushed last (none before its first push).
    pub metrics: RwLock<Option<String>>,
    pub max_body: usize,
    pub timeout: Duration,
}

pub fn run(a: ApiArgs) -> CliResult {
    let fail = |e: String| CliError::new(exit::BAD_DB, format!("api-child: {e}"));
    let db = crate::children::db_writer_url(a.db).map_err(fail)?;
    let url = DbUrl::parse(&db).map_err(|e| fail(e.to_string()))?;
    let listener = inherited_listener()
        .map_err(|e| CliError::failure(format!("api-child: no listening socket: {e}")))?;
    let shared = Arc::new(Shared {
        url,
        roots: a.roots,
        space: Space {
            weights: Default::default(),
            embeddings: a.inputs,
        },
        queries: Arc::new(tokio::sync::Semaphore::new(a.max_concurrent.max(1))),
        metrics: RwLock::new(None),
        max_body: a.max_body,
        timeout: Duration::from_millis(a.request_timeout_ms.max(1)),
    });
    // SAFETY: fd 3 is the channel the supervisor placed for this process alone.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    start_channel(chan, shared.clone())
        .map_err(|e| CliError::failure(format!("api-child: channel: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("api-child: {e}")))?;
    rt.block_on(http::serve(listener, shared))
        .map_err(|e| CliError::failure(format!("api-child: {e}")))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The listening socket on [`LISTEN_FD`], checked to be one.
fn inherited_listener() -> std::io::Result<std::net::TcpListener> {
    // SAFETY: `stat` is plain data, valid when zeroed; fstat on a possibly closed fd only fills
    // `st` or fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(LISTEN_FD, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(std::io::Error::other("fd 5 is not a socket"));
    }
    // SAFETY: fd 5 is open and a socket the supervisor bound and placed for this process; it is
    // owned from here on.
    let l = unsafe { std::net::TcpListener::from_raw_fd(LISTEN_FD) };
    l.local_addr()?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Says hello, then takes each metrics push on a thread of its own (blocking reads of a channel
/// that carries one small frame a second) and acknowledges it. The channel's end means the
/// supervisor is gone: the process exits.
fn start_channel(mut chan: UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    write_frame(&mut chan, &FromApi::Hello(Hello::new(Role::Api)))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::thread::Builder::new()
        .name("channel".into())
        .spawn(move || loop {
            match read_frame::<_, ToApi>(&mut chan, MAX_FRAME) {
                Ok(ToApi::Metrics { text }) => {
                    if let Ok(mut m) = shared.metrics.write() {
                        *m = Some(text);
                    }
                    if write_frame(&mut chan, &FromApi::MetricsTaken).is_err() {
                        std::process::exit(0);
                    }
                }
                Err(_) => std::process::exit(0),
            }
        })?;
    Ok(())
}

//! The worker process body: handshake, then one job at a time until recycled, told to stop, or
//! the channel closes. Runs under the memory cap the supervisor set before exec. The models are
//! loaded once, before the handshake; a model failure ends the worker after its reply (planned
//! recycle) so that a retry of the file gets a fresh runtime.

mod engine;
mod faults;

use std::os::unix::net::UnixStream;
use std::time::Instant;
use trackmill_types::frame::{read_frame, write_frame, FrameError, MAX_FRAME};
use trackmill_types::procmem as rss;
use trackmill_types::{FileStats, FromWorker, Hello, Role, ToWorker};

pub use engine::{AnalysisSettings, Engine, EngineConfig};

/// Exit code of a planned recycle, so it is never mistaken for an error.
pub const EXIT_RECYCLE: i32 = 75;
/// Exit code when the supervisor spoke something this worker cannot understand.
pub const EXIT_PROTOCOL: i32 = 76;
/// Environment variable that enables the fault-injection engine used by the end-to-end tests.
pub const FAULT_ENV: &str = "TRACKMILL_FAULT_INJECTION";

/// Worker settings, passed by the supervisor on the hidden subcommand's command line.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Exit with [`EXIT_RECYCLE`] after this many files (already jittered by the supervisor).
    pub recycle_after: u32,
    pub engine: EngineConfig,
}

/// Runs the worker loop on `chan` and returns the process exit code.
pub fn run(mut chan: UnixStream, cfg: WorkerConfig) -> i32 {
    // Models load before the hello, so that no job (and no job deadline) waits on them.
    let mut engine = Engine::new(&cfg.engine);
    if let Err(e) = write_frame(&mut chan, &FromWorker::Hello(Hello::new(Role::Worker))) {
        tracing::error!("worker: handshake failed: {e}");
        return EXIT_PROTOCOL;
    }
    let faults = std::env::var_os(FAULT_ENV).is_some_and(|v| v == "1");
    let mut done = 0u32;
    loop {
        let job = match read_frame::<_, ToWorker>(&mut chan, MAX_FRAME) {
            Ok(ToWorker::Job(job)) => job,
            Ok(ToWorker::Shutdown) | Err(FrameError::Closed) => return 0,
            Err(e) => {
                tracing::error!("worker: bad frame from supervisor: {e}");
                return EXIT_PROTOCOL;
            }
        };
        rss::reset_peak();
        let started = Instant::now();
        let path = job.path.to_path_buf();
        if faults {
            faults::maybe_inject(&path);
        }
        let (outcome, stages, audio_s) = engine.analyse(&path);
        let stats = FileStats {
            size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            audio_s,
            wall_us: started.elapsed().as_micros() as u64,
            stages,
            peak_rss_bytes: rss::peak_bytes(),
        };
        let reply = FromWorker::Done {
            job_id: job.id,
            outcome,
            stats,
        };
        if let Err(e) = write_frame(&mut chan, &reply) {
            tracing::error!("worker: could not send result: {e}");
            return EXIT_PROTOCOL;
        }
        done += 1;
        if done >= cfg.recycle_after || engine.wants_recycle() {
            return EXIT_RECYCLE;
        }
    }
}

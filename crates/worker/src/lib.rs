//! The worker process body: handshake, then one job at a time until recycled, told to stop, or
//! the channel closes. Runs under the memory cap the supervisor set before exec. The models are
//! loaded once, before the handshake; a model failure ends the worker after its reply (planned
//! recycle) so that a retry of the file gets a fresh runtime.

mod engine;
mod faults;
pub mod sandbox;

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::time::Instant;
use trackmill_types::frame::{read_frame, write_frame, FrameError, MAX_FRAME};
use trackmill_types::procmem::PeakMeter;
use trackmill_types::{
    FileStats, FromWorker, Hello, Outcome, Role, StageTimes, ToWorker, EXIT_PROTOCOL, EXIT_RECYCLE,
};

pub use engine::{AnalysisSettings, Engine, EngineConfig};

/// Environment variable that enables the fault-injection engine used by the end-to-end tests.
pub const FAULT_ENV: &str = "TRACKMILL_FAULT_INJECTION";

/// Worker settings, passed by the supervisor on the hidden subcommand's command line.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Exit with [`EXIT_RECYCLE`] after this many files (already jittered by the supervisor).
    pub recycle_after: u32,
    pub engine: EngineConfig,
    /// False: a job's path is opened with `O_NOFOLLOW` (`library.follow_symlinks = false`).
    pub follow_symlinks: bool,
}

/// Restores the default action of SIGSEGV and SIGBUS. The Rust runtime installs a handler for
/// stack-overflow detection that, for a signal it did not cause (sent by another process), resets
/// the action and returns: the first such signal would be swallowed and the worker would carry on.
/// A worker must die of it so the supervisor records a crash. A stack overflow still ends the
/// worker with SIGSEGV (the guard page stays), only without Rust's message.
fn default_fatal_signals() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Keeps memory freed after one file for the next instead of returning it to the kernel at once.
/// Every file allocates and frees the same buffers (FFT frames, loudness histograms, decoder
/// packets); with glibc's defaults each file grew the heap, faulted the pages in and trimmed them
/// again, which cost more than the analysis of a short file. Up to 16 MiB of free heap is kept
/// (it counts in the worker's RSS, well under any cap), and blocks of 4 MiB and more still come
/// from mmap and go back when freed, so a large file's buffers are not kept.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any worker thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// What one file gave: the parts of the reply, and whether a model failed on it.
struct Worked {
    outcome: Outcome,
    stages: StageTimes,
    audio_s: f64,
    size: u64,
    model_failed: bool,
}

/// A file's analysis, or (fault injection) a lie to send instead of its reply.
enum Work {
    Done(Worked),
    Lie(faults::Lie),
}

/// Opens the job's file once (its tags, audio and size all come from this descriptor) and
/// analyses it, unless the fault engine (`faults`) says otherwise.
fn work(engine: &mut Engine, path: &std::path::Path, follow_symlinks: bool, faults: bool) -> Work {
    let unanalysed = |outcome, size, model_failed| {
        Work::Done(Worked {
            outcome,
            stages: StageTimes::default(),
            audio_s: 0.0,
            size,
            model_failed,
        })
    };
    let (file, len) = match trackmill_analysis::open_input(path, follow_symlinks) {
        Ok(opened) => opened,
        Err(e) => return unanalysed(Outcome::Failed(e.to_failure()), 0, false),
    };
    match faults.then(|| faults::maybe_inject(&file)).flatten() {
        Some(faults::Injected::Lie(lie)) => Work::Lie(lie),
        Some(faults::Injected::Answer(outcome)) => unanalysed(outcome, len, false),
        Some(faults::Injected::Fail(f)) => unanalysed(Outcome::Failed(f), len, true),
        None => {
            let (outcome, stages, audio_s) = engine.analyze(file, len);
            Work::Done(Worked {
                outcome,
                stages,
                audio_s,
                size: len,
                model_failed: false,
            })
        }
    }
}

/// Runs the worker loop on `chan` and returns the process exit code.
pub fn run(chan: UnixStream, cfg: WorkerConfig) -> i32 {
    default_fatal_signals();
    tune_allocator();
    // Models load before the hello, so that no job (and no job deadline) waits on them.
    let mut engine = Engine::new(&cfg.engine);
    let faults = std::env::var_os(FAULT_ENV).is_some_and(|v| v == "1");
    if faults {
        faults::before_hello();
    }
    // Jobs are read through a buffer (a frame in one read, not two); replies are written
    // through the same socket, unbuffered.
    let mut jobs = BufReader::new(&chan);
    let mut replies = &chan;
    if let Err(e) = write_frame(&mut replies, &FromWorker::Hello(Hello::new(Role::Worker))) {
        tracing::error!("worker: handshake failed: {e}");
        return EXIT_PROTOCOL;
    }
    let mut peak = PeakMeter::open();
    let mut done = 0u32;
    loop {
        let job = match read_frame::<_, ToWorker>(&mut jobs, MAX_FRAME) {
            Ok(ToWorker::Job(job)) => job,
            Ok(ToWorker::Shutdown) | Err(FrameError::Closed) => return 0,
            Err(e) => {
                tracing::error!("worker: bad frame from supervisor: {e}");
                return EXIT_PROTOCOL;
            }
        };
        peak.reset();
        let started = Instant::now();
        let path = job.path.to_path_buf();
        let Worked {
            outcome,
            stages,
            audio_s,
            size,
            model_failed,
        } = match work(&mut engine, &path, cfg.follow_symlinks, faults) {
            Work::Done(w) => w,
            Work::Lie(lie) => {
                if let Err(e) = faults::lie(lie, &mut replies, job.id) {
                    tracing::error!("worker: could not send the lie: {e}");
                    return EXIT_PROTOCOL;
                }
                continue;
            }
        };
        let stats = FileStats {
            size,
            audio_s,
            wall_us: started.elapsed().as_micros() as u64,
            stages,
            peak_rss_bytes: peak.peak_bytes(),
        };
        done += 1;
        let last = done >= cfg.recycle_after || engine.wants_recycle() || model_failed;
        let reply = FromWorker::Done {
            job_id: job.id,
            outcome,
            stats,
            last,
        };
        if let Err(e) = write_frame(&mut replies, &reply) {
            tracing::error!("worker: could not send result: {e}");
            return EXIT_PROTOCOL;
        }
        if last {
            return EXIT_RECYCLE;
        }
    }
}

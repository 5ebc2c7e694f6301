//! The hidden `worker` subcommand: its command line (recycling, which models to load and how, the
//! library roots its sandbox may read) and, with `--probe-models`, the one-off model check the
//! supervisor runs in a capped worker before a scan. The sandbox is entered first of all.

use serde_json::json;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;
use trackmill_analysis::model::{ModelConfig, ModelSet};
use trackmill_supervisor::spawn::CHANNEL_FD;
use trackmill_worker::sandbox::Policy;
use trackmill_worker::{EngineConfig, WorkerConfig};

/// Set by the supervisor only (see `models::worker_args`).
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long, default_value_t = 200)]
    pub recycle_after: u32,
    /// A model to load (repeatable); none means DSP-only analysis.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Directory of the model manifests (absolute, resolved by the supervisor).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
    /// The ONNX Runtime library the supervisor's probe loaded.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Register the CUDA execution provider (CPU when it cannot be).
    #[arg(long)]
    pub gpu: bool,
    #[arg(long, default_value_t = 1)]
    pub model_threads: usize,
    /// Load the models, write a JSON report to the channel and exit.
    #[arg(long)]
    pub probe_models: bool,
    /// A library root (repeatable): the sandbox lets the worker read files only under these
    /// (and the models, the runtime library and the system's libraries). None: the file system
    /// is not restricted.
    #[arg(long = "library-root")]
    pub library_roots: Vec<PathBuf>,
    /// Open each file with O_NOFOLLOW (`library.follow_symlinks = false`).
    #[arg(long)]
    pub no_follow_symlinks: bool,
}

impl WorkerArgs {
    /// The model settings, or `None` for DSP-only analysis.
    pub fn model_config(&self) -> Option<ModelConfig> {
        if self.models.is_empty() {
            return None;
        }
        let default = ModelConfig::default();
        Some(ModelConfig {
            models_dir: self.models_dir.clone().unwrap_or(default.models_dir),
            runtime_path: self.ort_lib.clone(),
            enabled: self.models.clone(),
            gpu: self.gpu,
            intra_threads: self.model_threads.max(1),
        })
    }
}

/// What the worker's sandbox lets it read: the library roots, and with them the models, the
/// runtime library's directory and the directories of `LD_LIBRARY_PATH`.
fn sandbox_policy(args: &WorkerArgs) -> Policy {
    let mut read = args.library_roots.clone();
    if !read.is_empty() {
        if let Some(mc) = args.model_config() {
            read.push(mc.models_dir.clone());
            if let Some(dir) = mc
                .resolve_runtime()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
            {
                read.push(dir);
            }
        }
        if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
            read.extend(std::env::split_paths(&paths).filter(|p| p.is_absolute()));
        }
    }
    Policy {
        read,
        gpu: args.gpu,
        write: Vec::new(),
    }
}

/// Runs the worker (or the probe) on the channel the supervisor placed on fd 3; returns the exit
/// code.
pub fn run(args: WorkerArgs) -> i32 {
    let report = trackmill_worker::sandbox::enter(&sandbox_policy(&args));
    tracing::debug!("sandbox: {report}");
    // SAFETY: the supervisor placed our channel on fd 3 before exec; nothing else owns it.
    let chan = unsafe { UnixStream::from_raw_fd(CHANNEL_FD) };
    if args.probe_models {
        return probe(chan, &args);
    }
    let cfg = WorkerConfig {
        recycle_after: args.recycle_after,
        engine: EngineConfig {
            analysis: Default::default(),
            models: args.model_config(),
        },
        follow_symlinks: !args.no_follow_symlinks,
    };
    trackmill_worker::run(chan, cfg)
}

/// Loads the models as a worker would and reports what happened as one JSON document.
fn probe(mut chan: UnixStream, args: &WorkerArgs) -> i32 {
    let report = match args.model_config() {
        None => json!({ "ok": false, "error": "no model configured" }),
        Some(cfg) => {
            let t = Instant::now();
            match ModelSet::load(&cfg) {
                Ok(set) => json!({
                    "ok": true,
                    "models": set.model_names(),
                    "runtime_path": set.runtime().path.display().to_string(),
                    "runtime_version": set.runtime().version,
                    "provider": set.execution_provider(),
                    "gpu_fallback": set.gpu_fallback(),
                    "load_ms": t.elapsed().as_secs_f64() * 1e3,
                    "rss_bytes": trackmill_types::procmem::rss_bytes(std::process::id()),
                }),
                Err(e) => json!({ "ok": false, "error": e.to_string(), "oom": e.is_oom() }),
            }
        }
    };
    match chan.write_all(report.to_string().as_bytes()) {
        Ok(()) => 0,
        Err(_) => trackmill_types::EXIT_PROTOCOL,
    }
}

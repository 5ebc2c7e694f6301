//! Analyses files and prints each result as JSON with the process's memory figures:
//! `idle_rss_kb` (VmRSS before the analysis), `vm_hwm_kb` (peak RSS, VmHWM, reset just before
//! the analysis) and `peak_over_idle_kb`. With `--models`, the default models are loaded once
//! and run on each file after its DSP analysis, as a worker does. Several files run one after
//! another in the one process (one compact JSON line each); a single file prints pretty JSON.
//! Usage: `analyze [--no-tags] [--models] FILE...`.

use std::path::PathBuf;
use std::time::Instant;
use trackmill_analysis::model::{ModelConfig, ModelSet};
use trackmill_analysis::{analyze_file, analyze_file_with, Options};
use trackmill_types::procmem::{self, PeakMeter};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let paths: Vec<PathBuf> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    if paths.is_empty() {
        eprintln!("usage: analyze [--no-tags] [--models] FILE...");
        return std::process::ExitCode::from(2);
    }
    let opts = Options {
        read_tags: !args.iter().any(|a| a == "--no-tags"),
        ..Options::default()
    };
    let mut models = if args.iter().any(|a| a == "--models") {
        match ModelSet::load(&ModelConfig::default()) {
            Ok(set) => Some(set),
            Err(e) => {
                eprintln!("analyze: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let mut code = 0u8;
    // The worker's per-file meter: VmHWM reset before each analysis covers that analysis only.
    let mut peak = PeakMeter::open();
    for path in &paths {
        let idle = procmem::rss_bytes(std::process::id()) / 1024;
        peak.reset();
        let t = Instant::now();
        let (result, embeddings) = match models.as_mut() {
            None => (analyze_file(path, &opts), None),
            Some(set) => {
                let mut c = set.collector();
                let r = analyze_file_with(path, &opts, &mut c);
                let e = set.infer(c).map(|o| o.embeddings.len());
                (r, Some(e.map_err(|e| e.to_string())))
            }
        };
        let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
        let hwm = peak.peak_bytes() / 1024;
        let mut out = serde_json::json!({
            "path": path.to_string_lossy(),
            "wall_ms": wall_ms,
            "idle_rss_kb": idle,
            "vm_hwm_kb": hwm,
            "peak_over_idle_kb": hwm.saturating_sub(idle),
        });
        match embeddings {
            Some(Ok(n)) => out["model_embeddings"] = n.into(),
            Some(Err(e)) => {
                out["model_error"] = e.into();
                code = 1;
            }
            None => {}
        }
        match result {
            Ok(a) => {
                out["ok"] = true.into();
                out["analysis"] = serde_json::to_value(&a.analysis).unwrap_or_default();
                out["stages"] = serde_json::to_value(&a.stages).unwrap_or_default();
            }
            Err(e) => {
                out["ok"] = false.into();
                out["failure"] = serde_json::to_value(e.to_failure()).unwrap_or_default();
                code = 1;
            }
        }
        let text = if paths.len() == 1 {
            serde_json::to_string_pretty(&out)
        } else {
            serde_json::to_string(&out)
        };
        println!("{}", text.unwrap_or_default());
    }
    std::process::ExitCode::from(code)
}

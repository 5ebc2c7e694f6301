//! Analyses one file and prints the result as JSON with the process's memory figures:
//! `idle_rss_kb` (VmRSS before the analysis), `vm_hwm_kb` (peak RSS, VmHWM, reset just before
//! the analysis) and `peak_over_idle_kb`. Usage: `analyze FILE [--no-tags]`.

use std::path::PathBuf;
use std::time::Instant;
use trackmill_analysis::{analyze_file, Options};

fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
    else {
        eprintln!("usage: analyze FILE [--no-tags]");
        return std::process::ExitCode::from(2);
    };
    let opts = Options {
        read_tags: !args.iter().any(|a| a == "--no-tags"),
        ..Options::default()
    };
    let idle = status_kb("VmRSS:").unwrap_or(0);
    // Reset the peak-RSS mark so VmHWM covers the analysis only.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let result = analyze_file(&path, &opts);
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    let hwm = status_kb("VmHWM:").unwrap_or(0);
    let mut out = serde_json::json!({
        "path": path.to_string_lossy(),
        "wall_ms": wall_ms,
        "idle_rss_kb": idle,
        "vm_hwm_kb": hwm,
        "peak_over_idle_kb": hwm.saturating_sub(idle),
    });
    let code = match result {
        Ok(a) => {
            out["ok"] = true.into();
            out["analysis"] = serde_json::to_value(&a.analysis).unwrap_or_default();
            out["stages"] = serde_json::to_value(&a.stages).unwrap_or_default();
            0
        }
        Err(e) => {
            out["ok"] = false.into();
            out["failure"] = serde_json::to_value(e.to_failure()).unwrap_or_default();
            1
        }
    };
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    std::process::ExitCode::from(code)
}

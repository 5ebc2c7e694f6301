//! Loads the runtime and the enabled models, runs them on a generated sine sweep, and prints
//! session start time, inference time per audio second and the process's memory as JSON.
//! Used to measure the smallest address-space cap that works:
//! `prlimit --as=$((96<<20)) target/release/examples/model_probe 60`.

use std::time::Instant;
use trackmill_analysis::model::{ModelConfig, ModelSet};
use trackmill_analysis::MonoSink;

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `model_probe FILE`: DSP-only analysis time against analysis plus the model stage.
fn compare(path: &std::path::Path) {
    use trackmill_analysis::{analyze_file, analyze_file_with, Options};
    let opts = Options::default();
    let mut set = ModelSet::load(&ModelConfig::default()).unwrap_or_else(|e| {
        eprintln!("model_probe: {e}");
        std::process::exit(2)
    });
    // Warm the page cache and the allocator once.
    let _ = analyze_file(path, &opts);
    let t0 = Instant::now();
    let dsp = analyze_file(path, &opts);
    let dsp_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut c = set.collector();
    let with = analyze_file_with(path, &opts, &mut c);
    let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let out = set.infer(c);
    let model_ms = t2.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::json!({
            "file": path.display().to_string(),
            "dsp_ok": dsp.is_ok() && with.is_ok(),
            "dsp_only_ms": dsp_ms,
            "dsp_with_collector_ms": decode_ms,
            "model_ms": model_ms,
            "model_over_dsp": model_ms / dsp_ms,
            "model_audio_s": out.as_ref().map(|o| o.audio_seen_s).unwrap_or(0.0),
            "embeddings": out.map(|o| o.embeddings.len()).unwrap_or(0),
        })
    );
}

fn main() {
    if let Some(p) = std::env::args()
        .nth(1)
        .filter(|a| std::path::Path::new(a).is_file())
    {
        return compare(std::path::Path::new(&p));
    }
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60.0);
    let cfg = ModelConfig::default();
    let t0 = Instant::now();
    let mut set = match ModelSet::load(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("model_probe: {e}");
            std::process::exit(2);
        }
    };
    let start_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_loaded_kb = status_kb("VmRSS:");
    let rate = 22_050.0;
    let n = (seconds * rate) as usize;
    let mut c = set.collector();
    c.begin(Some(seconds));
    let mut phase = 0f64;
    let mut buf = Vec::with_capacity(4096);
    for i in 0..n {
        let f = 110.0 * 2f64.powf(4.0 * i as f64 / n as f64);
        phase += 2.0 * std::f64::consts::PI * f / rate;
        buf.push((0.5 * phase.sin()) as f32);
        if buf.len() == 4096 {
            c.accept(&buf);
            buf.clear();
        }
    }
    c.accept(&buf);
    let t1 = Instant::now();
    let out = match set.infer(c) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "model_probe: {e} (failure class {})",
                e.to_failure().class.as_str()
            );
            std::process::exit(3);
        }
    };
    let infer_s = t1.elapsed().as_secs_f64();
    let seen = out.audio_seen_s;
    println!(
        "{}",
        serde_json::json!({
            "audio_s": seconds,
            "model_audio_s": seen,
            "session_start_ms": start_ms,
            "infer_ms": infer_s * 1e3,
            "infer_ms_per_audio_s": infer_s * 1e3 / seen,
            "rss_after_load_kb": rss_loaded_kb,
            "rss_kb": status_kb("VmRSS:"),
            "hwm_kb": status_kb("VmHWM:"),
            "vm_peak_kb": status_kb("VmPeak:"),
            "provider": set.execution_provider(),
            "runtime": set.runtime().version,
            "embeddings": out.embeddings.iter().map(|e| (e.model.as_str().to_string(), e.values.len())).collect::<Vec<_>>(),
            "stats": out.embeddings.iter().find(|e| e.model.as_str() == "basic-pitch/stats").map(|e| e.values.clone()),
        })
    );
}

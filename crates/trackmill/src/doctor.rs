//! `trackmill doctor [--json]`: what a scan would run with. The ONNX Runtime (path, version), the
//! configured models with their checksums, GPU availability, database reachability, the
//! effective worker limits and what the kernel grants the workers' sandbox. Exit 0 when
//! everything works, 9 otherwise.

use crate::cli::{exit, load_config, CliResult, Overrides};
use crate::models;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trackmill_analysis::model::doctor_report;
use trackmill_dbwriter::DbUrl;
use trackmill_supervisor::units::format_size;
use trackmill_supervisor::Config;

#[derive(clap::Args)]
pub struct DoctorArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…` (default as for `scan`).
    #[arg(long, env = "TRACKMILL_DATABASE_URL")]
    db: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DoctorArgs) -> CliResult {
    let cfg = load_config(a.config.as_deref(), &Overrides::default())?;
    let mc = models::model_config(&cfg, a.config.as_deref());
    let mut problems: Vec<String> = Vec::new();

    let model_report = if mc.enabled.is_empty() {
        json!({ "enabled": [], "note": "no models configured: DSP-only analysis" })
    } else {
        let r = doctor_report(&mc);
        if r["runtime"]["found"] != true {
            problems.push(format!(
                "ONNX Runtime: {}",
                r["runtime"]["error"].as_str().unwrap_or("not found")
            ));
        }
        for m in r["models"].as_array().into_iter().flatten() {
            if m["ok"] != true {
                problems.push(format!(
                    "model {}: {}",
                    m["name"].as_str().unwrap_or("?"),
                    model_problem(m)
                ));
            }
        }
        if r["load"]["ok"] != true {
            problems.push(format!(
                "loading the models: {}",
                r["load"]["error"].as_str().unwrap_or("failed")
            ));
        }
        r
    };
    let gpu = gpu_report(&cfg, &model_report);
    let database = database_report(a.db.as_deref(), &cfg, &mut problems);
    let limits = limits_report(&cfg);
    let sandbox = sandbox_report();
    let report = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": a.config.as_ref().map_or("(built-in defaults)".to_string(), |p| p.display().to_string()),
        "models": model_report,
        "gpu": gpu,
        "database": database,
        "limits": limits,
        "sandbox": sandbox,
        "problems": problems,
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_human(&report);
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(exit::CHECK_FAILED))
    }
}

/// What a worker's sandbox gets on this kernel (`worker sandbox: …` in a scan's log).
fn sandbox_report() -> Value {
    let r = trackmill_worker::sandbox::probe();
    json!({
        "landlock_abi": r.landlock_abi,
        "filesystem_restricted": r.filesystem,
        "network_restricted": r.network,
        "seccomp": r.seccomp,
        "summary": r.to_string(),
    })
}

/// Why a model entry of the report is not ok.
fn model_problem(m: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    if let Some(e) = m["error"].as_str() {
        e.to_string()
    } else if m["sha256"].is_null() {
        format!("model file {} is missing", text(&m["file"]))
    } else {
        format!(
            "checksum mismatch: expected {}, found {}",
            text(&m["sha256_expected"]),
            text(&m["sha256"])
        )
    }
}

fn gpu_report(cfg: &Config, models: &Value) -> Value {
    let device = ["/dev/nvidiactl", "/dev/nvidia0"]
        .iter()
        .any(|p| Path::new(p).exists());
    let load = &models["load"];
    let provider = load["execution_provider"].as_str().unwrap_or("none");
    let state = if !cfg.analysis.gpu {
        "not requested (analysis.gpu = false)".to_string()
    } else if provider == "cuda" {
        "models run on CUDA".to_string()
    } else {
        format!(
            "requested, but the models run on CPU: {}",
            load["gpu_fallback"]
                .as_str()
                .or(load["error"].as_str())
                .and_then(|r| r.lines().next())
                .unwrap_or("the CUDA execution provider is unavailable")
        )
    };
    json!({
        "requested": cfg.analysis.gpu,
        "nvidia_device": device,
        "execution_provider": provider,
        "state": state,
    })
}

fn database_report(arg: Option<&str>, cfg: &Config, problems: &mut Vec<String>) -> Value {
    let text = arg
        .map(str::to_string)
        .or_else(|| (!cfg.database.url.is_empty()).then(|| cfg.database.url.clone()))
        .unwrap_or_else(trackmill_dbwriter::default_url);
    let url = match DbUrl::parse(&text) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("database URL: {e}"));
            return json!({ "reachable": false, "error": e.to_string() });
        }
    };
    if let DbUrl::Sqlite(p) = &url {
        if !p.exists() {
            return json!({
                "url": url.redacted(),
                "reachable": true,
                "note": "the SQLite file does not exist yet; the first scan creates it",
            });
        }
    }
    match trackmill_dbwriter::counts(&url) {
        Ok(counts) => json!({ "url": url.redacted(), "reachable": true, "tracks": counts }),
        Err(e) => {
            problems.push(format!("database {}: {e}", url.redacted()));
            json!({ "url": url.redacted(), "reachable": false, "error": e.to_string() })
        }
    }
}

fn meminfo_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn limits_report(cfg: &Config) -> Value {
    let w = &cfg.workers;
    let workers = cfg.worker_count();
    let ram = meminfo_kb("MemTotal:").map(|k| k * 1024);
    json!({
        "workers": workers,
        "memory_limit": format_size(w.memory_limit),
        "memory_limit_bytes": w.memory_limit,
        "cap": if cfg.analysis.gpu { "RLIMIT_DATA (GPU mode)" } else { "RLIMIT_AS" },
        "all_workers_at_cap": format_size(w.memory_limit.saturating_mul(workers as u64)),
        "ram": ram.map(format_size),
        "job_timeout_s": w.job_timeout.as_secs_f64(),
        "kill_grace_s": w.kill_grace.as_secs_f64(),
        "recycle_after": w.recycle_after,
        "max_attempts": w.max_attempts,
        "memory_high": cfg.memory.high,
        "memory_critical": cfg.memory.critical,
        "model_threads": cfg.analysis.model_threads,
    })
}

fn print_human(r: &Value) {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!(
        "trackmill {}  (config: {})",
        s(&r["version"]),
        s(&r["config"])
    );
    let m = &r["models"];
    println!("\nONNX Runtime");
    if m["runtime"]["found"] == true {
        println!(
            "  {}  version {}",
            s(&m["runtime"]["path"]),
            s(&m["load"]["runtime_version"])
        );
    } else if m.get("runtime").is_some() {
        println!("  NOT FOUND: {}", s(&m["runtime"]["error"]));
    } else {
        println!("  not needed: {}", s(&m["note"]));
    }
    println!("\nModels (from {})", s(&m["models_dir"]));
    for model in m["models"].as_array().into_iter().flatten() {
        let verdict = if model["ok"] == true {
            "checksum ok".to_string()
        } else {
            format!("PROBLEM: {}", model_problem(model))
        };
        println!(
            "  {:<14} {}  {}",
            s(&model["name"]),
            s(&model["file"]),
            verdict
        );
        if model["ok"] == true {
            println!("  {:<14} sha256 {}", "", s(&model["sha256"]));
        }
    }
    if m["load"]["ok"] == true {
        println!(
            "  loaded on {} with {} intra-op thread(s)",
            s(&m["load"]["execution_provider"]),
            s(&m["intra_threads"])
        );
    } else if m.get("load").is_some() {
        println!("  LOAD FAILED: {}", s(&m["load"]["error"]));
    }
    let g = &r["gpu"];
    println!(
        "\nGPU\n  {}; NVIDIA device {}",
        s(&g["state"]),
        if g["nvidia_device"] == true {
            "present"
        } else {
            "absent"
        }
    );
    let d = &r["database"];
    println!(
        "\nDatabase\n  {}  {}",
        s(&d["url"]),
        if d["reachable"] == true {
            d.get("tracks")
                .map(|t| format!("reachable, {} tracks stored", s(&t["total"])))
                .unwrap_or_else(|| s(&d["note"]))
        } else {
            format!("UNREACHABLE: {}", s(&d["error"]))
        }
    );
    println!("\nWorker sandbox\n  {}", s(&r["sandbox"]["summary"]));
    let l = &r["limits"];
    println!(
        "\nLimits\n  {} workers, each capped at {} ({}); {} if all reach the cap, RAM {}\n  \
         job timeout {} s (kill grace {} s), recycle after {} files, {} attempts before quarantine\n  \
         memory pressure at {} / critical at {} of RAM; {} ONNX thread(s) per worker",
        s(&l["workers"]),
        s(&l["memory_limit"]),
        s(&l["cap"]),
        s(&l["all_workers_at_cap"]),
        s(&l["ram"]),
        s(&l["job_timeout_s"]),
        s(&l["kill_grace_s"]),
        s(&l["recycle_after"]),
        s(&l["max_attempts"]),
        s(&l["memory_high"]),
        s(&l["memory_critical"]),
        s(&l["model_threads"]),
    );
    let problems = r["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        println!("\nNo problems found.");
    } else {
        println!("\nProblems:");
        for p in problems {
            println!("  - {}", s(&p));
        }
    }
}

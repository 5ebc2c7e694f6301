//! `trackmill inspect FILE... [--json]`: analyses files through a capped worker, spawned exactly as
//! a scan spawns its workers, and prints the result (or the classified failure) directly, for
//! operators debugging a file. Nothing is stored.

use crate::cli::{exit, load_config, CliError, CliResult, Overrides};
use crate::models;
use serde_json::{json, Value};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use trackmill_supervisor::inspect::{inspect_file, InspectResult, InspectSpawn};
use trackmill_supervisor::spawn::with_library_roots;
use trackmill_supervisor::units::format_size;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Audio files to analyse.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    config: Option<PathBuf>,
    /// The worker's memory cap, e.g. 512MiB (default: workers.memory_limit).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Per-file deadline, e.g. 90s (default: workers.job_timeout).
    #[arg(long)]
    job_timeout: Option<String>,
    /// Skip the models: DSP-only analysis.
    #[arg(long)]
    no_models: bool,
}

pub fn run(a: InspectArgs) -> CliResult {
    let cfg = load_config(
        a.config.as_deref(),
        &Overrides {
            memory_limit: a.memory_limit.as_deref(),
            job_timeout: a.job_timeout.as_deref(),
            no_models: a.no_models,
            ..Overrides::default()
        },
    )?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failure(format!("cannot find my own executable: {e}")))?;
    let env = crate::children::worker_env();
    let args = models::worker_args(&cfg, a.config.as_deref(), &exe, &env).args;
    let mut spawn = InspectSpawn {
        exe,
        args,
        env,
        gpu: cfg.analysis.gpu,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::failure)?;
    let mut all_ok = true;
    let mut reports = Vec::new();
    for file in &a.files {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        // The worker's sandbox reads the file's own directory, as a scan's reads its roots.
        let real = std::fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone());
        let dir: Vec<PathBuf> = real.parent().map(PathBuf::from).into_iter().collect();
        spawn.args = with_library_roots(&spawn.args, &dir);
        let result = rt.block_on(inspect_file(&spawn, &abs, &cfg));
        all_ok &= matches!(result, InspectResult::Analyzed(..));
        if a.json {
            reports.push(to_json(&abs, &result));
        } else {
            print_human(&abs, &result);
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(reports)).unwrap_or_default()
        );
    }
    Ok(ExitCode::from(if all_ok {
        exit::OK
    } else {
        exit::CHECK_FAILED
    }))
}

fn to_json(path: &Path, v: &InspectResult) -> Value {
    match v {
        InspectResult::Analyzed(a, stats) => json!({
            "path": path.display().to_string(),
            "status": "analyzed",
            "analysis": serde_json::to_value(a).unwrap_or_default(),
            "stats": serde_json::to_value(stats).unwrap_or_default(),
        }),
        InspectResult::Failed {
            class,
            stage,
            message,
            stats,
        } => json!({
            "path": path.display().to_string(),
            "status": "failed",
            "class": class,
            "stage": stage,
            "message": message,
            "stats": stats.as_ref().map(|s| serde_json::to_value(s).unwrap_or_default()),
        }),
    }
}

const PITCH: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

fn print_human(path: &Path, v: &InspectResult) {
    let InspectResult::Analyzed(a, stats) = v else {
        if let InspectResult::Failed {
            class,
            stage,
            message,
            ..
        } = v
        {
            println!(
                "{}: FAILED ({class}, stage {stage}): {message}",
                path.display()
            );
        }
        return;
    };
    println!(
        "{}: analysed in {:.2} s, worker peak RSS {}{}",
        path.display(),
        stats.wall_us as f64 / 1e6,
        format_size(stats.peak_rss_bytes),
        if a.partial { " (PARTIAL)" } else { "" }
    );
    let au = &a.audio;
    println!(
        "  audio:      {} / {}, {} Hz, {} ch, {:.1} s decoded{}",
        au.container.as_str(),
        au.codec.as_str(),
        au.sample_rate,
        au.channels,
        au.decoded_s,
        au.bitrate_kbps
            .map(|b| format!(", {b} kbit/s"))
            .unwrap_or_default()
    );
    let t = &a.tags;
    if let Some(title) = &t.title {
        let artists: Vec<&str> = t.artists.iter().map(|x| x.as_str()).collect();
        println!("  tags:       {} - {}", artists.join(", "), title.as_str());
    }
    if let Some(f) = &a.features {
        println!(
            "  loudness:   {:.1} LUFS, range {:.1} LU, true peak {:.1} dBTP, track gain {:.2} dB",
            f.integrated_lufs, f.loudness_range_lu, f.true_peak_dbtp, f.replaygain_track_gain_db
        );
        println!(
            "  rhythm:     {:.2} BPM, {:.2} onsets/s; key {} {} (strength {:.2})",
            f.bpm,
            f.onset_rate,
            PITCH[usize::from(f.key) % 12],
            f.mode.as_str(),
            f.key_strength
        );
    }
    for e in &a.embeddings {
        let head: Vec<String> = e.values.iter().take(4).map(|x| format!("{x:.3}")).collect();
        println!(
            "  embedding:  {} [{}] {}{}",
            e.model.as_str(),
            e.values.len(),
            head.join(" "),
            if e.values.len() > 4 { " …" } else { "" }
        );
    }
    for n in &a.notes {
        println!("  note:       {}", n.as_str());
    }
}

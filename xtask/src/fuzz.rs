//! `cargo xtask fuzz [SECONDS]`: bounded fuzzing. Runs the property test over mutated real files
//! (`crates/analysis/tests/fuzz.rs`) in release mode for SECONDS (default 60): no panic may
//! escape and no analysis may allocate beyond its cap; then the config parser over mutated
//! config text (`crates/supervisor/tests/config_fuzz.rs`) for a tenth of that: no panic.

use crate::util;
use anyhow::{bail, Context, Result};

pub fn run(args: &[String]) -> Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("SECONDS must be a whole number, not {s:?}"))?,
        None => 60,
    };
    if !util::have("ffmpeg") {
        bail!("fuzzing needs ffmpeg to make its seed files (cargo xtask setup installs it)");
    }
    util::run(
        util::cargo()
            .args([
                "test",
                "--release",
                "-p",
                "trackmill-analysis",
                "--test",
                "fuzz",
                "--",
                "--nocapture",
            ])
            .env("TRACKMILL_FUZZ_SECONDS", seconds.to_string()),
    )?;
    util::run(
        util::cargo()
            .args([
                "test",
                "--release",
                "-p",
                "trackmill-supervisor",
                "--test",
                "config_fuzz",
                "--",
                "--nocapture",
            ])
            .env("TRACKMILL_FUZZ_SECONDS", (seconds / 10).max(1).to_string()),
    )
}

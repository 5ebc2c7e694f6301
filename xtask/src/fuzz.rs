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
    // The analysis on mutated real files, then the config parser on mutated config text.
    for (package, test, secs) in [
        ("trackmill-analysis", "fuzz", seconds),
        ("trackmill-supervisor", "config_fuzz", (seconds / 10).max(1)),
    ] {
        util::run(
            util::cargo()
                .args(["test", "--release", "-p", package, "--test", test])
                .args(["--", "--nocapture"])
                .env("TRACKMILL_FUZZ_SECONDS", secs.to_string()),
        )?;
    }
    Ok(())
}

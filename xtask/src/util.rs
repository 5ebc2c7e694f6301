//! Small helpers shared by the xtask commands: running commands, locating the workspace.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo`, as the one that runs xtask.
/// Builds the release binary and returns its path (under `CARGO_TARGET_DIR` when set).
pub fn release_binary() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "trackmill"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("release/trackmill"))
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command, failing with its description when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("could not start {desc}"))?;
    if !st.success() {
        bail!("{desc} failed: {st}");
    }
    Ok(())
}

/// True when `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

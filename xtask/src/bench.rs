//! `cargo xtask bench [pipeline|analysis|db|hosts|similarity|all]`.
use anyhow::{bail, Result};

pub fn run(args: &[String]) -> Result<()> {
    let what = args.first().map(String::as_str).unwrap_or("all");
    match what {
        "analysis" => crate::bench_analysis::run(),
        "db" => crate::bench_db::run(),
        "pipeline" => crate::bench_pipeline::run(),
        "hosts" => crate::bench_hosts::run(),
        "similarity" => crate::bench_similarity::run(),
        "all" => {
            crate::bench_pipeline::run()?;
            crate::bench_analysis::run()?;
            crate::bench_db::run()?;
            crate::bench_hosts::run()?;
            crate::bench_similarity::run()
        }
        other => {
            bail!("unknown benchmark {other:?} (pipeline, analysis, db, hosts, similarity, all)")
        }
    }
}

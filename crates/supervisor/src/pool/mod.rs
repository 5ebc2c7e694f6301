//! The worker pool: [`Pool`] owns the worker processes (spawn, jobs, the termination ladder,
//! shrinking, exits); the loop in `run.rs` only decides. Process actions go through a small
//! trait (`procs.rs`), so the pool's decisions are unit-tested with a fake (`tests.rs`).

mod exit;
mod intensity;
mod procs;
mod slot;
#[cfg(test)]
mod tests;
mod workers;

pub use exit::{describe, Exit};
pub use procs::OsProcesses;
pub use slot::{FileJob, InFlight, KillReason};
pub use workers::{Finished, Pool, PoolSettings, Reply};

//! The supervisor: one event loop that owns all job state, scans the library as a stream, hands one
//! file at a time to capped worker processes, retries by failure class, and sends terminal results
//! to the single DB-writer process.

pub mod api;
mod clients;
pub mod config;
pub mod control;
mod dbclient;
pub mod event;
pub mod inspect;
pub mod metrics;
mod pool;
mod pressure;
mod progress;
mod retry;
mod run;
mod scanner;
pub mod spawn;
pub mod summary;
mod systemd;
pub mod units;
mod watch;

pub use config::{Config, ConfigError};
pub use pool::describe;
pub use run::{scan, serve, ScanOptions, ServeOptions, SpawnSpec};
pub use summary::Summary;

//! The process actions the pool takes (start a worker, signal its process group, read its RSS),
//! behind a small trait so that the pool's decisions are unit-tested without processes.

use crate::event::{attach, Event};
use crate::spawn::{signal_group, spawn_child, ChildSpec};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::path::PathBuf;
use tokio::sync::mpsc::UnboundedSender;
use trackmill_types::{procmem, ToWorker};

/// What the pool asks for when it starts a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnRequest {
    pub slot: usize,
    pub gen: u64,
    /// The worker exits after this many files (jitter already applied).
    pub recycle_after: u32,
    pub memory_limit: u64,
}

/// A started worker: its pid and the sender of frames to it. What it sends back, and its exit,
/// arrive as [`Event::Worker`] with the request's slot and generation.
pub struct Started {
    pub pid: u32,
    pub tx: UnboundedSender<ToWorker>,
}

pub trait Processes {
    fn spawn(&mut self, req: &SpawnRequest) -> std::io::Result<Started>;
    /// Signals the worker's process group.
    fn signal(&mut self, pid: u32, sig: Signal);
    fn rss_bytes(&self, pid: u32) -> u64;
}

/// Real worker processes: the same binary's hidden `worker` subcommand, capped as
/// [`ChildSpec::worker`] decides, reporting to the loop's event channel.
pub struct OsProcesses {
    pub exe: PathBuf,
    /// Arguments of the worker subcommand; `--recycle-after N` is appended per process.
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub gpu: bool,
    pub events: UnboundedSender<Event>,
}

impl Processes for OsProcesses {
    fn spawn(&mut self, req: &SpawnRequest) -> std::io::Result<Started> {
        let mut args = self.args.clone();
        args.push("--recycle-after".into());
        args.push(req.recycle_after.to_string().into());
        let spec = ChildSpec::worker(
            self.exe.clone(),
            args,
            self.env.clone(),
            req.memory_limit,
            self.gpu,
        );
        let spawned = spawn_child(&spec)?;
        let pid = spawned.pid;
        let (slot, gen) = (req.slot, req.gen);
        let tx = attach::<_, ToWorker, _>(spawned, self.events.clone(), move |msg| {
            Event::Worker { slot, gen, msg }
        })?;
        Ok(Started { pid, tx })
    }

    fn signal(&mut self, pid: u32, sig: Signal) {
        signal_group(pid, sig);
    }

    fn rss_bytes(&self, pid: u32) -> u64 {
        procmem::rss_bytes(pid)
    }
}

//! The pool's decisions without processes: a fake [`Processes`] records what the pool spawns and
//! signals, and the tests feed it the events real workers would send.

use super::procs::{Processes, SpawnRequest, Started};
use super::slot::{FileJob, KillReason};
use super::workers::{Pool, PoolSettings, Reply};
use crate::event::{ChildExit, ChildMsg};
use nix::sys::signal::Signal;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use trackmill_types::{
    ExitKind, Failure, FailureClass, FileKey, FileStats, FromWorker, Hello, Outcome, PathBytes,
    Role, Stage, ToWorker, EXIT_RECYCLE,
};

#[derive(Default)]
struct FakeState {
    spawned: Vec<SpawnRequest>,
    signals: Vec<(u32, Signal)>,
    rss: HashMap<u32, u64>,
    /// Frames the pool sent, by pid.
    inbox: HashMap<u32, UnboundedReceiver<ToWorker>>,
}

/// Pids are 100 + the spawn's generation.
#[derive(Clone, Default)]
struct Fake(Rc<RefCell<FakeState>>);

impl Processes for Fake {
    fn spawn(&mut self, req: &SpawnRequest) -> std::io::Result<Started> {
        let mut st = self.0.borrow_mut();
        let pid = 100 + req.gen as u32;
        let (tx, rx) = unbounded_channel();
        st.inbox.insert(pid, rx);
        st.spawned.push(req.clone());
        Ok(Started { pid, tx })
    }

    fn signal(&mut self, pid: u32, sig: Signal) {
        self.0.borrow_mut().signals.push((pid, sig));
    }

    fn rss_bytes(&self, pid: u32) -> u64 {
        self.0.borrow().rss.get(&pid).copied().unwrap_or(0)
    }
}

impl Fake {
    fn signals(&self) -> Vec<(u32, Signal)> {
        self.0.borrow().signals.clone()
    }

    /// Everything the pool sent to `pid` so far.
    fn frames(&self, pid: u32) -> Vec<ToWorker> {
        let mut st = self.0.borrow_mut();
        let rx = st.inbox.get_mut(&pid).expect("a spawned pid");
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// (pid, generation) of the newest process spawned into `slot`.
    fn current(&self, slot: usize) -> (u32, u64) {
        let st = self.0.borrow();
        let req = st.spawned.iter().rev().find(|r| r.slot == slot).unwrap();
        (100 + req.gen as u32, req.gen)
    }
}

/// A worker's reply that its file failed (the pool does not look at the outcome).
fn done_frame(job_id: u64, last: bool) -> FromWorker {
    FromWorker::Done {
        job_id,
        outcome: Outcome::Failed(Failure::new(FailureClass::Corrupt, Stage::Decode, "x")),
        stats: FileStats::default(),
        last,
    }
}

fn settings() -> PoolSettings {
    PoolSettings {
        job_timeout: Duration::from_secs(10),
        kill_grace: Duration::from_secs(2),
        hello_timeout: Duration::from_secs(30),
        recycle_after: 100,
        memory_limit: 256 << 20,
        restart_intensity: 2,
        restart_window: Duration::from_secs(60),
    }
}

struct Harness {
    pool: Pool<Fake>,
    fake: Fake,
    t0: Instant,
}

impl Harness {
    fn new(workers: usize, settings: PoolSettings) -> Self {
        let fake = Fake::default();
        let t0 = Instant::now();
        let mut pool = Pool::new(fake.clone(), workers, settings, t0);
        pool.spawn_missing(workers, t0).unwrap();
        let mut h = Harness { pool, fake, t0 };
        for slot in 0..workers {
            h.send(slot, FromWorker::Hello(Hello::new(Role::Worker)));
        }
        h
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn event(&mut self, slot: usize, msg: ChildMsg<FromWorker>) -> Reply {
        let (_, gen) = self.fake.current(slot);
        self.pool.on_event(slot, gen, msg, self.t0)
    }

    fn send(&mut self, slot: usize, frame: FromWorker) -> Reply {
        self.event(slot, ChildMsg::Frame(frame))
    }

    /// Gives the worker in `slot` a file; returns the job's id.
    fn give(&mut self, slot: usize, name: &str) -> u64 {
        let job = FileJob::new(FileKey {
            path: PathBytes(name.as_bytes().to_vec()),
            size: 1,
            mtime_ns: 1,
        });
        self.pool.send_job(slot, job, self.t0).0
    }

    fn done(&mut self, slot: usize, job_id: u64) -> Reply {
        self.send(slot, done_frame(job_id, false))
    }

    fn exit(&mut self, slot: usize, raw_status: i32) -> Reply {
        self.event(
            slot,
            ChildMsg::Exited(ChildExit {
                status: ExitStatus::from_raw(raw_status),
                oom_message: false,
                last_stderr: String::new(),
            }),
        )
    }
}

fn exited(r: Reply) -> super::exit::Exit {
    match r {
        Reply::Exited(e) => e,
        other => panic!("expected an exit, got {other:?}"),
    }
}

#[test]
fn a_timeout_climbs_the_ladder_once_and_a_second_signal_kills_at_once() {
    let mut h = Harness::new(2, settings());
    let (pid, _) = h.fake.current(0);
    h.give(0, "/a");
    h.pool.tick(h.at(9.9));
    assert!(h.fake.signals().is_empty(), "nothing before the deadline");
    h.pool.tick(h.at(10.0));
    assert_eq!(h.fake.signals(), vec![(pid, Signal::SIGTERM)]);
    h.pool.tick(h.at(11.9));
    assert_eq!(h.fake.signals().len(), 1, "no KILL within the grace");
    h.pool.tick(h.at(12.0));
    h.pool.tick(h.at(13.0));
    assert_eq!(
        h.fake.signals(),
        vec![(pid, Signal::SIGTERM), (pid, Signal::SIGKILL)],
        "one KILL after the grace, not one per tick"
    );
    let e = exited(h.exit(0, libc::SIGKILL));
    assert_eq!(e.kind, ExitKind::Timeout);
    assert_eq!(e.in_flight.unwrap().job.key.path.0, b"/a");

    // A second shutdown signal: SIGKILL to everyone now, and the ladder sends no other KILL.
    let (other, _) = h.fake.current(1);
    h.pool.stop_all(KillReason::Stop, h.at(20.0));
    h.pool.kill_all_now();
    h.pool.tick(h.at(30.0));
    let to_other: Vec<Signal> = h
        .fake
        .signals()
        .into_iter()
        .filter(|(p, _)| *p == other)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(to_other, vec![Signal::SIGTERM, Signal::SIGKILL]);
    assert_eq!(exited(h.exit(1, libc::SIGKILL)).kind, ExitKind::Stopped);
}

#[test]
fn an_operators_kill_keeps_the_ladder_and_is_not_held_against_the_file() {
    let mut h = Harness::new(1, settings());
    let (pid, _) = h.fake.current(0);
    h.give(0, "/a");
    let (p, file) = h
        .pool
        .signal_on_request(0, Signal::SIGUSR1, h.at(1.0))
        .unwrap();
    assert_eq!((p, file.unwrap().0), (pid, b"/a".to_vec()));
    h.pool.tick(h.at(3.0));
    assert_eq!(
        h.fake.signals(),
        vec![(pid, Signal::SIGUSR1), (pid, Signal::SIGKILL)],
        "a signal the worker survives is followed by KILL after the grace"
    );
    assert_eq!(exited(h.exit(0, libc::SIGKILL)).kind, ExitKind::Killed);
    assert!(h
        .pool
        .signal_on_request(0, Signal::SIGTERM, h.at(4.0))
        .is_none());
}

#[test]
fn shrinking_four_to_one_stops_idle_workers_first_and_busy_ones_after_their_file() {
    let mut h = Harness::new(4, settings());
    let j1 = h.give(1, "/b");
    let j3 = h.give(3, "/d");
    h.pool.set_target(1);
    h.pool.shrink(1, h.t0);
    let stopped: Vec<usize> = (0..4)
        .filter(|&s| {
            let (pid, _) = h.fake.current(s);
            h.fake.frames(pid).contains(&ToWorker::Shutdown)
        })
        .collect();
    assert_eq!(stopped, vec![0, 2], "the idle ones, not the busy ones");
    assert!(h.fake.signals().is_empty());
    // Shrinking again before anything changed stops nobody else.
    h.pool.shrink(1, h.t0);
    for s in [1, 3] {
        let (pid, _) = h.fake.current(s);
        assert!(!h.fake.frames(pid).contains(&ToWorker::Shutdown));
    }
    for s in [0, 2] {
        assert_eq!(exited(h.exit(s, 0)).kind, ExitKind::Stopped);
    }
    h.pool.spawn_missing(4, h.t0).unwrap();
    assert_eq!(h.pool.alive(), 2, "nothing is respawned above the target");
    assert!(matches!(h.done(3, j3), Reply::Finished(_)));
    h.pool.shrink(1, h.t0);
    let (pid3, _) = h.fake.current(3);
    assert_eq!(h.fake.frames(pid3), vec![ToWorker::Shutdown]);
    // Slot 3 is still exiting when slot 1 finishes: a worker being stopped does not count as
    // staying, so slot 1 is kept.
    assert!(matches!(h.done(1, j1), Reply::Finished(_)));
    h.pool.shrink(1, h.t0);
    assert_eq!(exited(h.exit(3, 0)).kind, ExitKind::Stopped);
    assert_eq!(h.pool.alive(), 1);
    assert_eq!(h.pool.idle_slot(), Some(1), "the last worker keeps working");
    let rows = h.pool.statuses(h.t0);
    assert_eq!(rows.len(), 1, "no row for a stopped slot: {rows:?}");
    assert_eq!(rows[0].id, 1);
}

#[test]
fn a_worker_gets_nothing_after_its_last_file() {
    let mut h = Harness::new(
        1,
        PoolSettings {
            recycle_after: 2,
            ..settings()
        },
    );
    let (pid, _) = h.fake.current(0);
    for name in ["/a", "/b"] {
        let id = h.give(0, name);
        assert!(matches!(h.done(0, id), Reply::Finished(_)));
    }
    assert_eq!(h.pool.idle_slot(), None, "its last file is done");
    h.pool.shrink(0, h.t0);
    let frames = h.fake.frames(pid);
    assert_eq!(
        frames.len(),
        2,
        "two jobs and no shutdown frame: {frames:?}"
    );
    assert!(frames.iter().all(|f| matches!(f, ToWorker::Job(_))));
    let e = exited(h.exit(0, EXIT_RECYCLE << 8));
    assert_eq!(e.kind, ExitKind::Recycled);
    assert!(e.in_flight.is_none());
    h.pool.spawn_missing(1, h.t0).unwrap();
    assert_eq!(h.fake.current(0).1, 2, "a fresh process replaces it");
}

#[test]
fn too_many_unplanned_deaths_back_off_spawning() {
    let mut h = Harness::new(1, settings());
    for n in 0..3 {
        assert_eq!(exited(h.exit(0, libc::SIGSEGV)).kind, ExitKind::Crash);
        if n < 2 {
            h.pool.spawn_missing(1, h.t0).unwrap();
            assert_eq!(h.pool.alive(), 1);
        }
    }
    assert!(h.pool.degraded());
    h.pool.spawn_missing(1, h.t0).unwrap();
    assert_eq!(h.pool.alive(), 0, "spawning backs off");
    h.pool.spawn_missing(1, h.at(0.5)).unwrap();
    assert_eq!(h.pool.alive(), 1);
}

#[test]
fn under_memory_pressure_the_largest_busy_worker_is_stopped() {
    let mut h = Harness::new(3, settings());
    let pids: Vec<u32> = (0..3).map(|s| h.fake.current(s).0).collect();
    for (pid, rss) in pids.iter().zip([10u64, 30, 20]) {
        h.fake.0.borrow_mut().rss.insert(*pid, rss << 20);
    }
    h.give(0, "/a");
    h.pool.kill_largest(h.t0);
    assert!(h.fake.signals().is_empty(), "never the only busy worker");
    h.give(2, "/c");
    h.pool.kill_largest(h.t0);
    assert_eq!(
        h.fake.signals(),
        vec![(pids[2], Signal::SIGTERM)],
        "the larger busy one; the idle slot 1 is larger still but has no file"
    );
    assert_eq!(exited(h.exit(2, libc::SIGTERM)).kind, ExitKind::Killed);
}

#[test]
fn events_of_an_older_generation_are_ignored() {
    let mut h = Harness::new(1, settings());
    let (_, old_gen) = h.fake.current(0);
    let id = h.give(0, "/a");
    exited(h.exit(0, libc::SIGKILL));
    h.pool.spawn_missing(1, h.t0).unwrap();
    let (_, new_gen) = h.fake.current(0);
    assert_ne!(old_gen, new_gen);
    let stale_done = done_frame(id, false);
    let r = h
        .pool
        .on_event(0, old_gen, ChildMsg::Frame(stale_done), h.t0);
    assert!(matches!(r, Reply::Nothing));
    let stale_exit = ChildMsg::Exited(ChildExit {
        status: ExitStatus::from_raw(0),
        oom_message: false,
        last_stderr: String::new(),
    });
    assert!(matches!(
        h.pool.on_event(0, old_gen, stale_exit, h.t0),
        Reply::Nothing
    ));
    assert_eq!(h.pool.alive(), 1, "the new process stays");
}

#[test]
fn a_worker_that_never_says_hello_is_stopped_after_the_hello_timeout() {
    let fake = Fake::default();
    let t0 = Instant::now();
    let mut pool = Pool::new(fake.clone(), 1, settings(), t0);
    pool.spawn_missing(1, t0).unwrap();
    let (pid, gen) = fake.current(0);
    pool.tick(t0 + Duration::from_secs(29));
    assert!(fake.signals().is_empty());
    pool.tick(t0 + Duration::from_secs(30));
    assert_eq!(fake.signals(), vec![(pid, Signal::SIGTERM)]);
    let exit = ChildMsg::Exited(ChildExit {
        status: ExitStatus::from_raw(libc::SIGTERM),
        oom_message: false,
        last_stderr: String::new(),
    });
    let e = exited(pool.on_event(0, gen, exit, t0 + Duration::from_secs(31)));
    assert_eq!(e.kind, ExitKind::Timeout);
    assert!(
        e.message.contains("did not start within 30s"),
        "{}",
        e.message
    );
}

#[test]
fn a_result_for_a_job_it_was_not_given_is_a_protocol_error() {
    let mut h = Harness::new(1, settings());
    let (pid, _) = h.fake.current(0);
    let id = h.give(0, "/a");
    assert!(matches!(h.done(0, id + 7), Reply::Nothing));
    assert_eq!(h.fake.signals(), vec![(pid, Signal::SIGTERM)]);
    let e = exited(h.exit(0, libc::SIGTERM));
    assert_eq!(e.kind, ExitKind::Protocol);
    assert!(e.in_flight.is_some(), "its file gets the protocol attempt");
}

#[test]
fn a_worker_that_says_its_reply_is_its_last_gets_nothing_more() {
    let mut h = Harness::new(1, settings());
    let (pid, _) = h.fake.current(0);
    let id = h.give(0, "/model-failure");
    // A model failure: the worker replies, says it is its last, and exits for a fresh runtime.
    let last = done_frame(id, true);
    assert!(matches!(h.send(0, last), Reply::Finished(_)));
    assert_eq!(
        h.pool.idle_slot(),
        None,
        "no job for a worker that is leaving"
    );
    h.pool.shrink(0, h.t0);
    assert_eq!(
        h.fake.frames(pid).len(),
        1,
        "only its one job was ever sent"
    );
    let e = exited(h.exit(0, EXIT_RECYCLE << 8));
    assert_eq!(e.kind, ExitKind::Recycled);
    assert!(e.in_flight.is_none(), "no file pays for its exit");
}

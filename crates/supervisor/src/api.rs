//! The supervisor's side of the HTTP API server (`serve` with `api.addr`). The server is a child
//! process like the DB writer, so a query that misbehaves (memory, a wedged database read, a
//! panic) costs at most that process, never the loop. The supervisor binds the listening socket
//! itself at start (a bad address fails the start, and the port outlives every server process:
//! clients that connect while one is restarting wait in the backlog), hands it to each server on
//! `spawn::LISTEN_FD`, restarts a server that dies with a growing backoff, and pushes it the
//! Prometheus text once a second with at most one frame in flight.

use crate::event::{attach, ChildExit, ChildMsg, Event};
use crate::spawn::{signal_group, spawn_child_with, ChildSpec};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use trackmill_types::{ApiStatus, FromApi, Role, ToApi};

/// How often the server is sent fresh metrics.
const PUSH_EVERY: Duration = Duration::from_secs(1);
/// The first restart delay; it doubles with each server in a row that died before its hello.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Binds the API's listening socket (the address was checked to be loopback when the config
/// was validated).
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr)
}

pub struct ApiClient {
    spec: ChildSpec,
    listener: std::net::TcpListener,
    addr: String,
    gen: u64,
    pid: u32,
    tx: Option<UnboundedSender<ToApi>>,
    alive: bool,
    ready: bool,
    /// A metrics frame is on its way and not yet taken.
    pushing: bool,
    last_push: Option<Instant>,
    restarts: u64,
    /// Servers in a row that died before their hello.
    failed_starts: u32,
    restart_at: Option<Instant>,
    stopped: bool,
}

impl ApiClient {
    pub fn new(spec: ChildSpec, listener: std::net::TcpListener) -> Self {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        ApiClient {
            spec,
            listener,
            addr,
            gen: 0,
            pid: 0,
            tx: None,
            alive: false,
            ready: false,
            pushing: false,
            last_push: None,
            restarts: 0,
            failed_starts: 0,
            restart_at: None,
            stopped: false,
        }
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn gen(&self) -> u64 {
        self.gen
    }

    pub fn spawn(&mut self, events: &UnboundedSender<Event>) -> std::io::Result<()> {
        self.gen += 1;
        let gen = self.gen;
        let spawned = spawn_child_with(&self.spec, Some(self.listener.as_fd()))?;
        self.pid = spawned.pid;
        self.tx = Some(attach::<_, ToApi, _>(
            spawned,
            events.clone(),
            move |msg| Event::Api { gen, msg },
        )?);
        self.alive = true;
        self.ready = false;
        self.pushing = false;
        self.last_push = None;
        Ok(())
    }

    /// What the current server's tasks report.
    pub fn on_msg(&mut self, msg: ChildMsg<FromApi>, now: Instant) {
        match msg {
            ChildMsg::Frame(FromApi::Hello(h)) => match h.check(Role::Api) {
                Ok(()) => {
                    self.ready = true;
                    self.failed_starts = 0;
                    tracing::info!("API on http://{}/ (pid {})", self.addr, h.pid);
                }
                Err(e) => {
                    tracing::error!("API server refused: {e}");
                    signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
                }
            },
            ChildMsg::Frame(FromApi::MetricsTaken) => self.pushing = false,
            ChildMsg::BadChannel(e) => {
                tracing::warn!("API server {}: bad channel: {e}", self.pid);
                signal_group(self.pid, nix::sys::signal::Signal::SIGKILL);
            }
            ChildMsg::Exited(exit) => self.on_exit(&exit, now),
        }
    }

    fn on_exit(&mut self, exit: &ChildExit, now: Instant) {
        let was_ready = self.ready;
        self.alive = false;
        self.ready = false;
        self.tx = None;
        self.pushing = false;
        if self.stopped {
            return;
        }
        if !was_ready {
            self.failed_starts = self.failed_starts.saturating_add(1);
        }
        self.restarts += 1;
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << self.failed_starts.min(9))
            .min(MAX_BACKOFF);
        tracing::warn!(
            "API server {} exited ({}{}); restart {} in {delay:?}",
            self.pid,
            exit.status,
            if exit.last_stderr.is_empty() {
                String::new()
            } else {
                format!(": {}", exit.last_stderr)
            },
            self.restarts
        );
        self.pid = 0;
        self.restart_at = Some(now + delay);
    }

    /// Starts a server again once its backoff is over; a failed spawn counts as a death.
    pub fn restart_if_due(&mut self, now: Instant, events: &UnboundedSender<Event>) {
        if self.alive || self.stopped || self.restart_at.is_none_or(|at| now < at) {
            return;
        }
        self.restart_at = None;
        if let Err(e) = self.spawn(events) {
            self.failed_starts = self.failed_starts.saturating_add(1);
            let delay = MAX_BACKOFF.min(FIRST_BACKOFF * (1 << self.failed_starts.min(9)));
            tracing::error!("cannot restart the API server: {e}; next try in {delay:?}");
            self.restart_at = Some(now + delay);
        }
    }

    /// Fresh metrics are due: the server is up, has taken the last ones, and a second passed.
    pub fn push_due(&self, now: Instant) -> bool {
        self.ready
            && !self.pushing
            && self
                .last_push
                .is_none_or(|t| now.duration_since(t) >= PUSH_EVERY)
    }

    pub fn push(&mut self, text: String, now: Instant) {
        if let Some(tx) = &self.tx {
            if tx.send(ToApi::Metrics { text }).is_ok() {
                self.pushing = true;
                self.last_push = Some(now);
            }
        }
    }

    /// The service is stopping: the server is terminated and not restarted (it holds nothing
    /// to save: it only reads).
    pub fn stop(&mut self) {
        self.stopped = true;
        if self.alive {
            signal_group(self.pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    pub fn status(&self) -> ApiStatus {
        ApiStatus {
            addr: self.addr.clone(),
            pid: self.pid,
            ready: self.ready,
            restarts: self.restarts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn client() -> ApiClient {
        let spec = ChildSpec::plain("/bin/true", &[]);
        ApiClient::new(spec, bind("127.0.0.1:0").unwrap())
    }

    fn died() -> ChildMsg<FromApi> {
        ChildMsg::Exited(ChildExit {
            status: std::process::ExitStatus::from_raw(9),
            oom_message: false,
            last_stderr: String::new(),
        })
    }

    #[test]
    fn restarts_back_off_while_servers_die_before_their_hello() {
        let mut c = client();
        let t0 = Instant::now();
        c.alive = true;
        c.on_msg(died(), t0);
        let first = c.restart_at.unwrap() - t0;
        c.alive = true;
        c.on_msg(died(), t0);
        let second = c.restart_at.unwrap() - t0;
        assert!(second > first, "{first:?} then {second:?}");
        assert_eq!(c.status().restarts, 2);
        // A server that said hello resets the backoff.
        c.alive = true;
        c.on_msg(
            ChildMsg::Frame(FromApi::Hello(trackmill_types::Hello::new(Role::Api))),
            t0,
        );
        c.on_msg(died(), t0);
        assert_eq!(c.restart_at.unwrap() - t0, FIRST_BACKOFF);
        // Once stopped, a death is not followed by a restart.
        c.restart_at = None;
        c.stop();
        c.alive = true;
        c.on_msg(died(), t0);
        assert!(c.restart_at.is_none());
    }

    #[test]
    fn one_metrics_frame_in_flight_at_most_once_a_second() {
        let mut c = client();
        let t0 = Instant::now();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        c.tx = Some(tx);
        assert!(!c.push_due(t0), "not before the hello");
        c.ready = true;
        assert!(c.push_due(t0));
        c.push("a".into(), t0);
        assert!(
            !c.push_due(t0 + PUSH_EVERY * 2),
            "the last one is not taken"
        );
        c.on_msg(ChildMsg::Frame(FromApi::MetricsTaken), t0);
        assert!(!c.push_due(t0 + PUSH_EVERY / 2));
        assert!(c.push_due(t0 + PUSH_EVERY));
    }
}

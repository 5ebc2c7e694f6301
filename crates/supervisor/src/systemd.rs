//! systemd notifications for `serve` under `Type=notify` (READY, STATUS, STOPPING, WATCHDOG);
//! each is a no-op when the service was not started by systemd (no `NOTIFY_SOCKET`).

use sd_notify::NotifyState;
use std::time::{Duration, Instant};

pub fn ready() {
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
}

pub fn status(text: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(text)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Pings the watchdog at half the interval systemd asked for (`WatchdogSec=`). The pings come
/// from the event loop's tick, so a stuck loop stops them and systemd restarts the service.
pub struct Watchdog {
    every: Duration,
    last: Instant,
}

impl Watchdog {
    pub fn from_env() -> Option<Self> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Watchdog {
            every: Duration::from_micros(usec / 2),
            last: Instant::now(),
        })
    }

    pub fn tick(&mut self, now: Instant) {
        if now.duration_since(self.last) >= self.every {
            self.last = now;
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        }
    }
}

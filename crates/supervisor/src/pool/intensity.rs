//! OTP-style restart intensity: more than `max` unplanned worker deaths within `window` and the
//! pool is "degraded": spawning waits with a doubling delay until the window is calm again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct Intensity {
    max: u32,
    window: Duration,
    deaths: VecDeque<Instant>,
    degraded: bool,
    spawn_not_before: Instant,
    backoff: Duration,
}

impl Intensity {
    pub fn new(max: u32, window: Duration, now: Instant) -> Self {
        Intensity {
            max,
            window,
            deaths: VecDeque::new(),
            degraded: false,
            spawn_not_before: now,
            backoff: Duration::from_millis(500),
        }
    }

    /// A reload may change the limit and the window; the deaths seen so far stay.
    pub fn configure(&mut self, max: u32, window: Duration) {
        self.max = max;
        self.window = window;
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.deaths.pop_front();
        }
    }

    pub fn record_death(&mut self, now: Instant) {
        self.deaths.push_back(now);
        self.forget_old(now);
        if self.deaths.len() as u32 > self.max {
            self.spawn_not_before = now + self.backoff;
            if !self.degraded {
                tracing::warn!(
                    "degraded: {} unplanned worker deaths within {:?}; spawning backs off ({:?})",
                    self.deaths.len(),
                    self.window,
                    self.backoff
                );
            }
            self.degraded = true;
            self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        }
    }

    pub fn tick(&mut self, now: Instant) {
        self.forget_old(now);
        if self.degraded && self.deaths.len() as u32 <= self.max / 2 {
            tracing::info!("worker pool recovered from degraded state");
            self.degraded = false;
            self.backoff = Duration::from_millis(500);
        }
    }

    pub fn may_spawn(&self, now: Instant) -> bool {
        now >= self.spawn_not_before
    }

    pub fn degraded(&self) -> bool {
        self.degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_degrades_and_recovers() {
        let t = Instant::now();
        let mut i = Intensity::new(2, Duration::from_secs(10), t);
        for _ in 0..2 {
            i.record_death(t);
        }
        assert!(!i.degraded(), "two deaths are within the limit");
        i.record_death(t);
        assert!(i.degraded());
        assert!(!i.may_spawn(t));
        assert!(i.may_spawn(t + Duration::from_millis(500)));
        i.tick(t + Duration::from_secs(11));
        assert!(!i.degraded());
    }
}

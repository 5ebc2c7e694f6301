//! Retry policy by failure class (the README's failure table): what happens to a file after an
//! attempt that produced no result.

use std::time::Duration;
use trackmill_types::{Attempt, FailureClass};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after `delay`; `alone` means with no other worker busy (a second OOM).
    Retry { delay: Duration, alone: bool },
    /// Final failure of this file version (corrupt, or transient past the limit).
    Fail,
    /// Poison: quarantine with every attempt's cause.
    Quarantine,
}

/// Upper bound on tries of one file in one run, counted or not, so nothing loops forever.
pub fn hard_cap(max_attempts: u32) -> usize {
    (max_attempts as usize) * 3 + 2
}

/// Decides after the attempts in `history` (the last one is the newest failure).
pub fn decide(history: &[Attempt], max_attempts: u32, base: Duration) -> Decision {
    let Some(last) = history.last() else {
        return Decision::Fail;
    };
    let count = |c: FailureClass| history.iter().filter(|a| a.failure.class == c).count() as u32;
    let counted = history
        .iter()
        .filter(|a| a.failure.class != FailureClass::Killed)
        .count() as u32;
    if history.len() >= hard_cap(max_attempts) {
        return Decision::Quarantine;
    }
    let retry = |alone| Decision::Retry {
        delay: backoff(base, counted),
        alone,
    };
    match last.failure.class {
        FailureClass::Corrupt | FailureClass::Store => Decision::Fail,
        FailureClass::Killed => Decision::Retry {
            delay: Duration::ZERO,
            alone: false,
        },
        FailureClass::Transient if counted >= max_attempts => Decision::Fail,
        FailureClass::Transient => retry(false),
        FailureClass::Timeout if count(FailureClass::Timeout) >= 2 || counted >= max_attempts => {
            Decision::Quarantine
        }
        FailureClass::Oom if counted >= max_attempts => Decision::Quarantine,
        FailureClass::Oom => retry(count(FailureClass::Oom) >= 2),
        FailureClass::Crash | FailureClass::Protocol if counted >= max_attempts => {
            Decision::Quarantine
        }
        FailureClass::Timeout | FailureClass::Crash | FailureClass::Protocol => retry(false),
    }
}

/// Exponential backoff with ±50% jitter, capped at 30 s.
pub fn backoff(base: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(30));
    let jitter: f64 = rand::random_range(0.5..1.5);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackmill_types::{Failure, Stage};

    fn a(class: FailureClass) -> Attempt {
        Attempt {
            attempt: 0,
            failure: Failure::new(class, Stage::Worker, "x"),
            worker_pid: 1,
            peak_rss_bytes: 0,
            elapsed_ms: 0,
            at_ms: 0,
        }
    }

    fn run(classes: &[FailureClass]) -> Decision {
        let h: Vec<Attempt> = classes.iter().map(|&c| a(c)).collect();
        decide(&h, 3, Duration::from_millis(10))
    }

    use FailureClass::*;

    #[test]
    fn corrupt_is_final() {
        assert_eq!(run(&[Corrupt]), Decision::Fail);
    }

    #[test]
    fn oom_retries_then_alone_then_quarantine() {
        assert!(matches!(run(&[Oom]), Decision::Retry { alone: false, .. }));
        assert!(matches!(
            run(&[Oom, Oom]),
            Decision::Retry { alone: true, .. }
        ));
        assert_eq!(run(&[Oom, Oom, Oom]), Decision::Quarantine);
    }

    #[test]
    fn timeout_retries_once() {
        assert!(matches!(run(&[Timeout]), Decision::Retry { .. }));
        assert_eq!(run(&[Timeout, Timeout]), Decision::Quarantine);
    }

    #[test]
    fn crash_up_to_max() {
        assert!(matches!(run(&[Crash, Crash]), Decision::Retry { .. }));
        assert_eq!(run(&[Crash, Crash, Crash]), Decision::Quarantine);
    }

    #[test]
    fn kills_are_not_held_against_the_file_but_are_capped() {
        assert!(matches!(
            run(&[Crash, Killed, Killed, Crash, Killed]),
            Decision::Retry { .. }
        ));
        let many = vec![Killed; hard_cap(3)];
        assert_eq!(run(&many), Decision::Quarantine);
    }

    #[test]
    fn transient_fails_after_max() {
        assert!(matches!(
            run(&[Transient, Transient]),
            Decision::Retry { .. }
        ));
        assert_eq!(run(&[Transient, Transient, Transient]), Decision::Fail);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_millis(100);
        assert!(backoff(b, 1) <= Duration::from_millis(150));
        assert!(backoff(b, 30) <= Duration::from_secs(45));
    }
}

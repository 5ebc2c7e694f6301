//! Conventions shared by the supervisor and its child processes: the exit codes that a child uses
//! to say how it ended on purpose, the check of a child's first frame, and the text of a caught
//! panic.

use crate::{Hello, Role, PROTOCOL_VERSION};

/// Exit code of a worker's planned recycle (after its last file, or after a model failure so
/// that a retry gets a fresh runtime), so it is never mistaken for an error.
pub const EXIT_RECYCLE: i32 = 75;
/// Exit code of a child that received a frame it could not understand.
pub const EXIT_PROTOCOL: i32 = 76;

impl Hello {
    /// Checks a child's first frame: it must speak [`PROTOCOL_VERSION`] and run the role it was
    /// started for. The error says what it said instead.
    pub fn check(&self, expected: Role) -> Result<(), String> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "{:?} {} speaks protocol {} (expected {PROTOCOL_VERSION})",
                expected, self.pid, self.protocol
            ));
        }
        if self.role != expected {
            return Err(format!(
                "child {} says it is a {:?}, started as a {expected:?}",
                self.pid, self.role
            ));
        }
        Ok(())
    }
}

/// The message of a panic caught with `catch_unwind`.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_check_refuses_another_version_or_role() {
        let ok = Hello::new(Role::Worker);
        assert!(ok.check(Role::Worker).is_ok());
        assert!(ok.check(Role::DbWriter).unwrap_err().contains("started as"));
        let old = Hello {
            protocol: PROTOCOL_VERSION + 1,
            ..ok
        };
        assert!(old
            .check(Role::Worker)
            .unwrap_err()
            .contains("speaks protocol"));
    }

    #[test]
    fn panic_messages_of_both_payload_kinds() {
        let a = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(&*a), "static text");
        let n = 3;
        let b = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*b), "formatted 3");
    }
}

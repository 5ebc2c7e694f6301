//! Shared types and the wire protocol of trackmill: the only serde boundary between its processes.
//!
//! Every type here that is serializable crosses a process boundary (worker ↔ supervisor,
//! supervisor ↔ DB writer). Text that reaches the database is a [`CleanText`]; file paths are
//! [`PathBytes`] so that non-UTF-8 names travel and are stored losslessly. Everything decoded from
//! a frame is bounded: each string ([`clean::MAX_DECODED_BYTES`]) and each list ([`bounded`]).

pub mod analysis;
pub mod bounded;
pub mod child;
pub mod clean;
pub mod frame;
pub mod job;
pub mod path;
pub mod procmem;
pub mod protocol;

pub use analysis::*;
pub use child::{panic_message, EXIT_PROTOCOL, EXIT_RECYCLE};
pub use clean::CleanText;
pub use job::*;
pub use path::PathBytes;
pub use protocol::*;

//! Manifest-driven ONNX model inference (ONNX Runtime through `ort`, loaded at run time).
//!
//! A model is a directory `models/<name>/` with a `model.toml` manifest (see `models/README.md`):
//! the file and its checksum, the input (raw waveform or log-mel), the outputs, which parts of a
//! track the model sees, and how outputs pool into per-track vectors or labels. Adding a model is
//! adding a manifest. A worker loads its [`ModelSet`] once per process lifetime; recycling the
//! worker is what clears the runtime's arenas.

mod checksum;
mod config;
mod doctor;
mod error;
mod frontend;
mod key;
mod loaded;
mod manifest;
mod melspec;
mod pooling;
mod runtime;
mod segments;
mod set;

pub use config::{ModelConfig, DEFAULT_MODEL, ORT_LIB_ENV, ORT_LIB_FILE};
pub use doctor::doctor_report;
pub use error::ModelError;
pub use key::refine_key;
pub use manifest::Manifest;
pub use runtime::RuntimeInfo;
pub use segments::SegmentCollector;
pub use set::{ModelLabel, ModelOutput, ModelSet};

//! trackmill's analysis library: bounded tag reading, streaming decode of every common format,
//! DSP features, a track fingerprint and ReplayGain, in a small fixed amount of memory.
//!
//! The worker calls [`analyze_file`] (or [`analyze_file_with`] to receive the mono stream for
//! model inference) once per file. The crate starts no processes and opens no sockets.
//!
//! # Pipeline
//! 1. **Open / probe**: the format is detected from content (never the extension). Leading ID3v2
//!    tags are skipped before the demuxer sees the file, so a 20 MB cover or 5,000 tag frames
//!    cost nothing. Formats: MP3, FLAC, Ogg (Vorbis, Opus, FLAC), MP4/M4A (AAC, ALAC), WAV,
//!    AIFF, CAF, Matroska/WebM, ADTS AAC. Opus decodes through libopus
//!    (`symphonia-adapter-libopus`).
//! 2. **Tags** (lofty): at most 100 items, values cut to 1,024 bytes, lists to 10 entries,
//!    pictures counted but never decoded, lofty's allocation limit at 16 MiB per item. A tag that
//!    cannot be read adds a note; the audio is analysed anyway.
//! 3. **Decode** (symphonia): packet by packet. Each decoded buffer feeds the EBU R128 /
//!    BS.1770-4 meter and the true-peak meter on its original channels and rate, then is
//!    downmixed to mono and resampled (rubato, FFT resampler) to the analysis rate, 22,050 Hz,
//!    chunk by chunk. No stage holds the track.
//! 4. **Features**: a 2048-point real FFT every 512 samples (reused plan and buffers), with
//!    per-frame accumulators only; tempo uses a bounded running autocorrelation.
//!
//! The fields of [`trackmill_types::Features`] and their units are listed in `FEATURES.md`
//! next to this crate's `Cargo.toml`, with the tolerances across formats.
//!
//! # Errors
//! Bad input never panics out of the crate: panics inside demuxers, decoders and the tag reader
//! are caught and reported as [`AnalysisError::Corrupt`]. A file that is damaged part-way
//! gives a result with [`trackmill_types::TrackAnalysis::partial`] set and the decoded
//! duration in `audio.decoded_s`.
//!
//! # Determinism
//! The same file gives bit-identical output on every run on the same machine: all sums run in
//! a fixed order and nothing depends on time or threads. The AVX2 copies of the hot loops
//! (`simd.rs`, used where the CPU has AVX2) give the same bits as the baseline code.

mod analyze;
mod decode;
mod error;
pub mod features;
mod halfband;
mod loudness;
pub mod model;
mod open;
mod options;
mod r128;
mod resample;
mod simd;
mod source;
pub mod tags;
mod truepeak;

pub use analyze::{analyze_file, analyze_file_with, analyze_open_with, Analyzed};
pub use error::AnalysisError;
pub use features::{FINGERPRINT_DIMS, FINGERPRINT_MODEL};
pub use loudness::{LOUDNESS_FLOOR_LUFS, PEAK_FLOOR_DB, REPLAYGAIN_REFERENCE_LUFS};
pub use open::open_input;
pub use options::{MonoSink, NullSink, Options};

//! Features of the mono analysis stream: the frame engine and its parts, and the fingerprint.

mod chroma;
mod extractor;
mod fastmath;
mod fingerprint;
mod rfft;
mod spectral;
mod stats;
mod tempo;

pub use chroma::estimate_key;
pub use extractor::{FrameAnalyzer, FrameSummary, BANDS, FFT_SIZE, HOP, SILENCE_DBFS};
pub use fingerprint::{fingerprint, FINGERPRINT_DIMS, FINGERPRINT_MODEL};
pub use stats::RunningStat;
pub use tempo::{MAX_BPM, MIN_BPM};

/// Uniform noise in [0, 1) from a fixed seed (xorshift), for the unit tests.
#[cfg(test)]
pub(crate) fn test_noise(mut seed: u64) -> impl FnMut() -> f32 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32
    }
}

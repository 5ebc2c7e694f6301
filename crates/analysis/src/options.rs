//! Analysis options and the `MonoSink` through which the decoded mono stream is shared.

/// Settings of one analysis run. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Rate of the mono analysis stream, Hz. Features are defined at 22,050 Hz; other rates work
    /// but give features that are not comparable with stored ones.
    pub analysis_rate: u32,
    /// Whether to read tags (lofty). Audio is analysed either way.
    pub read_tags: bool,
    /// Stop decoding after this many seconds of audio (`None`: the whole file). The result is
    /// not marked partial when this cap is hit; a note says so.
    pub max_decode_s: Option<f64>,
    /// Consecutive undecodable packets after which decoding gives up (the result is then
    /// partial).
    pub max_consecutive_decode_errors: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            analysis_rate: 22_050,
            read_tags: true,
            max_decode_s: None,
            max_consecutive_decode_errors: 64,
        }
    }
}

/// Receives the mono, analysis-rate samples in order while the file decodes (used by model
/// inference).
pub trait MonoSink {
    /// Called once before any samples, with the container's duration when known.
    fn begin(&mut self, duration_hint_s: Option<f64>);
    /// Called with consecutive chunks of mono samples at [`Options::analysis_rate`].
    fn accept(&mut self, samples: &[f32]);
}

/// A sink that drops everything (used by [`crate::analyze_file`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl MonoSink for NullSink {
    fn begin(&mut self, _duration_hint_s: Option<f64>) {}
    fn accept(&mut self, _samples: &[f32]) {}
}

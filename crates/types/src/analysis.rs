//! The analysis record: one fixed, versioned description of a track (audio properties, tags,
//! features, embeddings). Field meanings and units are documented here and in the README. Its
//! lists are capped while decoding (`bounded.rs`).

use crate::CleanText;
use serde::{Deserialize, Serialize};

/// Version of the analysis record and of the algorithms that fill it. Bump it when stored results
/// would change; a stored row with an older version is re-analysed.
pub const ANALYZER_VERSION: u32 = 1;

/// Everything trackmill stores about one successfully analysed file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackAnalysis {
    pub analyzer_version: u32,
    /// True when the file was truncated or damaged part-way: the features describe the decoded part.
    pub partial: bool,
    pub audio: AudioProps,
    pub tags: Tags,
    /// `None` only when no audio could be decoded for features (the file then is a failure instead).
    pub features: Option<Features>,
    /// Float vectors for similarity, one per model (the DSP fingerprint is `trackmill-dsp-v1`).
    #[serde(deserialize_with = "crate::bounded::de::embeddings")]
    pub embeddings: Vec<Embedding>,
    /// Names of the models that ran on this file (empty for a DSP-only analysis); stored with the
    /// track so that a later run with more models knows the file still needs them.
    #[serde(deserialize_with = "crate::bounded::de::models")]
    pub models: Vec<CleanText>,
    /// Notes for the operator (e.g. "partial: decode error at 12.3 s"), sanitized.
    #[serde(deserialize_with = "crate::bounded::de::notes")]
    pub notes: Vec<CleanText>,
}

/// Audio stream properties.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AudioProps {
    /// Container detected from content: "mp3", "flac", "ogg", "mp4", "wav", "aiff", "mkv", "caf".
    pub container: CleanText,
    /// Codec: "mp3", "flac", "vorbis", "opus", "aac", "alac", "pcm", …
    pub codec: CleanText,
    pub sample_rate: u32,
    pub channels: u16,
    pub bits_per_sample: Option<u16>,
    /// Duration from the container, seconds, when known.
    pub duration_s: Option<f64>,
    /// Audio actually decoded, seconds.
    pub decoded_s: f64,
    /// Average bitrate in kbit/s (file size over duration when the container gives none).
    pub bitrate_kbps: Option<u32>,
}

/// Tags, bounded: at most 10 items per list, values capped at 1,024 bytes (cut on a character
/// boundary); decoding refuses lists longer than [`crate::bounded::MAX_TAG_LIST`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    pub title: Option<CleanText>,
    #[serde(deserialize_with = "crate::bounded::de::tag_list")]
    pub artists: Vec<CleanText>,
    pub album: Option<CleanText>,
    pub album_artist: Option<CleanText>,
    #[serde(deserialize_with = "crate::bounded::de::tag_list")]
    pub genres: Vec<CleanText>,
    pub year: Option<i32>,
    pub track_number: Option<u32>,
    pub track_total: Option<u32>,
    pub disc_number: Option<u32>,
    pub disc_total: Option<u32>,
    pub musicbrainz_recording_id: Option<CleanText>,
    pub musicbrainz_track_id: Option<CleanText>,
    pub musicbrainz_album_id: Option<CleanText>,
    pub musicbrainz_artist_id: Option<CleanText>,
    pub musicbrainz_album_artist_id: Option<CleanText>,
    /// Embedded pictures: count and total bytes (never decoded).
    pub picture_count: u32,
    pub picture_bytes: u64,
    /// True when the tag reader stopped at a bound (too many items, values cut).
    pub truncated: bool,
}

/// Mean and standard deviation of a frame-wise quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f32,
    pub std: f32,
}

/// The DSP feature record (version [`ANALYZER_VERSION`]). All computed on the mono downmix at the
/// analysis rate (22,050 Hz) except loudness, which uses the original channels and rate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// EBU R128 integrated loudness, LUFS.
    pub integrated_lufs: f32,
    /// EBU R128 loudness range, LU.
    pub loudness_range_lu: f32,
    /// True peak, dBTP.
    pub true_peak_dbtp: f32,
    /// ReplayGain 2.0 track gain, dB (reference -18 LUFS).
    pub replaygain_track_gain_db: f32,
    /// ReplayGain 2.0 track peak, linear (sample peak, 1.0 = full scale).
    pub replaygain_track_peak: f32,
    /// Tempo, beats per minute (0 when no pulse is found).
    pub bpm: f32,
    /// Onsets per second.
    pub onset_rate: f32,
    /// Spectral centroid, Hz.
    pub spectral_centroid_hz: Stat,
    /// 85% spectral rolloff, Hz.
    pub spectral_rolloff_hz: Stat,
    /// Spectral flatness (0 tonal … 1 noise).
    pub spectral_flatness: Stat,
    /// Spectral flux (half-wave rectified, normalised magnitude spectra).
    pub spectral_flux: Stat,
    /// Zero-crossing rate, crossings per sample.
    pub zero_crossing_rate: Stat,
    /// Mean chroma, 12 bins starting at C, normalised to sum 1.
    pub chroma: [f32; 12],
    /// Estimated key as a pitch class (0 = C … 11 = B).
    pub key: u8,
    /// "major" or "minor".
    pub mode: CleanText,
    /// Correlation of the best key profile (0 … 1): how sure the key estimate is.
    pub key_strength: f32,
    /// Share of the track below -60 dBFS (0 … 1).
    pub silence_ratio: f32,
}

/// A float vector for similarity search.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    pub model: CleanText,
    #[serde(deserialize_with = "crate::bounded::de::embedding_values")]
    pub values: Vec<f32>,
}

//! The `model.toml` manifest: parsing and validation. The format is documented in
//! `models/README.md`; everything a model needs is data here, nothing is model-specific code.

use crate::model::ModelError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The rate of the mono stream the analysis hands to models.
pub(crate) const STREAM_RATE: u32 = 22_050;

/// A parsed, validated manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal the directory name; embeddings are stored as `<name>/<embedding>`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Model file, relative to the manifest's directory.
    pub file: PathBuf,
    /// Lower-case hex SHA-256 of `file`, checked at load.
    pub sha256: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub source: String,
    pub segments: SegmentSpec,
    pub input: InputSpec,
    pub outputs: Vec<OutputSpec>,
    #[serde(default)]
    pub embeddings: Vec<EmbeddingSpec>,
    pub labels: Option<LabelSpec>,
    /// Name of a 12-value embedding used to refine the key estimate.
    pub key_profile: Option<String>,
    /// Directory of the manifest (filled in on load).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Which parts of a track the model sees.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSpec {
    pub mode: SegmentMode,
    /// `spread`: how many segments.
    #[serde(default = "one")]
    pub count: usize,
    /// Length of one segment, seconds.
    pub seconds: f64,
    /// `whole`: the most audio kept; longer tracks are covered by segments spread over them.
    #[serde(default = "default_max_seconds")]
    pub max_seconds: f64,
    /// The most audio the model sees, as a share of the decoded stream (0 < share ≤ 1): fewer
    /// segments for shorter tracks, one shortened segment where even one would exceed it, but
    /// never less than one input window of audio. Unset: no bound.
    pub max_share: Option<f64>,
}

fn one() -> usize {
    1
}

fn default_max_seconds() -> f64 {
    600.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentMode {
    /// `count` segments of `seconds` spread evenly over the track.
    Spread,
    /// The whole track, up to `max_seconds`.
    Whole,
}

/// What the model takes as input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor name.
    pub name: String,
    pub kind: InputKind,
    pub sample_rate: u32,
    /// Samples (waveform) or frames (log-mel) per run.
    pub window: usize,
    /// Samples (waveform) or frames (log-mel) between the starts of consecutive runs.
    pub hop: usize,
    /// Zero samples put before each segment (waveform).
    #[serde(default)]
    pub pad_start: usize,
    /// Tensor shape: integers, or `"batch"` (1), `"window"`, `"mels"`.
    pub shape: Vec<Dim>,
    /// Spectrogram parameters (log-mel).
    pub mel: Option<MelSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    Waveform,
    LogMel,
}

/// One dimension of the input shape.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

/// Log-mel spectrogram parameters (Hann window, power spectrum, HTK mel scale, triangular filters).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MelSpec {
    pub n_fft: usize,
    pub hop_length: usize,
    pub n_mels: usize,
    #[serde(default)]
    pub fmin: f32,
    /// Defaults to half the sample rate.
    pub fmax: Option<f32>,
    #[serde(default)]
    pub log: LogKind,
    /// Added before the logarithm.
    #[serde(default = "default_floor")]
    pub floor: f32,
}

fn default_floor() -> f32 {
    1e-6
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogKind {
    /// Natural logarithm.
    #[default]
    Ln,
    Log10,
    /// 10 · log10 (decibels of power).
    Db,
}

/// An output tensor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Short name the embeddings refer to.
    pub id: String,
    /// Tensor name.
    pub name: String,
    pub layout: Layout,
    /// Frames dropped at each end of every window's output (overlapping windows).
    #[serde(default)]
    pub trim: usize,
    /// Output frames per second of audio (needed by `peak-rate`).
    pub frame_rate: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `[batch, time, feature]`
    Btf,
    /// `[batch, feature, time]`
    Bft,
    /// `[batch, feature]`: one frame per window.
    Bf,
}

/// A per-track vector: parts concatenated, then normalised.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSpec {
    pub name: String,
    pub parts: Vec<PartSpec>,
    #[serde(default)]
    pub normalize: Normalize,
    /// Takes part in the similarity vector (`trackmill similar`, `path`, `mix`, the API) when set.
    pub similarity: Option<SimilaritySpec>,
}

/// How an embedding takes part in similarity: its length (a stored vector of another length
/// counts as absent) and the weight of its squared distance, against the DSP groups' (timbre 1,
/// chroma 2, tempo 0.5, key 0.5; README: similar tracks).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilaritySpec {
    pub dims: usize,
    pub weight: f32,
}

/// The largest weight an embedding may carry in the similarity vector.
pub const MAX_SIMILARITY_WEIGHT: f32 = 16.0;

/// One pooled quantity of an output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// Output id.
    pub from: String,
    pub reduce: Reduce,
    /// Threshold for `peak-rate` and `active-range`.
    #[serde(default = "half")]
    pub threshold: f32,
    /// `active-range`: frames a bin must be active to count.
    #[serde(default = "one")]
    pub min_frames: usize,
    /// Added to bin indices (`active-range`, and `fold`): e.g. 21 when bin 0 is MIDI note 21.
    #[serde(default)]
    pub bin_offset: usize,
    /// Fold per-bin values onto `fold` classes: bin i goes to class (i + bin_offset) % fold.
    pub fold: Option<usize>,
}

fn half() -> f32 {
    0.5
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduce {
    /// Per-bin mean over time.
    Mean,
    /// Per-bin maximum over time.
    Max,
    /// Per-bin standard deviation over time.
    Std,
    /// One value: local maxima over time at or above `threshold`, all bins, per second.
    PeakRate,
    /// Two values: lowest and highest bin (+ `bin_offset`) active in at least `min_frames`
    /// frames; 0, 0 when none is.
    ActiveRange,
}

impl Reduce {
    pub(crate) fn per_bin(self) -> bool {
        matches!(self, Reduce::Mean | Reduce::Max | Reduce::Std)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    #[default]
    None,
    /// Divide by the sum (a profile summing to 1).
    Sum,
    /// Divide by the Euclidean norm.
    L2,
    /// Divide by the largest value.
    Max,
}

/// Labels: the top `top_k` of a pooled output whose bins have names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub from: String,
    #[serde(default = "mean")]
    pub reduce: Reduce,
    pub names: Vec<String>,
    #[serde(default = "one")]
    pub top_k: usize,
}

fn mean() -> Reduce {
    Reduce::Mean
}

impl InputSpec {
    /// Samples of the stream that fill one input window: `window − pad_start` for a waveform
    /// (the window starts with the zero padding), `n_fft + (window − 1) · hop_length` for log-mel.
    pub(crate) fn samples_per_window(&self) -> usize {
        match (&self.kind, &self.mel) {
            (InputKind::LogMel, Some(mel)) => mel.n_fft + (self.window - 1) * mel.hop_length,
            _ => self.window.saturating_sub(self.pad_start).max(1),
        }
    }
}

impl Manifest {
    /// Reads and validates `path`; `name` is the directory name it must declare.
    pub fn load(path: &Path) -> Result<Manifest, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::Missing {
                what: "model manifest".into(),
                path: path.to_path_buf(),
            },
            _ => bad(path, e),
        })?;
        let mut m: Manifest = toml::from_str(&text).map_err(|e| bad(path, e))?;
        m.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        m.validate().map_err(|r| bad(path, r))?;
        Ok(m)
    }

    /// The model file.
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    fn validate(&self) -> Result<(), String> {
        let dir_name = self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !dir_name.is_empty() && dir_name != self.name {
            return Err(format!(
                "name {:?} differs from its directory {dir_name:?}",
                self.name
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 must be 64 hex digits".into());
        }
        let s = &self.segments;
        if !(s.seconds > 0.0 && s.seconds.is_finite()) || s.count == 0 || s.count > 64 {
            return Err("segments need seconds > 0 and 1 ≤ count ≤ 64".into());
        }
        if s.mode == SegmentMode::Whole && !(s.max_seconds >= s.seconds && s.max_seconds <= 3600.0)
        {
            return Err("segments.max_seconds must be between seconds and 3600".into());
        }
        if let Some(share) = s.max_share {
            if !(share > 0.0 && share <= 1.0) {
                return Err("segments.max_share must be > 0 and ≤ 1".into());
            }
        }
        let i = &self.input;
        if i.sample_rate != STREAM_RATE {
            return Err(format!(
                "input.sample_rate {} is not supported: the analysis stream is {STREAM_RATE} Hz",
                i.sample_rate
            ));
        }
        if i.window == 0 || i.hop == 0 || i.hop > i.window {
            return Err("input needs 0 < hop ≤ window".into());
        }
        let named = |n: &str| {
            i.shape
                .iter()
                .filter(|d| **d == Dim::Named(n.into()))
                .count()
        };
        if named("window") != 1 {
            return Err("input.shape must contain \"window\" exactly once".into());
        }
        for d in &i.shape {
            match d {
                Dim::Named(n) if !["batch", "window", "mels"].contains(&n.as_str()) => {
                    return Err(format!("input.shape: unknown dimension {n:?}"))
                }
                Dim::Fixed(v) if *v < 1 => return Err("input.shape: sizes must be ≥ 1".into()),
                _ => {}
            }
        }
        match (i.kind, &i.mel) {
            (InputKind::LogMel, None) => return Err("log-mel input needs [input.mel]".into()),
            (InputKind::LogMel, Some(mel)) => {
                if named("mels") != 1 {
                    return Err("log-mel input.shape must contain \"mels\" once".into());
                }
                if mel.n_fft < 16 || mel.n_fft > 1 << 16 || mel.hop_length == 0 || mel.n_mels == 0 {
                    return Err(
                        "input.mel needs 16 ≤ n_fft ≤ 65536, hop_length > 0, n_mels > 0".into(),
                    );
                }
                let fmax = mel.fmax.unwrap_or(i.sample_rate as f32 / 2.0);
                if !(mel.fmin >= 0.0 && fmax > mel.fmin && fmax <= i.sample_rate as f32 / 2.0) {
                    return Err("input.mel needs 0 ≤ fmin < fmax ≤ sample_rate / 2".into());
                }
                if mel.floor.is_nan() || mel.floor <= 0.0 {
                    return Err("input.mel.floor must be > 0".into());
                }
            }
            (InputKind::Waveform, _) => {
                if named("mels") != 0 {
                    return Err("waveform input.shape cannot contain \"mels\"".into());
                }
            }
        }
        if self.outputs.is_empty() {
            return Err("at least one [[outputs]] is needed".into());
        }
        for (n, o) in self.outputs.iter().enumerate() {
            if self.outputs[..n].iter().any(|p| p.id == o.id) {
                return Err(format!("output id {:?} appears twice", o.id));
            }
        }
        let output = |id: &str| self.outputs.iter().find(|o| o.id == id);
        for e in &self.embeddings {
            if e.parts.is_empty() {
                return Err(format!("embedding {:?} has no parts", e.name));
            }
            if let Some(sim) = &e.similarity {
                let max_dims = trackmill_types::bounded::MAX_SIMILARITY_DIMS;
                if !(1..=max_dims).contains(&sim.dims) {
                    return Err(format!(
                        "embedding {:?}: similarity.dims must be between 1 and {max_dims}",
                        e.name
                    ));
                }
                if !(sim.weight > 0.0 && sim.weight <= MAX_SIMILARITY_WEIGHT) {
                    return Err(format!(
                        "embedding {:?}: similarity.weight must be > 0 and at most \
                         {MAX_SIMILARITY_WEIGHT}",
                        e.name
                    ));
                }
            }
            for p in &e.parts {
                let o = output(&p.from).ok_or_else(|| {
                    format!("embedding {:?}: unknown output {:?}", e.name, p.from)
                })?;
                if p.reduce == Reduce::PeakRate && o.frame_rate.is_none() {
                    return Err(format!("output {:?} needs frame_rate for peak-rate", o.id));
                }
                if p.fold == Some(0) || (p.fold.is_some() && !p.reduce.per_bin()) {
                    return Err(format!(
                        "embedding {:?}: fold needs a per-bin reduce and fold > 0",
                        e.name
                    ));
                }
            }
        }
        if let Some(l) = &self.labels {
            if output(&l.from).is_none()
                || !l.reduce.per_bin()
                || l.names.is_empty()
                || l.top_k == 0
            {
                return Err(
                    "labels need a known output, a per-bin reduce, names and top_k > 0".into(),
                );
            }
        }
        if let Some(k) = &self.key_profile {
            if !self.embeddings.iter().any(|e| &e.name == k) {
                return Err(format!("key_profile names unknown embedding {k:?}"));
            }
        }
        if self.embeddings.is_empty() && self.labels.is_none() {
            return Err("a model needs [[embeddings]] or [labels]".into());
        }
        Ok(())
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> ModelError {
    ModelError::Manifest {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC_PITCH: &str = include_str!("../../../../models/basic-pitch/model.toml");

    fn parsed(text: &str) -> Manifest {
        toml::from_str(text).expect("manifest parses")
    }

    #[test]
    fn the_shipped_manifest_bounds_the_share_and_knows_its_window() {
        let m = parsed(BASIC_PITCH);
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.segments.max_share, Some(0.05));
        assert_eq!(m.input.samples_per_window(), 43_844 - 3_840);
    }

    #[test]
    fn max_share_outside_0_to_1_is_refused() {
        for bad in ["0.0", "-0.1", "1.5", "nan"] {
            let text = BASIC_PITCH.replace("max_share = 0.05", &format!("max_share = {bad}"));
            let err = parsed(&text).validate().expect_err(bad);
            assert!(err.contains("max_share"), "{bad}: {err}");
        }
        let text = BASIC_PITCH.replace("max_share = 0.05", "max_share = 1.0");
        assert_eq!(parsed(&text).validate(), Ok(()));
        let text = BASIC_PITCH.replace("max_share = 0.05\n", "");
        assert_eq!(parsed(&text).segments.max_share, None);
    }

    #[test]
    fn a_similarity_input_needs_a_length_and_a_weight_in_range() {
        const DECLARED: &str = "similarity = { dims = 88, weight = 0.5 }";
        assert!(BASIC_PITCH.contains(DECLARED));
        for (bad, key) in [
            ("dims = 0, weight = 0.5", "dims"),
            ("dims = 1025, weight = 0.5", "dims"),
            ("dims = 88, weight = 0.0", "weight"),
            ("dims = 88, weight = 17.0", "weight"),
            ("dims = 88, weight = nan", "weight"),
        ] {
            let text = BASIC_PITCH.replace(DECLARED, &format!("similarity = {{ {bad} }}"));
            let err = parsed(&text).validate().expect_err(bad);
            assert!(err.contains(&format!("similarity.{key}")), "{bad}: {err}");
        }
        let typo = BASIC_PITCH.replace(DECLARED, "similarity = { dims = 88, wieght = 0.5 }");
        assert!(toml::from_str::<Manifest>(&typo).is_err());
    }
}

//! The similarity vector of a track, built from its stored analysis record in two steps: a
//! [`Descriptor`] (raw, library-independent values read from the record) and, with the library's
//! [`LibraryStats`], the [`Space::vector`] whose Euclidean distance ranks tracks. The layout and
//! weights are documented in the crate docs.

use crate::music::{tempo_point, Key};
use crate::stats::{RunningStats, Standard};
use crate::stored::StoredView;
use trackmill_types::analysis::{Features, TrackAnalysis};

/// Version of the vector layout, weights and stored form ([`crate::stored`]). Bump it when
/// vectors or stored rows built by this code would change, together with a schema migration
/// that writes the rows and statistics again (`trackmill_dbwriter`'s backfill): rows of another
/// version are not read, so until that migration runs a query finds nothing, never a vector
/// built by other rules.
pub const SIMILARITY_VERSION: u32 = 1;

/// The DSP fingerprint's model name and size (crates/analysis: 38 floats, dims 12–27 the band shape).
pub(crate) const FINGERPRINT: &str = "trackmill-dsp-v1";
const FINGERPRINT_DIMS: usize = 38;
const BANDS: std::ops::Range<usize> = 12..28;
/// Basic Pitch's pitch-class profile, blended into the chroma when present.
pub(crate) const PITCH_CLASS: &str = "basic-pitch/pitch-class12";

/// Names of the z-scored DSP dimensions, in order: the timbre group, then loudness range.
pub const STAT_NAMES: [&str; STAT_DIMS] = [
    "log2 spectral centroid mean",
    "log2 (spectral centroid std + 1)",
    "log2 spectral rolloff mean",
    "spectral flatness mean",
    "spectral flatness std",
    "spectral flux mean",
    "spectral flux std",
    "log2 zero-crossing rate mean",
    "log2 (onset rate + 0.5)",
    "silence ratio",
    "band 1 (60 Hz)",
    "band 2",
    "band 3",
    "band 4",
    "band 5",
    "band 6",
    "band 7",
    "band 8",
    "band 9",
    "band 10",
    "band 11",
    "band 12",
    "band 13",
    "band 14",
    "band 15",
    "band 16 (to 11 kHz)",
    "loudness range",
];
/// Dimensions that library statistics are kept for.
pub const STAT_DIMS: usize = 27;
/// The first `TIMBRE_DIMS` of them form the timbre group; the last is the loudness range.
pub const TIMBRE_DIMS: usize = 26;
const LRA: usize = 26;

/// Largest magnitude a raw value may have; beyond it the value is unknown. Every value is a
/// logarithm, a ratio or a small spectral measure (real tracks stay within ±20), and the library
/// statistics are sums of squares that tracks are added to and taken from: one value of 10³⁸
/// would leave rounding noise larger than every real variance even after its track is gone,
/// while 10⁴ squared, over ten million tracks, stays within f64's exact range.
pub const RAW_LIMIT: f32 = 1e4;

/// Library statistics of the z-scored dimensions.
pub type LibraryStats = RunningStats<STAT_DIMS>;
/// [`LibraryStats`] ready for standardising many tracks ([`RunningStats::standard`]).
pub type LibraryStandard = Standard<STAT_DIMS>;

/// What one track contributes before standardisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Descriptor {
    /// Values of [`STAT_NAMES`]; NaN where the record lacks them (no fingerprint stored).
    pub raw: [f32; STAT_DIMS],
    /// Pitch-class profile, 12 shares summing to 1 (DSP chroma, blended half and half with the
    /// model's pitch-class profile when there is one); all zero when nothing tonal sounded.
    pub chroma: [f32; 12],
    /// Tempo in BPM (0: no pulse).
    pub bpm: f32,
    pub key: Key,
    /// Unit-length model embeddings, one per [`Space::embeddings`] input (`None`: not stored).
    pub embeddings: Vec<Option<Vec<f32>>>,
}

/// A model embedding used as a similarity input, with its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingInput {
    /// Stored name, `<model>/<embedding>`.
    pub name: String,
    /// Its length; a stored vector of another length is treated as absent.
    pub dims: usize,
    /// Weight of its squared distance.
    pub weight: f32,
}

/// Weights of each group's squared distance (see the crate docs for what each group holds).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub timbre: f32,
    pub chroma: f32,
    pub tempo: f32,
    pub key: f32,
    pub mode: f32,
    pub loudness_range: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            timbre: 1.0,
            chroma: 2.0,
            tempo: 0.5,
            key: 0.5,
            mode: 0.125,
            loudness_range: 0.25,
        }
    }
}

/// The vector space: weights and the model embeddings that take part.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    pub weights: Weights,
    pub embeddings: Vec<EmbeddingInput>,
}

impl Default for Space {
    fn default() -> Self {
        Space {
            weights: Weights::default(),
            embeddings: vec![EmbeddingInput {
                name: "basic-pitch/notes88".into(),
                dims: 88,
                weight: 0.5,
            }],
        }
    }
}

fn log2_floor(x: f32, floor: f32) -> f32 {
    if x.is_finite() {
        x.max(floor).log2()
    } else {
        f32::NAN
    }
}

pub(crate) fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (n.is_finite() && n > 1e-12).then(|| v.iter().map(|x| x / n).collect())
}

fn shares(v: &[f32]) -> Option<[f32; 12]> {
    if v.len() != 12 {
        return None;
    }
    let s: f32 = v.iter().map(|x| x.max(0.0)).sum();
    if !(s.is_finite() && s > 1e-12) {
        return None;
    }
    let mut out = [0.0; 12];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x.max(0.0) / s;
    }
    Some(out)
}

impl Space {
    /// Number of floats in a vector of this space.
    pub fn dims(&self) -> usize {
        TIMBRE_DIMS + 1 + 12 + 2 + 3 + self.embeddings.iter().map(|e| e.dims).sum::<usize>()
    }

    /// Reads what the similarity vector needs from a stored record; `None` when the record has
    /// no features (nothing could be decoded).
    pub fn describe(&self, a: &TrackAnalysis) -> Option<Descriptor> {
        let (raw, chroma, bpm, key) = base(a)?;
        let embeddings = self
            .embeddings
            .iter()
            .map(|input| {
                a.embeddings
                    .iter()
                    .rfind(|e| e.model.as_str() == input.name)
                    .filter(|e| e.values.len() == input.dims)
                    .and_then(|e| unit(&e.values))
            })
            .collect();
        Some(Descriptor {
            raw,
            chroma,
            bpm,
            key,
            embeddings,
        })
    }

    /// The similarity vector: each group scaled so that its squared distance carries its weight.
    pub fn vector(&self, d: &Descriptor, stats: &LibraryStats) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.dims());
        self.build(
            &mut v,
            &stats.standard(),
            (&d.raw, &d.chroma, d.bpm, d.key),
            |i, out| match &d.embeddings[i] {
                Some(e) => {
                    out.extend_from_slice(e);
                    true
                }
                None => false,
            },
        );
        v
    }

    /// The similarity vector of a stored row ([`crate::stored`]), written into `out` (cleared
    /// first), so a query that reads a million rows builds its vectors in one buffer; `stats`
    /// from [`RunningStats::standard`].
    pub fn vector_stored(&self, s: &StoredView<'_>, stats: &LibraryStandard, out: &mut Vec<f32>) {
        out.clear();
        let raw = s.raws();
        let chroma: [f32; 12] = std::array::from_fn(|i| s.chroma(i));
        self.build(
            out,
            stats,
            (&raw, &chroma, s.bpm(), s.key()),
            |i, out| match s.embedding(&self.embeddings[i].name) {
                Some(b) if b.len() == 2 * self.embeddings[i].dims => {
                    out.extend(crate::stored::embedding_values(b));
                    true
                }
                _ => false,
            },
        );
    }

    /// Appends the vector of `(raw, chroma, bpm, key)` and the embeddings `embedding(i, out)`
    /// appends (unit length, unscaled; false when the track lacks input `i`).
    fn build(
        &self,
        v: &mut Vec<f32>,
        stats: &LibraryStandard,
        (raw, chroma, bpm, key): (&[f32; STAT_DIMS], &[f32; 12], f32, Key),
        mut embedding: impl FnMut(usize, &mut Vec<f32>) -> bool,
    ) {
        let w = &self.weights;
        let timbre = (w.timbre / TIMBRE_DIMS as f32).sqrt();
        for (i, x) in raw.iter().enumerate().take(TIMBRE_DIMS) {
            v.push(stats.z(i, *x) * timbre);
        }
        v.push(stats.z(LRA, raw[LRA]) * w.loudness_range.sqrt());
        let c = w.chroma.sqrt();
        v.extend(chroma.iter().map(|x| x.max(0.0).sqrt() * c));
        let t = w.tempo.sqrt();
        v.extend(tempo_point(bpm).iter().map(|x| x * t));
        let k = w.key.sqrt();
        v.extend(key.point().iter().map(|x| x * k));
        // Relative major and minor share a place on the circle; the mode keeps them apart a little.
        let m = 0.5 * w.mode.sqrt();
        v.push(if key.minor { m } else { -m });
        for (i, input) in self.embeddings.iter().enumerate() {
            let s = input.weight.max(0.0).sqrt();
            let at = v.len();
            if embedding(i, v) {
                v[at..].iter_mut().for_each(|x| *x *= s);
            } else {
                v.extend(std::iter::repeat_n(0.0, input.dims));
            }
        }
    }
}

/// The library-independent values of a record: raw [`STAT_NAMES`] values, pitch-class shares,
/// tempo and key; `None` without features.
pub(crate) fn base(a: &TrackAnalysis) -> Option<([f32; STAT_DIMS], [f32; 12], f32, Key)> {
    let f = a.features.as_ref()?;
    let find = |name: &str| a.embeddings.iter().rfind(|e| e.model.as_str() == name);
    let mut raw = scalars(f);
    match find(FINGERPRINT) {
        Some(e) if e.values.len() == FINGERPRINT_DIMS => {
            for (r, v) in raw[10..TIMBRE_DIMS].iter_mut().zip(&e.values[BANDS]) {
                *r = if v.is_finite() { *v } else { f32::NAN };
            }
        }
        _ => {}
    }
    // A value no real track has (a worker's lie, a broken decoder) is unknown: it would also
    // swamp the library's sums of squares for good (see `RAW_LIMIT`).
    for r in &mut raw {
        if r.is_nan() || r.abs() > RAW_LIMIT {
            *r = f32::NAN;
        }
    }
    let dsp = shares(&f.chroma);
    let model = find(PITCH_CLASS).and_then(|e| shares(&e.values));
    let chroma = match (dsp, model) {
        (Some(d), Some(m)) => std::array::from_fn(|i| 0.5 * (d[i] + m[i])),
        (Some(c), None) | (None, Some(c)) => c,
        (None, None) => [0.0; 12],
    };
    let bpm = if f.bpm.is_finite() {
        f.bpm.max(0.0)
    } else {
        0.0
    };
    Some((raw, chroma, bpm, Key::from_record(f.key, f.mode.as_str())))
}

/// The DSP scalars of [`STAT_NAMES`] (bands left unknown; they come from the fingerprint).
fn scalars(f: &Features) -> [f32; STAT_DIMS] {
    let mut r = [f32::NAN; STAT_DIMS];
    r[0] = log2_floor(f.spectral_centroid_hz.mean, 1.0);
    r[1] = log2_floor(f.spectral_centroid_hz.std + 1.0, 1.0);
    r[2] = log2_floor(f.spectral_rolloff_hz.mean, 1.0);
    r[3] = f.spectral_flatness.mean;
    r[4] = f.spectral_flatness.std;
    r[5] = f.spectral_flux.mean;
    r[6] = f.spectral_flux.std;
    r[7] = log2_floor(f.zero_crossing_rate.mean, 1e-4);
    r[8] = log2_floor(f.onset_rate + 0.5, 1e-3);
    r[9] = f.silence_ratio;
    r[LRA] = f.loudness_range_lu;
    for x in &mut r {
        if !x.is_finite() {
            *x = f32::NAN;
        }
    }
    r
}

/// Squared Euclidean distance (over the shorter length, should the lengths differ).
pub fn sq_distance(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Eight independent sums let the compiler vectorise the loop.
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += (x - y) * (x - y);
    }
    s
}

/// Euclidean distance.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    sq_distance(a, b).sqrt()
}

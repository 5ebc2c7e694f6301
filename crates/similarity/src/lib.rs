//! Similarity for trackmill, pure (no database, no processes): vectors built from the stored
//! analysis record, distances, a streaming bounded top-k, song paths, instant mixes and M3U
//! playlists.
//!
//! # The vector ([`SIMILARITY_VERSION`] 1)
//!
//! A track's vector is built from its stored [`TrackAnalysis`](trackmill_types::analysis::TrackAnalysis),
//! never from the audio, so it can be rebuilt for every stored row at any time. Tracks are
//! compared by Euclidean distance; each group below is scaled so that its share of the squared
//! distance is multiplied by its weight ([`Weights`], defaults shown).
//!
//! | group | dims | what | weight |
//! |---|---|---|---|
//! | timbre | 26 | z-scores against the library of: log2 spectral centroid mean and log2 (std + 1), log2 rolloff mean, flatness mean and std, flux mean and std, log2 zero-crossing rate, log2 (onset rate + 0.5), silence ratio, and the 16 log-band spectral shape values of the DSP fingerprint (`trackmill-dsp-v1` dims 12–27) | 1.0 shared by the 26 dims |
//! | loudness range | 1 | z-score of the EBU R128 loudness range | 0.25 |
//! | pitch classes | 12 | square roots of the chroma shares (so the distance is the Hellinger distance of the profiles); with models, the DSP chroma and Basic Pitch's `pitch-class12` profile half and half | 2.0 |
//! | tempo | 2 | a point on a circle, one turn per octave of tempo (`log2 bpm` mod 1): 70 and 140 BPM coincide; no pulse is the centre | 0.5 |
//! | key | 2 | the key's place on the circle of fifths; a minor key takes its relative major's place (A minor = C major), a fifth apart is one twelfth of a turn | 0.5 |
//! | mode | 1 | ±½: keeps relative major and minor slightly apart | 0.125 |
//! | model embeddings | per input | each [`EmbeddingInput`] at unit length (zeros when a track lacks it); by default `basic-pitch/notes88` | 0.5 each |
//!
//! Z-scores use [`LibraryStats`]: per-dimension count, mean and variance, capped at ±5 standard
//! deviations. They are kept with the library as per-dimension counts, sums and sums of squares
//! that every store adds its track to (and takes the track's previous values from), so a query
//! reads them in one small read ([`RunningStats::from_sums`]). Integrated loudness is left out on
//! purpose: it measures mastering, not music.
//!
//! # Stored with the analysis
//!
//! The database keeps each analysed track's [`stored`] form (the values above before
//! standardisation, the grouping keys, the model embeddings at unit length), written with its
//! analysis and versioned by [`SIMILARITY_VERSION`]; a query builds vectors from it with
//! [`Space::vector_stored`] without parsing the record.
//!
//! # Queries in bounded memory
//!
//! [`TopK`] keeps the k nearest of a stream in O(k) memory (with an optional per-artist cap,
//! exact); [`PathFinder`] and [`MixBuilder`] keep O(steps × candidates) and O(pool) items. Each is
//! fed the library one track at a time, so a database can stream it in chunks.

pub mod m3u;
pub mod mix;
pub mod music;
pub mod path;
pub mod stats;
pub mod stored;
pub mod topk;
pub mod vector;

pub use mix::{MixBuilder, MixEntry, MixInfo, MixOptions};
pub use music::{keys_compatible, tempos_compatible, Key};
pub use path::{PathFinder, Step};
pub use stats::{RunningStats, Standard};
pub use stored::StoredView;
pub use topk::{Hit, TopK};
pub use vector::{
    distance, sq_distance, Descriptor, EmbeddingInput, LibraryStandard, LibraryStats, Space,
    Weights, SIMILARITY_VERSION,
};

/// The form of an artist or album name that grouping compares: trimmed, case folded, inner
/// whitespace collapsed; `None` for an empty name.
pub fn group_key(name: &str) -> Option<String> {
    let k = name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    (!k.is_empty()).then_some(k)
}

#[cfg(test)]
mod tests;

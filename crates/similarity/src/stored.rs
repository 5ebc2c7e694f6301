//! The stored form of a track's similarity data: what the database keeps per analysed track
//! (table `similarity`, written with the analysis, one row per track), so that a query reads one
//! narrow row per track and parses no JSON. It holds the library-independent part of the vector
//! (the [`Descriptor`](crate::Descriptor) values), the grouping keys the queries need (first
//! artist, album) and the duration, and the record's model embeddings at unit length.
//!
//! Layout (little-endian; the row's `version` column is [`SIMILARITY_VERSION`]):
//!
//! | bytes | what |
//! |---|---|
//! | 27 × f32 | raw values of [`STAT_NAMES`](crate::vector::STAT_NAMES) (NaN: unknown) |
//! | 12 × f32 | pitch-class shares |
//! | f32, f32 | tempo (BPM, 0: no pulse), duration in seconds (the container's, else the decoded length; NaN: unknown) |
//! | u8, u8 | key: tonic (0 = C), 1 for minor |
//! | u16 + bytes, twice | artist and album grouping keys ([`group_key`]; length 0: none) |
//! | u8 | number of embeddings; each: u16 + name bytes, u16 length, length × i16 (the unit-length values in fixed point, × 32767) |
//!
//! Embeddings are at unit length, so each value lies in [−1, 1] and 16-bit fixed point keeps it
//! within 1.6 × 10⁻⁵, far below any distance that ranks tracks, at half the bytes of f32 (a row
//! with Basic Pitch's 88 note values is about 400 bytes instead of 576, which is what a query at
//! a million tracks mostly spends its time reading).
//!
//! Every embedding of the record is kept except the DSP fingerprint and the pitch-class profile
//! (already folded into the values above): each at most [`MAX_INLINE_DIMS`] long, and at most
//! [`MAX_INLINE_TOTAL`] values in all, in the order the record lists them. An embedding beyond
//! those bounds cannot be a similarity input (the model manifest's bounds say the same).

use crate::group_key;
use crate::music::Key;
use crate::vector::{base, unit, FINGERPRINT, PITCH_CLASS, SIMILARITY_VERSION, STAT_DIMS};
use trackmill_types::analysis::TrackAnalysis;

/// Longest embedding kept in the stored form.
pub const MAX_INLINE_DIMS: usize = trackmill_types::bounded::MAX_SIMILARITY_DIMS;
/// Most embedding values kept in the stored form, all embeddings together.
pub const MAX_INLINE_TOTAL: usize = trackmill_types::bounded::MAX_SIMILARITY_TOTAL;
/// Longest grouping key kept, in bytes (cut at a character boundary).
const MAX_KEY: usize = 1024;

/// The version the stored form is written with; rows of another version are not read.
pub const STORED_VERSION: u32 = SIMILARITY_VERSION;

/// The grouping keys of a record: its first non-empty track artist (else the album artist), and
/// its album qualified by the album artist (else the first artist), as `by \u{1f} album`.
pub fn groups(a: &TrackAnalysis) -> (Option<String>, Option<String>) {
    let artist = a
        .tags
        .artists
        .iter()
        .find_map(|n| group_key(n.as_str()))
        .or_else(|| {
            a.tags
                .album_artist
                .as_ref()
                .and_then(|n| group_key(n.as_str()))
        });
    let album = a
        .tags
        .album
        .as_ref()
        .and_then(|al| group_key(al.as_str()))
        .map(|al| {
            let by = a
                .tags
                .album_artist
                .as_ref()
                .and_then(|n| group_key(n.as_str()))
                .or_else(|| a.tags.artists.iter().find_map(|n| group_key(n.as_str())));
            format!("{}\u{1f}{al}", by.unwrap_or_default())
        });
    (artist, album)
}

fn put_f32s(out: &mut Vec<u8>, v: impl IntoIterator<Item = f32>) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    let s = s.unwrap_or("");
    let mut end = s.len().min(MAX_KEY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// The stored form of a record; `None` when it has no features (nothing was decoded), as
/// [`Space::describe`](crate::Space::describe).
pub fn encode(a: &TrackAnalysis) -> Option<Vec<u8>> {
    let (raw, chroma, bpm, key) = base(a)?;
    let mut out = Vec::with_capacity(256);
    put_f32s(&mut out, raw);
    put_f32s(&mut out, chroma);
    // As the tracks table is read: the container's duration, else what was decoded.
    let duration = a
        .audio
        .duration_s
        .or((a.audio.decoded_s > 0.0).then_some(a.audio.decoded_s))
        .filter(|d| d.is_finite() && *d >= 0.0);
    put_f32s(&mut out, [bpm, duration.map_or(f32::NAN, |d| d as f32)]);
    out.extend_from_slice(&[key.tonic, u8::from(key.minor)]);
    let (artist, album) = groups(a);
    put_str(&mut out, artist.as_deref());
    put_str(&mut out, album.as_deref());
    // The last embedding of a name wins, as in the embeddings table.
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    let mut total = 0;
    for e in a.embeddings.iter().rev() {
        let name = e.model.as_str();
        if !seen.insert(name) || name == FINGERPRINT || name == PITCH_CLASS {
            continue;
        }
        if e.values.len() > MAX_INLINE_DIMS || name.len() > MAX_KEY {
            continue;
        }
        kept.push(e);
    }
    kept.reverse();
    let mut inline = Vec::new();
    for e in kept {
        if inline.len() == usize::from(u8::MAX) || total + e.values.len() > MAX_INLINE_TOTAL {
            break;
        }
        total += e.values.len();
        inline.push(e);
    }
    out.push(inline.len() as u8);
    for e in inline {
        put_str(&mut out, Some(e.model.as_str()));
        out.extend_from_slice(&(e.values.len() as u16).to_le_bytes());
        match unit(&e.values) {
            Some(u) => {
                for x in u {
                    out.extend_from_slice(&to_fixed(x).to_le_bytes());
                }
            }
            // A zero or non-finite vector carries no direction: zeros, as an absent one.
            None => out.extend(std::iter::repeat_n(0u8, 2 * e.values.len())),
        }
    }
    Some(out)
}

/// A stored row, read in place (nothing is copied or allocated).
#[derive(Clone, Copy, Debug)]
pub struct StoredView<'a> {
    bytes: &'a [u8],
    artist: &'a str,
    album: &'a str,
    embeddings: &'a [u8],
    count: u8,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<usize> {
        let s = self.take(2)?;
        Some(usize::from(u16::from_le_bytes([s[0], s[1]])))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u16()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// Scale of the embeddings' 16-bit fixed point.
const FIXED_ONE: f32 = 32767.0;

fn to_fixed(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * FIXED_ONE).round() as i16
}

/// The values of a stored embedding ([`StoredView::embedding`]'s bytes).
pub fn embedding_values(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(2)
        .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) * (1.0 / FIXED_ONE))
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

const RAW: usize = 0;
const CHROMA: usize = STAT_DIMS;
const BPM: usize = CHROMA + 12;
const DURATION: usize = BPM + 1;
const FIXED: usize = 4 * (DURATION + 1);

impl<'a> StoredView<'a> {
    /// Reads a stored row; `None` when it is not one this version wrote (cut short, a length
    /// past its end, a name that is not UTF-8, bytes left over).
    pub fn parse(bytes: &'a [u8]) -> Option<StoredView<'a>> {
        let mut c = Cursor { b: bytes, at: 0 };
        c.take(FIXED)?;
        let key = c.take(2)?;
        if key[0] > 11 || key[1] > 1 {
            return None;
        }
        let artist = c.str()?;
        let album = c.str()?;
        let count = c.take(1)?[0];
        let start = c.at;
        for _ in 0..count {
            c.str()?;
            let n = c.u16()?;
            c.take(2 * n)?;
        }
        if c.at != bytes.len() {
            return None;
        }
        Some(StoredView {
            bytes,
            artist,
            album,
            embeddings: &bytes[start..],
            count,
        })
    }

    /// Raw value `i` of [`STAT_NAMES`](crate::vector::STAT_NAMES).
    pub fn raw(&self, i: usize) -> f32 {
        f32_at(self.bytes, RAW + i)
    }

    /// All raw values, for the library statistics.
    pub fn raws(&self) -> [f32; STAT_DIMS] {
        std::array::from_fn(|i| self.raw(i))
    }

    pub fn chroma(&self, i: usize) -> f32 {
        f32_at(self.bytes, CHROMA + i)
    }

    pub fn bpm(&self) -> f32 {
        f32_at(self.bytes, BPM)
    }

    /// Duration in seconds, when known.
    pub fn duration_s(&self) -> Option<f64> {
        let d = f32_at(self.bytes, DURATION);
        d.is_finite().then_some(f64::from(d))
    }

    pub fn key(&self) -> Key {
        Key {
            tonic: self.bytes[FIXED],
            minor: self.bytes[FIXED + 1] == 1,
        }
    }

    /// Grouping key of the first artist (else the album artist).
    pub fn artist(&self) -> Option<&'a str> {
        (!self.artist.is_empty()).then_some(self.artist)
    }

    /// Grouping key of the album (`by \u{1f} album`).
    pub fn album(&self) -> Option<&'a str> {
        (!self.album.is_empty()).then_some(self.album)
    }

    /// The unit-length embedding stored under `name`, as its fixed-point bytes
    /// ([`embedding_values`] reads them).
    pub fn embedding(&self, name: &str) -> Option<&'a [u8]> {
        let mut c = Cursor {
            b: self.embeddings,
            at: 0,
        };
        for _ in 0..self.count {
            let n = c.str()?;
            let dims = c.u16()?;
            let values = c.take(2 * dims)?;
            if n == name {
                return Some(values);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LibraryStats, Space};
    use trackmill_types::analysis::{Embedding, Features};
    use trackmill_types::CleanText;

    fn record() -> TrackAnalysis {
        let mut a = TrackAnalysis {
            features: Some(Features {
                bpm: 123.5,
                key: 9,
                mode: CleanText::new("minor"),
                chroma: [1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 1.0, 0.0, 0.0],
                loudness_range_lu: 7.5,
                ..Features::default()
            }),
            ..TrackAnalysis::default()
        };
        a.audio.duration_s = Some(241.25);
        a.tags.artists = vec![CleanText::new("  "), CleanText::new("The  Band")];
        a.tags.album = Some(CleanText::new("Live"));
        a.embeddings = vec![
            Embedding {
                model: CleanText::new("basic-pitch/notes88"),
                values: (0..88).map(|i| i as f32).collect(),
            },
            Embedding {
                model: CleanText::new("trackmill-dsp-v1"),
                values: vec![0.5; 38],
            },
            Embedding {
                model: CleanText::new("big/too-long"),
                values: vec![1.0; MAX_INLINE_DIMS + 1],
            },
        ];
        a
    }

    #[test]
    fn the_stored_form_gives_the_vector_the_record_gives() {
        let a = record();
        let bytes = encode(&a).unwrap();
        let v = StoredView::parse(&bytes).unwrap();
        assert_eq!(v.bpm(), 123.5);
        assert_eq!(v.duration_s(), Some(241.25));
        assert_eq!(
            v.key(),
            Key {
                tonic: 9,
                minor: true
            }
        );
        assert_eq!(v.artist(), Some("the band"));
        assert_eq!(v.album(), Some("the band\u{1f}live"));
        assert!(
            v.embedding("trackmill-dsp-v1").is_none(),
            "folded into the raw values"
        );
        assert!(v.embedding("big/too-long").is_none(), "over the bound");
        assert_eq!(v.embedding("basic-pitch/notes88").unwrap().len(), 2 * 88);
        let space = Space::default();
        let mut stats = LibraryStats::default();
        stats.push(&v.raws());
        stats.push(
            &space
                .describe(&TrackAnalysis::default().with_features())
                .unwrap()
                .raw,
        );
        let from_record = space.vector(&space.describe(&a).unwrap(), &stats);
        let mut from_store = Vec::new();
        space.vector_stored(&v, &stats.standard(), &mut from_store);
        assert_eq!(from_record.len(), from_store.len());
        for (x, y) in from_record.iter().zip(&from_store) {
            assert!((x - y).abs() < 2e-5, "{x} {y}");
        }
    }

    trait WithFeatures {
        fn with_features(self) -> Self;
    }
    impl WithFeatures for TrackAnalysis {
        fn with_features(mut self) -> Self {
            self.features = Some(Features::default());
            self
        }
    }

    #[test]
    fn absurd_values_are_stored_as_unknown() {
        let mut a = record();
        let f = a.features.as_mut().unwrap();
        f.spectral_flux.mean = 3e38;
        f.loudness_range_lu = -2e4;
        f.silence_ratio = 0.25;
        let bytes = encode(&a).unwrap();
        let raw = StoredView::parse(&bytes).unwrap().raws();
        assert!(raw[5].is_nan() && raw[26].is_nan(), "{raw:?}");
        assert_eq!(raw[9], 0.25);
    }

    #[test]
    fn a_damaged_row_is_refused_not_misread() {
        let bytes = encode(&record()).unwrap();
        assert!(encode(&TrackAnalysis::default()).is_none());
        for cut in 0..bytes.len() {
            assert!(StoredView::parse(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(StoredView::parse(&longer).is_none());
        let mut bad_key = bytes.clone();
        bad_key[FIXED] = 12;
        assert!(StoredView::parse(&bad_key).is_none());
        // Random bytes never panic.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let n = rng.random_range(0..600);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let _ = StoredView::parse(&junk).map(|v| v.embedding("a"));
        }
    }
}

//! Caps on the lists a worker's reply may carry, applied while decoding: a list whose stated
//! length is above its cap is refused before anything is allocated for it, so a frame of the
//! maximum size cannot turn into hundreds of megabytes of empty values in the reader. The caps
//! are far above what the analysis produces (the tag reader keeps at most ten artists, a model
//! adds a handful of embeddings); [`crate::clean::MAX_DECODED_BYTES`] caps each string.

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Artists and genres of one file (the tag reader keeps ten).
pub const MAX_TAG_LIST: usize = 16;
/// Embeddings of one file (the DSP fingerprint plus those of the models).
pub const MAX_EMBEDDINGS: usize = 32;
/// Values of one embedding.
pub const MAX_EMBEDDING_VALUES: usize = 4096;
/// Longest embedding that can be a similarity input (the stored similarity row keeps it).
pub const MAX_SIMILARITY_DIMS: usize = 1024;
/// Most values of all similarity inputs together (what one stored similarity row keeps).
pub const MAX_SIMILARITY_TOTAL: usize = 4096;
/// Model names stored with one file.
pub const MAX_MODELS: usize = 32;
/// Operator notes of one file.
pub const MAX_NOTES: usize = 64;

struct Capped<T, const N: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Capped<T, N> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {N} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        if let Some(len) = seq.size_hint().filter(|&len| len > N) {
            return Err(A::Error::invalid_length(len, &self));
        }
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N));
        while let Some(item) = seq.next_element()? {
            if out.len() == N {
                return Err(A::Error::invalid_length(N + 1, &self));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// Decodes a list of at most `N` items.
pub fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(Capped::<T, N>(PhantomData))
}

/// Serde `deserialize_with` helpers, one per capped field kind.
pub(crate) mod de {
    use super::*;

    pub fn tag_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        vec::<D, T, MAX_TAG_LIST>(d)
    }

    pub fn embeddings<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        vec::<D, T, MAX_EMBEDDINGS>(d)
    }

    pub fn embedding_values<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        vec::<D, T, MAX_EMBEDDING_VALUES>(d)
    }

    pub fn models<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        vec::<D, T, MAX_MODELS>(d)
    }

    pub fn notes<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        vec::<D, T, MAX_NOTES>(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode, varint, MAX_FRAME};
    use crate::{
        Attempt, CleanText, Embedding, Failure, FailureClass, FileKey, FileStats, FromWorker,
        Outcome, PathBytes, Record, RecordOutcome, Stage, ToDb, TrackAnalysis,
    };
    use std::time::{Duration, Instant};

    const MARK: &str = "TITLE-MARK-7f3a";

    /// The payload of a worker's reply carrying `a`, cut right after `MARK` (which `a` holds just
    /// before an empty list): `(head, tail)`, with the list's one-byte length (zero) between them.
    fn split_after_mark(a: TrackAnalysis) -> (Vec<u8>, Vec<u8>) {
        let msg = FromWorker::Done {
            job_id: 1,
            outcome: Outcome::Analyzed(Box::new(a)),
            stats: FileStats::default(),
            last: false,
        };
        let frame = encode(&msg).unwrap();
        let payload = &frame[4..];
        let at = payload
            .windows(MARK.len())
            .position(|w| w == MARK.as_bytes())
            .unwrap()
            + MARK.len();
        assert_eq!(payload[at], 0, "the empty list follows the mark");
        (payload[..at].to_vec(), payload[at + 1..].to_vec())
    }

    /// A worker's reply cut where the artists' list begins (see `split_after_mark`).
    fn split_at_artists() -> (Vec<u8>, Vec<u8>) {
        let mut a = TrackAnalysis::default();
        a.tags.title = Some(CleanText::new(MARK));
        split_after_mark(a)
    }

    /// A reply with `count` empty artists (one zero byte each).
    fn with_empty_artists(count: u64) -> Vec<u8> {
        let (head, tail) = split_at_artists();
        let mut p = head;
        p.extend(varint(count));
        p.resize(p.len() + count as usize, 0);
        p.extend(tail);
        p
    }

    #[test]
    fn the_split_reply_decodes_with_allowed_counts() {
        let p = with_empty_artists(MAX_TAG_LIST as u64);
        let back: FromWorker = decode(&p).unwrap();
        let FromWorker::Done {
            outcome: Outcome::Analyzed(a),
            ..
        } = back
        else {
            panic!("not a result")
        };
        assert_eq!(a.tags.artists.len(), MAX_TAG_LIST);
        assert!(decode::<FromWorker>(&with_empty_artists(MAX_TAG_LIST as u64 + 1)).is_err());
    }

    #[test]
    fn a_maximum_frame_of_empty_strings_is_refused_cheaply() {
        // Without the cap this payload decodes into about 8 million Strings (some 200 MB).
        let (head, tail) = split_at_artists();
        // The count's varint takes 4 bytes at this size.
        let count = (MAX_FRAME - head.len() - tail.len() - 4) as u64;
        let p = with_empty_artists(count);
        assert_eq!(p.len(), MAX_FRAME);
        let t = Instant::now();
        assert!(decode::<FromWorker>(&p).is_err());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn a_huge_list_count_is_refused() {
        let (head, tail) = split_at_artists();
        for count in [u64::from(u32::MAX), u64::MAX >> 1] {
            let mut p = head.clone();
            p.extend(varint(count));
            p.extend(&tail);
            assert!(decode::<FromWorker>(&p).is_err(), "{count}");
        }
        // Embedding values: an embedding claiming a billion floats.
        let mut a = TrackAnalysis::default();
        a.embeddings.push(Embedding {
            model: CleanText::new(MARK),
            values: Vec::new(),
        });
        let (head, tail) = split_after_mark(a);
        let mut p = head;
        p.extend(varint(1 << 30));
        p.extend(&tail);
        assert!(decode::<FromWorker>(&p).is_err());
    }

    fn record(attempts: usize, message_bytes: usize) -> Record {
        let text: String = (0..message_bytes)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let failure = Failure {
            class: FailureClass::Crash,
            stage: Stage::Worker,
            message: CleanText::with_max(&text, usize::MAX),
        };
        Record {
            run_id: 1,
            key: FileKey {
                path: PathBytes(b"/music/a.flac".to_vec()),
                size: 1,
                mtime_ns: 1,
            },
            outcome: RecordOutcome::Quarantined(failure.clone()),
            stats: FileStats::default(),
            attempts: (0..attempts)
                .map(|i| Attempt {
                    attempt: i as u32,
                    failure: failure.clone(),
                    worker_pid: 1,
                    peak_rss_bytes: 1,
                    elapsed_ms: 1,
                    at_ms: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn a_record_knows_whether_it_fits_a_frame() {
        let small = record(3, 100);
        assert!(small.fits_frame());
        // The estimate is the real size of the message with the widest sequence number.
        let msg = ToDb::Store {
            seq: u64::MAX,
            record: Box::new(small.clone()),
        };
        let real = encode(&msg).unwrap().len() - 4;
        let est = crate::frame::encoded_len(&small).unwrap() + 11;
        assert_eq!(real, est);

        let big = record(MAX_FRAME / 8000 + 10, 8000);
        assert!(!big.fits_frame());
        let msg = ToDb::Store {
            seq: 1,
            record: Box::new(big),
        };
        assert!(encode(&msg).is_err(), "it would not have fitted");
    }
}

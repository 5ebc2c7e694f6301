//! The per-file collector: keeps only the parts of the stream the manifests ask for.
//!
//! Each model gets a reservoir of fixed-length segments taken at starts `k · stride`. While the
//! stream fits, segments are contiguous (stride = length), so a short track is kept whole.
//! When the reservoir is full, every other segment is dropped and the stride doubles, so memory
//! stays bounded by `capacity` segments whatever the track length, and what is kept stays spread
//! over the whole track. It does not rely on the duration hint (containers lie).

use crate::model::manifest::{SegmentMode, SegmentSpec, STREAM_RATE};
use crate::options::MonoSink;

/// A contiguous stretch of the stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Segment {
    /// Sample index of the first sample.
    pub start: u64,
    pub samples: Vec<f32>,
}

/// Bounded, evenly spread segments of one stream.
#[derive(Clone, Debug)]
pub(crate) struct Reservoir {
    len: usize,
    capacity: usize,
    /// How many to hand out at the end (`None`: all kept).
    select: Option<usize>,
    stride: u64,
    kept: Vec<Segment>,
    /// The segment being filled, if the current position is inside one.
    open: Option<Segment>,
}

impl Reservoir {
    pub(crate) fn new(spec: &SegmentSpec) -> Reservoir {
        let len = ((spec.seconds * STREAM_RATE as f64).round() as usize).max(1);
        let (capacity, select) = match spec.mode {
            SegmentMode::Spread => (2 * spec.count, Some(spec.count)),
            SegmentMode::Whole => (
                ((spec.max_seconds / spec.seconds).floor() as usize).max(1),
                None,
            ),
        };
        Reservoir {
            len,
            capacity: capacity.max(2),
            select,
            stride: len as u64,
            kept: Vec::new(),
            open: None,
        }
    }

    /// Feeds the next samples; `pos` is the index of `samples[0]` in the stream.
    fn accept(&mut self, mut pos: u64, mut samples: &[f32]) {
        while !samples.is_empty() {
            if let Some(seg) = &mut self.open {
                let want = self.len - seg.samples.len();
                let take = want.min(samples.len());
                seg.samples.extend_from_slice(&samples[..take]);
                samples = &samples[take..];
                pos += take as u64;
                if seg.samples.len() == self.len {
                    let done = self.open.take().expect("open segment");
                    self.push(done);
                }
                continue;
            }
            // Next segment start at or after `pos`.
            let next = pos.div_ceil(self.stride) * self.stride;
            let skip = (next - pos).min(samples.len() as u64);
            samples = &samples[skip as usize..];
            pos += skip;
            if !samples.is_empty() {
                self.open = Some(Segment {
                    start: pos,
                    samples: Vec::with_capacity(self.len),
                });
            }
        }
    }

    fn push(&mut self, seg: Segment) {
        self.kept.push(seg);
        if self.kept.len() >= self.capacity {
            self.stride *= 2;
            let stride = self.stride;
            self.kept.retain(|s| s.start % stride == 0);
        }
    }

    /// The segments to run on: complete ones spread over the stream; a track shorter than one
    /// segment gives its only, partial segment.
    pub(crate) fn finish(mut self) -> Vec<Segment> {
        if let Some(open) = self.open.take() {
            // A partial last segment is used only when nothing complete exists.
            if self.kept.is_empty() {
                self.kept.push(open);
            }
        }
        let kept = self.kept;
        let Some(n) = self.select.filter(|&n| n < kept.len()) else {
            return merge_contiguous(kept);
        };
        let k = kept.len();
        let picks: Vec<usize> = (0..n).map(|i| ((2 * i + 1) * k) / (2 * n)).collect();
        let out = kept
            .into_iter()
            .enumerate()
            .filter(|(i, _)| picks.contains(i))
            .map(|(_, s)| s)
            .collect();
        merge_contiguous(out)
    }
}

/// Joins segments that follow each other directly, so windows span the joins.
fn merge_contiguous(segs: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segs.len());
    for s in segs {
        match out.last_mut() {
            Some(last) if last.start + last.samples.len() as u64 == s.start => {
                last.samples.extend_from_slice(&s.samples)
            }
            _ => out.push(s),
        }
    }
    out
}

/// Collects, for one file, the segments every loaded model asks for. Implements
/// [`MonoSink`]: hand it to the decoder, then give it to [`crate::model::ModelSet::infer`].
#[derive(Clone, Debug)]
pub struct SegmentCollector {
    pub(crate) reservoirs: Vec<Reservoir>,
    pos: u64,
    duration_hint_s: Option<f64>,
}

impl SegmentCollector {
    pub(crate) fn new(reservoirs: Vec<Reservoir>) -> SegmentCollector {
        SegmentCollector {
            reservoirs,
            pos: 0,
            duration_hint_s: None,
        }
    }

    /// Seconds of audio seen so far.
    pub fn seconds_seen(&self) -> f64 {
        self.pos as f64 / STREAM_RATE as f64
    }

    /// The duration the container announced, if any.
    pub fn duration_hint_s(&self) -> Option<f64> {
        self.duration_hint_s
    }
}

impl MonoSink for SegmentCollector {
    fn begin(&mut self, duration_hint_s: Option<f64>) {
        self.duration_hint_s = duration_hint_s;
    }

    fn accept(&mut self, samples: &[f32]) {
        for r in &mut self.reservoirs {
            r.accept(self.pos, samples);
        }
        self.pos += samples.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: SegmentMode, count: usize, seconds: f64, max_seconds: f64) -> SegmentSpec {
        SegmentSpec {
            mode,
            count,
            seconds,
            max_seconds,
        }
    }

    fn feed(r: &mut Reservoir, total: u64, chunk: usize) {
        let mut pos = 0u64;
        while pos < total {
            let n = chunk.min((total - pos) as usize);
            let buf: Vec<f32> = (0..n).map(|i| (pos + i as u64) as f32).collect();
            r.accept(pos, &buf);
            pos += n as u64;
        }
    }

    #[test]
    fn spread_segments_cover_the_track_and_stay_bounded() {
        let mut r = Reservoir::new(&spec(SegmentMode::Spread, 3, 1.0, 600.0));
        let total = 22_050 * 300;
        feed(&mut r, total, 4096);
        assert!(r.kept.len() <= 6);
        let segs = r.finish();
        assert_eq!(segs.len(), 3);
        for s in &segs {
            assert_eq!(s.samples.len(), 22_050);
            assert_eq!(s.samples[0], s.start as f32);
        }
        assert!(segs[0].start < total / 3 && segs[2].start > total / 2);
    }

    #[test]
    fn whole_mode_keeps_a_short_track_whole() {
        let mut r = Reservoir::new(&spec(SegmentMode::Whole, 1, 2.0, 60.0));
        feed(&mut r, 22_050 * 10, 1000);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].start, 0);
        assert_eq!(segs[0].samples.len(), 22_050 * 10);
    }

    #[test]
    fn a_track_shorter_than_a_segment_gives_its_part() {
        let mut r = Reservoir::new(&spec(SegmentMode::Spread, 3, 10.0, 600.0));
        feed(&mut r, 5000, 333);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].samples.len(), 5000);
    }

    #[test]
    fn chunking_does_not_change_what_is_kept() {
        let s = spec(SegmentMode::Spread, 3, 0.5, 600.0);
        let mut a = Reservoir::new(&s);
        let mut b = Reservoir::new(&s);
        feed(&mut a, 22_050 * 40, 4096);
        feed(&mut b, 22_050 * 40, 77);
        assert_eq!(a.finish(), b.finish());
    }
}

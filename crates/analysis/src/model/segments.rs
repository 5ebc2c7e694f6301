//! The per-file collector: keeps only the parts of the stream the manifests ask for.
//!
//! Each model gets a reservoir of fixed-length segments taken at starts `k · stride`. While the
//! stream fits, segments are contiguous (stride = length), so a short track is kept whole.
//! When the reservoir is full, every other segment is dropped and the stride doubles, so memory
//! stays bounded by `capacity` segments whatever the track length, and what is kept stays spread
//! over the whole track. It does not rely on the duration hint (containers lie).
//!
//! With `max_share`, the segments are chosen at the end of the stream, when its decoded length is
//! known: as many as fit in that share of it, or, where even one does not, one shortened segment
//! from the middle of the track, never shorter than one input window of audio.

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
    /// The most audio handed out, as a share of the stream.
    max_share: Option<f64>,
    /// The least audio handed out when the share is smaller (one input window).
    min_len: usize,
    /// Samples seen so far (the stream length once it ended).
    end: u64,
    stride: u64,
    kept: Vec<Segment>,
    /// The segment being filled, if the current position is inside one.
    open: Option<Segment>,
}

impl Reservoir {
    /// `min_len`: the samples that fill one input window of the model.
    pub(crate) fn new(spec: &SegmentSpec, min_len: usize) -> Reservoir {
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
            max_share: spec.max_share,
            min_len: min_len.max(1),
            end: 0,
            stride: len as u64,
            kept: Vec::new(),
            open: None,
        }
    }

    /// Feeds the next samples; `pos` is the index of `samples[0]` in the stream.
    fn accept(&mut self, mut pos: u64, mut samples: &[f32]) {
        self.end = self.end.max(pos + samples.len() as u64);
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
    /// segment gives its only, partial segment. With `max_share`, as many as fit in that share
    /// of the stream, or one shortened segment (at least `min_len` samples) from the middle of the track.
    pub(crate) fn finish(mut self) -> Vec<Segment> {
        if let Some(open) = self.open.take() {
            // A partial last segment is used only when nothing complete exists.
            if self.kept.is_empty() {
                self.kept.push(open);
            }
        }
        let kept = self.kept;
        let mut n = self.select.unwrap_or(kept.len()).min(kept.len());
        if let Some(share) = self.max_share {
            let budget = ((share * self.end as f64).floor() as usize).max(self.min_len);
            let fit = budget / self.len;
            if fit == 0 {
                return spread(merge_contiguous(kept), 1)
                    .into_iter()
                    .map(|s| shorten(s, budget))
                    .collect();
            }
            n = n.min(fit);
        }
        merge_contiguous(spread(kept, n))
    }
}

/// `n` of `kept` (n ≤ its length), evenly spread: the middle one of each of `n` equal parts.
fn spread(kept: Vec<Segment>, n: usize) -> Vec<Segment> {
    let k = kept.len();
    if n >= k {
        return kept;
    }
    let picks: Vec<usize> = (0..n).map(|i| ((2 * i + 1) * k) / (2 * n)).collect();
    kept.into_iter()
        .enumerate()
        .filter(|(i, _)| picks.contains(i))
        .map(|(_, s)| s)
        .collect()
}

/// The middle `len` samples of `seg` (all of it if shorter).
fn shorten(mut seg: Segment, len: usize) -> Segment {
    if seg.samples.len() > len {
        let skip = (seg.samples.len() - len) / 2;
        seg.samples.drain(..skip);
        seg.samples.truncate(len);
        seg.start += skip as u64;
    }
    seg
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
            max_share: None,
        }
    }

    /// Basic Pitch's segments (3 × 6.734 s) and input window (43 844 − 3 840 samples of audio).
    const WINDOW: usize = 40_004;

    fn shared(share: f64) -> Reservoir {
        let mut s = spec(SegmentMode::Spread, 3, 6.734, 600.0);
        s.max_share = Some(share);
        Reservoir::new(&s, WINDOW)
    }

    fn seen(segs: &[Segment]) -> usize {
        segs.iter().map(|s| s.samples.len()).sum()
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
        let mut r = Reservoir::new(&spec(SegmentMode::Spread, 3, 1.0, 600.0), 1);
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
        let mut r = Reservoir::new(&spec(SegmentMode::Whole, 1, 2.0, 60.0), 1);
        feed(&mut r, 22_050 * 10, 1000);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].start, 0);
        assert_eq!(segs[0].samples.len(), 22_050 * 10);
    }

    #[test]
    fn a_track_shorter_than_a_segment_gives_its_part() {
        let mut r = Reservoir::new(&spec(SegmentMode::Spread, 3, 10.0, 600.0), 1);
        feed(&mut r, 5000, 333);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].samples.len(), 5000);
    }

    #[test]
    fn chunking_does_not_change_what_is_kept() {
        let s = spec(SegmentMode::Spread, 3, 0.5, 600.0);
        let mut a = Reservoir::new(&s, 1);
        let mut b = Reservoir::new(&s, 1);
        feed(&mut a, 22_050 * 40, 4096);
        feed(&mut b, 22_050 * 40, 77);
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn the_share_caps_how_many_segments_a_long_track_gives() {
        let seg = (6.734f64 * 22_050.0).round() as usize;
        // 4 min at 5 %: 12 s allowed, room for one 6.7 s segment.
        let total = 22_050 * 240;
        let mut r = shared(0.05);
        feed(&mut r, total, 4096);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].samples.len(), seg);
        assert!(segs[0].start > total / 3 && segs[0].start < total / 2);
        // 5 min: two, spread over the track; 10 min: the full three.
        for (minutes, want) in [(5u64, 2usize), (10, 3)] {
            let total = 22_050 * 60 * minutes;
            let mut r = shared(0.05);
            feed(&mut r, total, 4096);
            let segs = r.finish();
            assert_eq!(segs.len(), want, "{minutes} min");
            assert!(seen(&segs) as f64 <= 0.05 * total as f64);
            assert!(segs.iter().all(|s| s.samples.len() == seg));
            assert!(segs[0].start < total / 2 && segs[want - 1].start > total / 2);
        }
        // Without the share the same 4-minute track gives three.
        let mut r = Reservoir::new(&spec(SegmentMode::Spread, 3, 6.734, 600.0), WINDOW);
        feed(&mut r, total, 4096);
        assert_eq!(r.finish().len(), 3);
    }

    #[test]
    fn a_short_track_gives_one_shortened_segment_from_the_middle_third() {
        // 90 s at 5 %: 4.5 s, less than one segment, more than one window.
        let total = 22_050 * 90;
        let mut r = shared(0.05);
        feed(&mut r, total, 1000);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        let want = (0.05 * total as f64).floor() as usize;
        assert_eq!(segs[0].samples.len(), want);
        assert_eq!(segs[0].samples[0], segs[0].start as f32);
        let middle = segs[0].start + want as u64 / 2;
        assert!(middle > total / 3 && middle < 2 * total / 3, "{middle}");
    }

    #[test]
    fn a_very_short_track_still_gives_one_full_window() {
        // 30 s at 5 %: 1.5 s, less than one window: one window of audio.
        let total = 22_050 * 30;
        let mut r = shared(0.05);
        feed(&mut r, total, 1000);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].samples.len(), WINDOW);
        // 1 s: shorter than a window, kept whole (the input is zero-padded).
        let mut r = shared(0.05);
        feed(&mut r, 22_050, 1000);
        let segs = r.finish();
        assert_eq!(segs.len(), 1);
        assert_eq!((segs[0].start, segs[0].samples.len()), (0, 22_050));
    }

    #[test]
    fn the_share_also_bounds_whole_mode() {
        let mut s = spec(SegmentMode::Whole, 1, 2.0, 60.0);
        s.max_share = Some(0.25);
        let mut r = Reservoir::new(&s, 1000);
        feed(&mut r, 22_050 * 40, 1000);
        let segs = r.finish();
        // 10 s allowed: five 2 s segments spread over the 40 s.
        assert_eq!(segs.len(), 5);
        assert_eq!(seen(&segs), 22_050 * 10);
    }

    #[test]
    fn the_selection_with_a_share_does_not_depend_on_chunking() {
        for total in [22_050 * 25, 22_050 * 100, 22_050 * 333] {
            let mut a = shared(0.05);
            let mut b = shared(0.05);
            feed(&mut a, total, 4096);
            feed(&mut b, total, 77);
            assert_eq!(a.finish(), b.finish());
        }
    }
}

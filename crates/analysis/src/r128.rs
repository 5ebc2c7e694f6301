//! EBU R128 / ITU-R BS.1770-4 loudness meter: K-weighting, 400 ms gating blocks every 100 ms
//! for integrated loudness, 3 s short-term blocks every second for loudness range (the same
//! block scheme, filter, channel weights and gates as libebur128 and the `ebur128` crate, which
//! the tests compare against). The K-weighted energy is summed once per 100 ms sub-block, and
//! gated blocks go into fixed histograms of 0.01 LU bins, so memory does not grow with
//! duration and no sample is looked at twice.

/// Absolute gate, LUFS.
const ABS_GATE_LUFS: f64 = -70.0;
/// Histogram range and resolution, LUFS.
const HIST_MAX_LUFS: f64 = 10.0;
const HIST_STEP: f64 = 0.01;
const HIST_BINS: usize = ((HIST_MAX_LUFS - ABS_GATE_LUFS) / HIST_STEP) as usize;

fn energy_to_lufs(e: f64) -> f64 {
    10.0 * e.log10() - 0.691
}

/// Blocks above the absolute gate, by loudness: count and summed energy per bin. The bins are
/// allocated with the first block and only the range of bins that holds blocks is ever read, so
/// a short file costs no 8,000-bin clear and sum (its cost was most of a tiny file's analysis).
struct Histogram {
    count: Vec<u64>,
    energy: Vec<f64>,
    /// Every block so far lies in bins `lo..hi` (an empty range when there is none).
    lo: usize,
    hi: usize,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            count: Vec::new(),
            energy: Vec::new(),
            lo: HIST_BINS,
            hi: 0,
        }
    }

    /// Adds a block's mean energy when it passes the absolute gate (NaN never does).
    fn add(&mut self, energy: f64) {
        let l = energy_to_lufs(energy);
        if l >= ABS_GATE_LUFS {
            if self.count.is_empty() {
                self.count = vec![0; HIST_BINS];
                self.energy = vec![0.0; HIST_BINS];
            }
            let bin = Self::bin_of(energy);
            self.count[bin] += 1;
            self.energy[bin] += energy;
            self.lo = self.lo.min(bin);
            self.hi = self.hi.max(bin + 1);
        }
    }

    /// The bins at or above `from` that can hold blocks. Bins outside `lo..hi` are 0, so sums
    /// over this range equal sums over all bins, bit for bit (adding 0 changes no sum).
    fn used_from(&self, from: usize) -> std::ops::Range<usize> {
        if self.hi == 0 {
            return 0..0;
        }
        let start = from.max(self.lo);
        start..self.hi.max(start)
    }

    /// Bin of an energy; energies below the absolute gate (or NaN) map to bin 0.
    fn bin_of(energy: f64) -> usize {
        let l = energy_to_lufs(energy);
        if l >= ABS_GATE_LUFS {
            (((l - ABS_GATE_LUFS) / HIST_STEP) as usize).min(HIST_BINS - 1)
        } else {
            0
        }
    }

    /// First bin at or above the relative gate (`offset_lu` below the mean energy), or `None`
    /// when there are no blocks.
    fn gate(&self, offset_lu: f64) -> Option<usize> {
        let used = self.used_from(0);
        let n: u64 = self.count[used.clone()].iter().sum();
        if n == 0 {
            return None;
        }
        let mean = self.energy[used].iter().sum::<f64>() / n as f64;
        let threshold = mean * 10f64.powf(-offset_lu / 10.0);
        Some(Self::bin_of(threshold))
    }
}

/// Streaming loudness meter.
pub struct R128 {
    b: [f64; 5],
    a: [f64; 5],
    state: Vec<[f64; 5]>,
    weights: Vec<f64>,
    sub_len: usize,
    /// Frames and per-channel weighted energy of the current 100 ms sub-block.
    sub_fill: usize,
    sub_energy: f64,
    /// The last 30 sub-block energies (sums of squares, weighted), newest at `ring_pos - 1`.
    ring: [f64; 30],
    ring_pos: usize,
    subs: u64,
    subs_since_short: u64,
    blocks: Histogram,
    short: Histogram,
}

impl R128 {
    pub fn new(channels: usize, rate: u32) -> Self {
        let (b, a) = k_weighting(f64::from(rate));
        R128 {
            b,
            a,
            state: vec![[0.0; 5]; channels],
            weights: channel_weights(channels),
            sub_len: (rate as usize + 5) / 10,
            sub_fill: 0,
            sub_energy: 0.0,
            ring: [0.0; 30],
            ring_pos: 0,
            subs: 0,
            subs_since_short: 0,
            blocks: Histogram::new(),
            short: Histogram::new(),
        }
    }

    /// Adds planar frames (one slice per channel, equal lengths).
    #[inline(always)] // Compiled into `LoudnessMeter::measure_avx2` too, with the filter loops below.
    pub fn add(&mut self, planes: &[&[f32]]) {
        let frames = planes.first().map_or(0, |p| p.len());
        let mut at = 0;
        while at < frames {
            let take = (self.sub_len - self.sub_fill).min(frames - at);
            let n = planes.len().min(self.state.len());
            // Channels in pairs: two independent filter chains in one loop run almost twice as
            // fast as one.
            let mut c = 0;
            while c + 1 < n {
                let (s0, s1) = self.state.split_at_mut(c + 1);
                let (e0, e1) = filter_energy_pair(
                    &self.b,
                    &self.a,
                    [&mut s0[c], &mut s1[0]],
                    [&planes[c][at..at + take], &planes[c + 1][at..at + take]],
                );
                self.sub_energy += self.weights[c] * e0 + self.weights[c + 1] * e1;
                c += 2;
            }
            if c < n {
                let e = filter_energy(
                    &self.b,
                    &self.a,
                    &mut self.state[c],
                    &planes[c][at..at + take],
                );
                self.sub_energy += self.weights[c] * e;
            }
            self.sub_fill += take;
            at += take;
            if self.sub_fill == self.sub_len {
                self.finish_sub_block();
            }
        }
    }

    fn finish_sub_block(&mut self) {
        self.ring[self.ring_pos] = self.sub_energy;
        self.ring_pos = (self.ring_pos + 1) % self.ring.len();
        self.sub_energy = 0.0;
        self.sub_fill = 0;
        self.subs += 1;
        self.subs_since_short += 1;
        if self.subs >= 4 {
            let e = self.last(4) / (4 * self.sub_len) as f64;
            self.blocks.add(e);
        }
        if self.subs_since_short == 30 {
            let e = self.last(30) / (30 * self.sub_len) as f64;
            self.short.add(e);
            self.subs_since_short = 20;
        }
    }

    /// Sum of the newest `n` sub-block energies, oldest first (a fixed order).
    fn last(&self, n: usize) -> f64 {
        let len = self.ring.len();
        (0..n)
            .map(|i| self.ring[(self.ring_pos + len - n + i) % len])
            .sum()
    }

    /// Integrated loudness, LUFS (`None` when no block passes the gates).
    pub fn integrated(&self) -> Option<f64> {
        let h = &self.blocks;
        let from = h.gate(10.0)?;
        let (n, e) = h.used_from(from).fold((0u64, 0.0f64), |(n, e), i| {
            (n + h.count[i], e + h.energy[i])
        });
        (n > 0).then(|| energy_to_lufs(e / n as f64))
    }

    /// Loudness range, LU (0 when there are too few short-term blocks).
    pub fn range(&self) -> f64 {
        let h = &self.short;
        let Some(from) = h.gate(20.0) else {
            return 0.0;
        };
        let used = h.used_from(from);
        let n: u64 = h.count[used.clone()].iter().sum();
        if n == 0 {
            return 0.0;
        }
        let last = (n - 1) as f64;
        let pick = |q: f64| {
            let target = (last * q + 0.5) as u64;
            let mut seen = 0u64;
            for i in used.clone() {
                seen += h.count[i];
                if seen > target {
                    return ABS_GATE_LUFS + (i as f64 + 0.5) * HIST_STEP;
                }
            }
            HIST_MAX_LUFS
        };
        pick(0.95) - pick(0.1)
    }
}

/// K-weights `x` through the 4th-order filter (`state` carries over between calls) and returns
/// the sum of squares of the output.
#[inline(always)]
fn filter_energy(b: &[f64; 5], a: &[f64; 5], state: &mut [f64; 5], x: &[f32]) -> f64 {
    let [_, mut s1, mut s2, mut s3, mut s4] = *state;
    let mut energy = 0.0;
    for &v in x {
        // The term of the previous output last: the recurrence then waits on one multiply and
        // one subtraction per sample, not on a chain of three subtractions.
        let s0 = (f64::from(v) - a[2] * s2 - (a[3] * s3 + a[4] * s4)) - a[1] * s1;
        let y = (b[0] * s0 + b[1] * s1 + b[2] * s2) + (b[3] * s3 + b[4] * s4);
        energy += y * y;
        s4 = s3;
        s3 = s2;
        s2 = s1;
        s1 = s0;
    }
    // Flush denormals so silence after sound does not slow the filter down.
    for s in [&mut s1, &mut s2, &mut s3, &mut s4] {
        if s.abs() < f64::MIN_POSITIVE {
            *s = 0.0;
        }
    }
    *state = [0.0, s1, s2, s3, s4];
    energy
}

/// [`filter_energy`] for two channels at once, one channel in each lane of SSE2 registers
/// (always present on x86-64): one packed multiply or add does both channels' step. The
/// operations and their order are those of [`filter_energy`], so the result is the same
/// bit for bit as the portable version below.
#[cfg(target_arch = "x86_64")]
// The intrinsics are safe to call from Rust 1.87 on; the block keeps older compilers happy.
#[allow(unused_unsafe)]
#[inline(always)]
fn filter_energy_pair(
    b: &[f64; 5],
    a: &[f64; 5],
    state: [&mut [f64; 5]; 2],
    x: [&[f32]; 2],
) -> (f64, f64) {
    use std::arch::x86_64::{
        __m128d, _mm_add_pd, _mm_cvtsd_f64, _mm_mul_pd, _mm_set1_pd, _mm_set_pd, _mm_setzero_pd,
        _mm_sub_pd, _mm_unpackhi_pd,
    };
    let [sa, sb] = state;
    // SAFETY: SSE2 is part of the x86-64 baseline; no intrinsic here touches memory.
    let (ea, eb, s) = unsafe {
        let k = |v: f64| _mm_set1_pd(v);
        let (a1, a2, a3, a4) = (k(a[1]), k(a[2]), k(a[3]), k(a[4]));
        let (b0, b1, b2, b3, b4) = (k(b[0]), k(b[1]), k(b[2]), k(b[3]), k(b[4]));
        // Channel a in the low lane, channel b in the high one.
        let lanes = |i: usize| _mm_set_pd(sb[i], sa[i]);
        let (mut s1, mut s2, mut s3, mut s4) = (lanes(1), lanes(2), lanes(3), lanes(4));
        let mut e = _mm_setzero_pd();
        for (&va, &vb) in x[0].iter().zip(x[1]) {
            let v = _mm_set_pd(f64::from(vb), f64::from(va));
            let far = _mm_add_pd(_mm_mul_pd(a3, s3), _mm_mul_pd(a4, s4));
            let s0 = _mm_sub_pd(
                _mm_sub_pd(_mm_sub_pd(v, _mm_mul_pd(a2, s2)), far),
                _mm_mul_pd(a1, s1),
            );
            let near = _mm_add_pd(
                _mm_add_pd(_mm_mul_pd(b0, s0), _mm_mul_pd(b1, s1)),
                _mm_mul_pd(b2, s2),
            );
            let y = _mm_add_pd(near, _mm_add_pd(_mm_mul_pd(b3, s3), _mm_mul_pd(b4, s4)));
            e = _mm_add_pd(e, _mm_mul_pd(y, y));
            (s4, s3, s2, s1) = (s3, s2, s1, s0);
        }
        let split = |v: __m128d| (_mm_cvtsd_f64(v), _mm_cvtsd_f64(_mm_unpackhi_pd(v, v)));
        let (ea, eb) = split(e);
        (ea, eb, [split(s1), split(s2), split(s3), split(s4)])
    };
    let flush = |v: f64| if v.abs() < f64::MIN_POSITIVE { 0.0 } else { v };
    *sa = [
        0.0,
        flush(s[0].0),
        flush(s[1].0),
        flush(s[2].0),
        flush(s[3].0),
    ];
    *sb = [
        0.0,
        flush(s[0].1),
        flush(s[1].1),
        flush(s[2].1),
        flush(s[3].1),
    ];
    (ea, eb)
}

/// [`filter_energy`] for two channels at once.
#[cfg(not(target_arch = "x86_64"))]
fn filter_energy_pair(
    b: &[f64; 5],
    a: &[f64; 5],
    state: [&mut [f64; 5]; 2],
    x: [&[f32]; 2],
) -> (f64, f64) {
    let [sa, sb] = state;
    let [_, mut a1, mut a2, mut a3, mut a4] = *sa;
    let [_, mut b1, mut b2, mut b3, mut b4] = *sb;
    let (mut ea, mut eb) = (0.0, 0.0);
    for (&va, &vb) in x[0].iter().zip(x[1]) {
        // As in `filter_energy`: the previous output's term last, off the long chain.
        let a0 = (f64::from(va) - a[2] * a2 - (a[3] * a3 + a[4] * a4)) - a[1] * a1;
        let b0 = (f64::from(vb) - a[2] * b2 - (a[3] * b3 + a[4] * b4)) - a[1] * b1;
        let ya = (b[0] * a0 + b[1] * a1 + b[2] * a2) + (b[3] * a3 + b[4] * a4);
        let yb = (b[0] * b0 + b[1] * b1 + b[2] * b2) + (b[3] * b3 + b[4] * b4);
        ea += ya * ya;
        eb += yb * yb;
        (a4, a3, a2, a1) = (a3, a2, a1, a0);
        (b4, b3, b2, b1) = (b3, b2, b1, b0);
    }
    let flush = |v: f64| if v.abs() < f64::MIN_POSITIVE { 0.0 } else { v };
    *sa = [0.0, flush(a1), flush(a2), flush(a3), flush(a4)];
    *sb = [0.0, flush(b1), flush(b2), flush(b3), flush(b4)];
    (ea, eb)
}

/// BS.1770 channel weights for the default layouts (as libebur128): L, R, C at 1, the LFE
/// (4th of 6) unused, surrounds at 1.41; 4 channels are L R Ls Rs, 5 are L R C Ls Rs; channels
/// past the sixth are unused.
fn channel_weights(channels: usize) -> Vec<f64> {
    match channels {
        4 => vec![1.0, 1.0, 1.41, 1.41],
        5 => vec![1.0, 1.0, 1.0, 1.41, 1.41],
        n => (0..n)
            .map(|c| match c {
                0..=2 => 1.0,
                4 | 5 => 1.41,
                _ => 0.0,
            })
            .collect(),
    }
}

/// The K-weighting pre-filter (high shelf) and RLB high-pass combined into one 4th-order
/// filter, designed for `rate` (coefficients as in BS.1770 and libebur128).
fn k_weighting(rate: f64) -> ([f64; 5], [f64; 5]) {
    let f0 = 1681.974450955533;
    let gain_db = 3.999843853973347;
    let q = 0.7071752369554196;
    let k = (std::f64::consts::PI * f0 / rate).tan();
    let vh = 10f64.powf(gain_db / 20.0);
    let vb = vh.powf(0.4996667741545416);
    let a0 = 1.0 + k / q + k * k;
    let pb = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
    ];
    let pa = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0];

    let f0 = 38.13547087602444;
    let q = 0.5003270373238773;
    let k = (std::f64::consts::PI * f0 / rate).tan();
    let rb = [1.0, -2.0, 1.0];
    let ra = [
        1.0,
        2.0 * (k * k - 1.0) / (1.0 + k / q + k * k),
        (1.0 - k / q + k * k) / (1.0 + k / q + k * k),
    ];
    let conv = |p: [f64; 3], r: [f64; 3]| {
        [
            p[0] * r[0],
            p[0] * r[1] + p[1] * r[0],
            p[0] * r[2] + p[1] * r[1] + p[2] * r[0],
            p[1] * r[2] + p[2] * r[1],
            p[2] * r[2],
        ]
    };
    (conv(pb, rb), conv(pa, ra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebur128::{EbuR128, Mode};

    fn compare(rate: u32, channels: usize, seconds: usize, gen: impl Fn(usize, usize) -> f32) {
        let n = rate as usize * seconds;
        let planes: Vec<Vec<f32>> = (0..channels)
            .map(|c| (0..n).map(|i| gen(c, i)).collect::<Vec<f32>>())
            .collect();
        let mut ours = R128::new(channels, rate);
        let mut theirs = EbuR128::new(channels as u32, rate, Mode::I | Mode::LRA).unwrap();
        for start in (0..n).step_by(1152) {
            let end = (start + 1152).min(n);
            let slices: Vec<&[f32]> = planes.iter().map(|p| &p[start..end]).collect();
            ours.add(&slices);
            theirs.add_frames_planar_f32(&slices).unwrap();
        }
        let i_ref = theirs.loudness_global().unwrap();
        let i_got = ours.integrated().unwrap_or(f64::NEG_INFINITY);
        assert!(
            (i_got - i_ref).abs() < 0.01,
            "{rate}/{channels}: I {i_got} vs {i_ref}"
        );
        let lra_ref = theirs.loudness_range().unwrap();
        let lra_got = ours.range();
        assert!(
            (lra_got - lra_ref).abs() < 0.02,
            "{rate}/{channels}: LRA {lra_got} vs {lra_ref}"
        );
    }

    #[test]
    fn matches_ebur128() {
        // A tone whose level steps through several values (a loudness range) plus quiet noise.
        for (rate, channels) in [(44_100u32, 2usize), (48_000, 1), (96_000, 6), (22_050, 5)] {
            compare(rate, channels, 40, |c, i| {
                let t = i as f32 / rate as f32;
                let level = [0.5f32, 0.05, 0.2, 0.01, 0.3][(t / 8.0) as usize % 5];
                let noise = ((i.wrapping_mul(2_654_435_761) >> 7) % 1000) as f32 / 1000.0 - 0.5;
                level * (std::f32::consts::TAU * (300.0 + 200.0 * c as f32) * t).sin()
                    + 0.01 * noise
            });
        }
    }

    #[test]
    fn silence_has_no_loudness() {
        let mut m = R128::new(2, 44_100);
        let z = vec![0.0f32; 44_100 * 5];
        m.add(&[&z, &z]);
        assert_eq!(m.integrated(), None);
        assert_eq!(m.range(), 0.0);
    }
}

//! Exact 2:1 decimation (44.1 kHz → 22.05 kHz, 48 kHz → 24 kHz) by a half-band FIR filter:
//! every other tap but the centre one is zero, so an output sample costs [`HALF_TAPS`]
//! multiply-adds, on contiguous data after the input is split into its even and odd samples.
//! The filter is centred, so output sample `m` lines up with input sample `2m`; the start is
//! preceded by silence, and [`HalfBand::finish`] flushes the end with silence.

/// Non-zero taps on each side of the centre: the filter is `4 · HALF_TAPS − 1` (95) taps long,
/// flat to 9.8 kHz and down 80 dB from 12.2 kHz at 44.1 kHz in (the band between, around the
/// new Nyquist frequency, is the transition).
pub const HALF_TAPS: usize = 24;
/// Kaiser window shape for about 80 dB of stopband attenuation.
const KAISER_BETA: f64 = 7.86;

pub struct HalfBand {
    /// `taps[q]` weighs the odd-sample pair at distance `2q + 1` from the centre.
    taps: [f32; HALF_TAPS],
    /// Even input samples from index `next` on.
    even: Vec<f32>,
    /// Odd input samples from index `next − HALF_TAPS` on (silence before the start).
    odd: Vec<f32>,
    /// Whether the next input sample has an odd index.
    odd_next: bool,
    out: Vec<f32>,
}

/// Zeroth-order modified Bessel function of the first kind (series; converges fast for the
/// arguments a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl HalfBand {
    pub fn new() -> Self {
        // Windowed ideal half-band low-pass: h(j) = sin(πj/2) / (πj), j odd, over a Kaiser
        // window as long as the filter; scaled so the gain at 0 Hz is exactly 1.
        let len = 4 * HALF_TAPS - 1;
        let half = (len / 2) as f64;
        let mut taps = [0.0f64; HALF_TAPS];
        for (q, t) in taps.iter_mut().enumerate() {
            let j = (2 * q + 1) as f64;
            let ideal = (std::f64::consts::FRAC_PI_2 * j).sin() / (std::f64::consts::PI * j);
            let r = j / half;
            let w = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(KAISER_BETA);
            *t = ideal * w;
        }
        let sum: f64 = taps.iter().sum();
        // Centre tap 0.5, the rest summing to 0.5 on both sides together.
        let scale = 0.25 / sum;
        let mut t32 = [0.0f32; HALF_TAPS];
        for (o, t) in t32.iter_mut().zip(taps) {
            *o = (t * scale) as f32;
        }
        HalfBand {
            taps: t32,
            even: Vec::with_capacity(4096),
            odd: {
                let mut v = Vec::with_capacity(4096);
                v.resize(HALF_TAPS, 0.0);
                v
            },
            odd_next: false,
            out: Vec::with_capacity(4096),
        }
    }

    /// Feeds input samples; `emit` receives the decimated output as it becomes available.
    pub fn push(&mut self, input: &[f32], emit: &mut dyn FnMut(&[f32])) {
        self.split_wide(input);
        self.run(emit);
    }

    crate::simd::wide_method! {
        fn split_wide(&mut self, input: &[f32]) => split / split_avx2
    }

    crate::simd::wide_method! {
        fn filter_wide(&mut self) => filter / filter_avx2
    }

    /// Appends the input's even- and odd-indexed samples to `even` and `odd`.
    #[inline(always)] // Compiled into `split_avx2` too.
    fn split(&mut self, input: &[f32]) {
        let mut rest = input;
        if self.odd_next {
            if let Some((&first, tail)) = rest.split_first() {
                self.odd.push(first);
                rest = tail;
                self.odd_next = false;
            }
        }
        // Even- and odd-indexed samples in one pass over the pairs, written in place (an
        // `extend` over `step_by` is a call the compiler does not inline); a last unpaired
        // sample is even.
        let pairs = rest.chunks_exact(2);
        let (e0, o0) = (self.even.len(), self.odd.len());
        self.even.resize(e0 + pairs.len(), 0.0);
        self.odd.resize(o0 + pairs.len(), 0.0);
        let dst = self.even[e0..].iter_mut().zip(&mut self.odd[o0..]);
        for ((e, o), pair) in dst.zip(pairs.clone()) {
            *e = pair[0];
            *o = pair[1];
        }
        self.even.extend_from_slice(pairs.remainder());
        if !rest.is_empty() {
            self.odd_next = rest.len() % 2 == 1;
        }
    }

    /// Flushes the end: the output holds one sample per even-indexed input sample.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[f32])) {
        // Output `m` needs odd samples up to `m + HALF_TAPS − 1`: pad with silence to there.
        let need = self.even.len() + 2 * HALF_TAPS - 1;
        if self.odd.len() < need {
            self.odd.resize(need, 0.0);
        }
        self.run(emit);
    }

    /// Computes every output sample the buffered input allows, and drops what no later output
    /// needs.
    fn run(&mut self, emit: &mut dyn FnMut(&[f32])) {
        self.filter_wide();
        let ready = self.out.len();
        if ready == 0 {
            return;
        }
        emit(&self.out);
        self.even.drain(..ready);
        self.odd.drain(..ready);
    }

    /// Fills `out` with every output sample the buffered input allows.
    #[inline(always)] // Compiled into `filter_avx2` too.
    fn filter(&mut self) {
        // Output m (relative to `next`) uses even[m] and odd[m .. m + 2·HALF_TAPS].
        let ready = self
            .even
            .len()
            .min((self.odd.len() + 1).saturating_sub(2 * HALF_TAPS));
        self.out.clear();
        if ready == 0 {
            return;
        }
        // Eight outputs at a time, their sums in an array the compiler keeps in vector
        // registers: per tap pair, two contiguous loads of odd samples and a multiply-add per
        // output, in the same order (centre, then tap pairs outwards) for every output.
        self.out.resize(ready, 0.0);
        const LANES: usize = 8;
        let blocks = ready / LANES * LANES;
        for (m, o) in (0..blocks)
            .step_by(LANES)
            .zip(self.out.chunks_exact_mut(LANES))
        {
            let mut acc = [0.0f32; LANES];
            for (a, &e) in acc.iter_mut().zip(&self.even[m..m + LANES]) {
                *a = 0.5 * e;
            }
            for (q, &c) in self.taps.iter().enumerate() {
                // The odd samples at distance 2q + 1 after and before each centre.
                let after = &self.odd[HALF_TAPS + q + m..HALF_TAPS + q + m + LANES];
                let before = &self.odd[HALF_TAPS - 1 - q + m..HALF_TAPS - 1 - q + m + LANES];
                for ((a, &x), &y) in acc.iter_mut().zip(after).zip(before) {
                    *a += c * (x + y);
                }
            }
            o.copy_from_slice(&acc);
        }
        for (m, o) in self.out.iter_mut().enumerate().skip(blocks) {
            let mut a = 0.5 * self.even[m];
            for (q, &c) in self.taps.iter().enumerate() {
                a += c * (self.odd[HALF_TAPS + q + m] + self.odd[HALF_TAPS - 1 - q + m]);
            }
            *o = a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimate(input: &[f32], chunks: &[usize]) -> Vec<f32> {
        let mut h = HalfBand::new();
        let mut out = Vec::new();
        let mut rest = input;
        for &n in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(n.min(rest.len()));
            h.push(now, &mut |s| out.extend_from_slice(s));
            rest = later;
        }
        h.finish(&mut |s| out.extend_from_slice(s));
        out
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input: Vec<f32> = (0..10_001)
            .map(|i| ((i * 7919) % 211) as f32 - 105.0)
            .collect();
        let whole = decimate(&input, &[input.len()]);
        assert_eq!(whole.len(), 5001);
        // Odd and even chunk sizes, an empty chunk, single samples.
        for chunks in [&[1usize][..], &[3, 0, 2], &[1151, 1], &[7, 8, 9], &[4096]] {
            assert_eq!(decimate(&input, chunks), whole, "{chunks:?}");
        }
    }
}

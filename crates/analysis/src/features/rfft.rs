//! The frame engine's real FFT: realfft's algorithm for an even length n (a complex FFT of the
//! n/2 sample pairs, then one pass that turns its output into the real signal's n/2 + 1 bins),
//! with that last pass written as loops over split real and imaginary parts, which the compiler
//! vectorises. realfft's own pass is a scalar loop over pairs of bins from both ends of the
//! spectrum, and it cost about as much as the complex FFT itself.
//!
//! The complex FFT is rustfft's, planned as realfft plans it, and the pass performs realfft's
//! operations in realfft's order (no multiply-add fused), so the spectrum is the same bit for
//! bit (a test compares them).

use realfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// The plan for one length: the complex FFT and realfft's twiddle factors, shared by every
/// frame engine of a thread.
pub(crate) struct RealFft {
    len: usize,
    fft: Arc<dyn Fft<f32>>,
    /// e^(-2πik/n) / 2 for k = 1 .. n/4 (realfft's values: computed in f64, rounded to f32,
    /// halved), real and imaginary parts apart.
    tw_re: Vec<f32>,
    tw_im: Vec<f32>,
}

/// Per-engine buffers of [`RealFft::process`], made by [`RealFft::scratch`].
pub(crate) struct RealFftScratch {
    fft: Vec<Complex<f32>>,
    /// Bins 1 .. n/4 ("left") and n/4 + 1 .. n/2 ("right", their mirrors), real and imaginary
    /// parts apart.
    left_re: Vec<f32>,
    left_im: Vec<f32>,
    right_re: Vec<f32>,
    right_im: Vec<f32>,
}

impl RealFft {
    /// The plan for `len` samples; `len` is a multiple of 4.
    pub(crate) fn new(len: usize) -> RealFft {
        assert!(len >= 4 && len.is_multiple_of(4), "real FFT length {len}");
        let fft = FftPlanner::<f32>::new().plan_fft_forward(len / 2);
        let (tw_re, tw_im) = (1..len / 4)
            .map(|k| {
                let angle = -2f64 * std::f64::consts::PI / len as f64 * k as f64;
                (angle.cos() as f32 * 0.5, angle.sin() as f32 * 0.5)
            })
            .unzip();
        RealFft {
            len,
            fft,
            tw_re,
            tw_im,
        }
    }

    /// Buffers for [`RealFft::process`], allocated once.
    pub(crate) fn scratch(&self) -> RealFftScratch {
        let pairs = self.tw_re.len();
        RealFftScratch {
            fft: vec![Complex::default(); self.fft.get_outofplace_scratch_len()],
            left_re: vec![0.0; pairs],
            left_im: vec![0.0; pairs],
            right_re: vec![0.0; pairs],
            right_im: vec![0.0; pairs],
        }
    }

    /// The `len / 2 + 1` bins of the spectrum of `input` (`len` samples, used as the complex
    /// FFT's input and so overwritten) into `out`.
    #[inline(always)] // Compiled into the frame engine's AVX2 copy, with the loops below.
    pub(crate) fn process(
        &self,
        input: &mut [f32],
        out: &mut [Complex<f32>],
        s: &mut RealFftScratch,
    ) {
        let half = self.len / 2;
        assert!(input.len() == self.len && out.len() == half + 1);
        // The samples as n/2 complex values (re = even sample, im = odd sample).
        // SAFETY: `Complex<f32>` is `repr(C)` {re, im}: two f32, f32's alignment; `input` has
        // an even length, so its values are exactly `half` such pairs, borrowed from it alone.
        let packed = unsafe {
            std::slice::from_raw_parts_mut(input.as_mut_ptr().cast::<Complex<f32>>(), half)
        };
        self.fft
            .process_outofplace_with_scratch(packed, &mut out[..half], &mut s.fft);
        let first = out[0];
        out[0] = Complex::new(first.re + first.im, 0.0);
        out[half] = Complex::new(first.re - first.im, 0.0);

        let m = self.tw_re.len();
        let (left, right) = out[1..half].split_at_mut(m);
        // `right` is bins n/4 ..= n/2 - 1: the centre bin, then the mirrors of `left` (bin
        // n/2 - k mirrors bin k), both kept in bin order so that every loop is a plain forward
        // (or, for the mirrors, reversed) pass the compiler vectorises.
        let (centre, mirrors) = right.split_at_mut(1);
        split(left, &mut s.left_re, &mut s.left_im);
        split(mirrors, &mut s.right_re, &mut s.right_im);
        let tw = self.tw_re.iter().zip(&self.tw_im);
        let lanes = s.left_re.iter_mut().zip(s.left_im.iter_mut());
        let mirror_lanes = s.right_re.iter_mut().zip(s.right_im.iter_mut()).rev();
        for (((lr, li), (rr, ri)), (&twr, &twi)) in lanes.zip(mirror_lanes).zip(tw) {
            let (sum_re, sum_im) = (*lr + *rr, *li + *ri);
            let (diff_re, diff_im) = (*lr - *rr, *li - *ri);
            let half_sum_re = 0.5 * sum_re;
            let half_diff_im = 0.5 * diff_im;
            let twiddled_re = sum_im * twr + diff_re * twi;
            let twiddled_im = sum_im * twi - diff_re * twr;
            *lr = half_sum_re + twiddled_re;
            *li = half_diff_im + twiddled_im;
            *rr = half_sum_re - twiddled_re;
            *ri = twiddled_im - half_diff_im;
        }
        join(&s.left_re, &s.left_im, left);
        join(&s.right_re, &s.right_im, mirrors);
        centre[0].im = -centre[0].im;
    }
}

/// The real and imaginary parts of `bins`, apart.
#[inline(always)]
fn split(bins: &[Complex<f32>], re: &mut [f32], im: &mut [f32]) {
    for ((b, r), i) in bins.iter().zip(re.iter_mut()).zip(im.iter_mut()) {
        *r = b.re;
        *i = b.im;
    }
}

/// `bins` from real and imaginary parts.
#[inline(always)]
fn join(re: &[f32], im: &[f32], bins: &mut [Complex<f32>]) {
    for ((b, &r), &i) in bins.iter_mut().zip(re).zip(im) {
        *b = Complex::new(r, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use realfft::RealFftPlanner;

    /// The spectrum is realfft's, bit for bit, for noise, a tone and an impulse at several
    /// lengths, through one plan and scratch reused.
    #[test]
    fn same_bins_as_realfft() {
        let mut noise = crate::features::test_noise(0x2545_f491_4f6c_dd1d);
        for len in [4usize, 8, 64, 1000, 2048] {
            let ours = RealFft::new(len);
            let mut scratch = ours.scratch();
            let theirs = RealFftPlanner::<f32>::new().plan_fft_forward(len);
            for signal in 0..3 {
                let x: Vec<f32> = (0..len)
                    .map(|i| match signal {
                        0 => 2.0 * noise() - 1.0,
                        1 => (i as f32 * 0.37).sin() * 0.8,
                        _ => f32::from(i == len / 3),
                    })
                    .collect();
                let mut got = vec![Complex::default(); len / 2 + 1];
                ours.process(&mut x.clone(), &mut got, &mut scratch);
                let mut want = theirs.make_output_vec();
                theirs.process(&mut x.clone(), &mut want).unwrap();
                let bits = |v: &[Complex<f32>]| -> Vec<(u32, u32)> {
                    v.iter().map(|c| (c.re.to_bits(), c.im.to_bits())).collect()
                };
                assert_eq!(bits(&got), bits(&want), "length {len}, signal {signal}");
            }
        }
    }
}

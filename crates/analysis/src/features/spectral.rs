//! Per-frame spectral descriptors over a magnitude spectrum: centroid, rolloff, flatness, flux.

use super::fastmath::{fast_ln, split};

/// Share of spectral power below the rolloff frequency.
pub const ROLLOFF_SHARE: f64 = 0.85;

/// Floor added to each power value in the flatness, so silent bins stay finite.
const FLATNESS_EPS: f32 = 1e-12;

/// Sum of `a`, in eight interleaved lanes (a fixed order, so deterministic, and vectorisable).
#[inline(always)]
pub fn lane_sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (x, &v) in acc.iter_mut().zip(c) {
            *x += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Σ k · a[k], in eight interleaved lanes.
#[inline(always)]
fn lane_weighted_sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let base = chunks.len() * 8;
    let rest = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        let k0 = (i * 8) as f32;
        for (j, (x, &v)) in acc.iter_mut().zip(c).enumerate() {
            *x += (k0 + j as f32) * v;
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (j, &v) in rest.iter().enumerate() {
        s += (base + j) as f32 * v;
    }
    s
}

/// Magnitude-weighted mean frequency, Hz, of the magnitude spectrum `mag` (bin `k` at
/// `k · bin_hz`).
#[inline(always)]
pub fn centroid(mag: &[f32], bin_hz: f64) -> f64 {
    let den = lane_sum(mag);
    if den > 0.0 {
        f64::from(lane_weighted_sum(mag)) / f64::from(den) * bin_hz
    } else {
        0.0
    }
}

/// Wiener entropy: geometric over arithmetic mean of the power spectrum (DC excluded), 0 for a
/// pure tone, 1 for white noise.
#[inline(always)]
pub fn flatness(power: &[f32]) -> f64 {
    let bins = power.get(1..).unwrap_or(&[]);
    if bins.is_empty() {
        return 0.0;
    }
    let n = bins.len() as f64;
    let log_mean = ln_sum(bins, FLATNESS_EPS) / n;
    let mean = (f64::from(lane_sum(bins)) + n * f64::from(FLATNESS_EPS)) / n;
    (log_mean.exp() / mean).clamp(0.0, 1.0)
}

/// Σ ln(x[i] + eps) for non-negative `x`, as the logarithm of a product: each value's binary
/// exponent is summed as an integer and its mantissa (in [1, 2)) multiplied in, in eight lanes,
/// with one logarithm per lane for every 32 values. That is a few integer operations and one
/// multiplication per value instead of a logarithm (a division and a polynomial); a product of
/// 32 mantissas stays below 2^39, and its rounding (under 3e-6 relative) moves the sum by about
/// as much as the per-value error of [`fast_ln`] did.
#[inline(always)]
pub fn ln_sum(x: &[f32], eps: f32) -> f64 {
    const LANES: usize = 8;
    const GROUP: usize = LANES * 32;
    let mut total = 0.0f64;
    for group in x.chunks(GROUP) {
        let mut mantissa = [1.0f32; LANES];
        let mut exponent = [0i32; LANES];
        let mut take = |l: usize, v: f32| {
            let (e, m) = split((v + eps).max(f32::MIN_POSITIVE));
            exponent[l] += e;
            mantissa[l] *= m;
        };
        let chunks = group.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (l, &v) in c.iter().enumerate() {
                take(l, v);
            }
        }
        for &v in rest {
            take(0, v);
        }
        for (&e, &m) in exponent.iter().zip(&mantissa) {
            total += f64::from(e) * std::f64::consts::LN_2 + f64::from(fast_ln(m));
        }
    }
    total
}

/// Frequency (Hz) below which [`ROLLOFF_SHARE`] of the power lies; `power_total` is the sum of
/// `power`.
#[inline(always)]
pub fn rolloff(power: &[f32], power_total: f64, bin_hz: f64) -> f64 {
    if power_total <= 0.0 {
        return 0.0;
    }
    let target = ROLLOFF_SHARE * power_total;
    let mut acc = 0.0f64;
    for (k, &p) in power.iter().enumerate() {
        acc += f64::from(p);
        if acc >= target {
            return k as f64 * bin_hz;
        }
    }
    (power.len().saturating_sub(1)) as f64 * bin_hz
}

/// Euclidean norm of the positive part of the change between two unit-norm magnitude spectra
/// (0 … √2).
#[inline(always)]
pub fn flux(norm_now: &[f32], norm_prev: &[f32]) -> f64 {
    lane_sum_f64(norm_now, norm_prev, |a, b| {
        let d = f64::from(a - b).max(0.0);
        d * d
    })
    .sqrt()
}

/// Σ f(a[i], b[i]) over the common length, in f64 and four interleaved lanes: a fixed order, so
/// deterministic, and four independent additions at a time where one chain of dependent f64
/// additions would wait on each one's latency.
#[inline(always)]
pub fn lane_sum_f64(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    for (x, y) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += f(x[l], y[l]);
        }
    }
    let whole = n - n % 4;
    let rest: f64 = a[whole..]
        .iter()
        .zip(&b[whole..])
        .map(|(&x, &y)| f(x, y))
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors() {
        let mut mag = vec![0.0f32; 11];
        mag[4] = 1.0;
        let power: Vec<f32> = mag.iter().map(|m| m * m).collect();
        assert!((centroid(&mag, 10.0) - 40.0).abs() < 1e-6);
        assert!(flatness(&power) < 1e-6);
        assert!((rolloff(&power, 1.0, 10.0) - 40.0).abs() < 1e-9);
        assert!((flatness(&[1.0; 16]) - 1.0).abs() < 1e-5);
        let ramp: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(lane_sum(&ramp), 666.0);
        assert_eq!(lane_weighted_sum(&[1.0; 20]), 190.0);
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        assert!((flux(&a, &b) - 1.0).abs() < 1e-9);
        assert_eq!(flux(&a, &a), 0.0);
        // ln_sum against a plain sum of logarithms, over values across many octaves.
        let values: Vec<f32> = (0..1025).map(|i| 1e-9 * 1.03f32.powi(i % 700)).collect();
        let want: f64 = values.iter().map(|&v| (f64::from(v) + 1e-12).ln()).sum();
        let got = ln_sum(&values, 1e-12);
        assert!((got - want).abs() < 1e-6 * want.abs(), "{got} vs {want}");
    }
}

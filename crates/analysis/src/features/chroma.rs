//! 12-bin chroma (pitch-class energy, A4 = 440 Hz) and key estimation by correlation with the
//! Krumhansl–Kessler key profiles.

use super::fastmath::fast_ln;

/// Lowest and highest frequencies of spectral peaks counted in the chroma, Hz.
pub const CHROMA_MIN_HZ: f64 = 55.0;
pub const CHROMA_MAX_HZ: f64 = 5000.0;

/// Krumhansl–Kessler major and minor profiles, tonic first.
const MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// Pitch-class power of one frame from the spectral peaks of `mag` (bin `k` at `k · bin_hz`)
/// between [`CHROMA_MIN_HZ`] and [`CHROMA_MAX_HZ`]: each local maximum's frequency is refined by
/// parabolic interpolation of the log magnitude, so even low notes, whose semitones are narrower
/// than an FFT bin, land in the right class. The peak's power goes to the nearest pitch class
/// (A4 = 440 Hz). `scratch` holds the range's log magnitudes (plain and floored), computed in
/// vectorisable passes rather than three times per peak.
pub fn peak_chroma(mag: &[f32], power: &[f32], bin_hz: f64, scratch: &mut Vec<f32>) -> [f32; 12] {
    let mut out = [0.0f32; 12];
    let lo = ((CHROMA_MIN_HZ / bin_hz).floor() as usize).max(1);
    let hi = ((CHROMA_MAX_HZ / bin_hz).ceil() as usize).min(mag.len().saturating_sub(2));
    if lo > hi {
        return out;
    }
    let floor = 1e-7f32;
    // Bins lo - 1 ..= hi + 1, bin k at index k - (lo - 1): ln(mag + floor), then ln(mag).
    let range = &mag[lo - 1..=hi + 1];
    scratch.clear();
    scratch.extend(range.iter().map(|&m| fast_ln(m + floor)));
    scratch.extend(range.iter().map(|&m| fast_ln(m)));
    let (ln_floored, ln_plain) = scratch.split_at(range.len());
    // Semitones per natural-log unit of frequency.
    let semitones = 12.0 / std::f64::consts::LN_2;
    for k in lo..=hi {
        let b = mag[k];
        if b <= floor || b <= mag[k - 1] || b < mag[k + 1] {
            continue;
        }
        let i = k - (lo - 1);
        let (la, lb, lc) = (ln_floored[i - 1], ln_plain[i], ln_floored[i + 1]);
        let den = la - 2.0 * lb + lc;
        let delta = if den < 0.0 {
            (0.5 * (la - lc) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        let f = (k as f64 + f64::from(delta)) * bin_hz;
        let midi = 69.0 + semitones * f64::from(fast_ln((f / 440.0) as f32));
        // midi > 0 here (f ≥ CHROMA_MIN_HZ): adding one half and truncating rounds to nearest,
        // without the libm call `round` costs on the baseline x86-64 target.
        let pc = ((midi + 0.5) as usize) % 12;
        out[pc] += power[k];
    }
    out
}

/// Adds one frame's pitch-class power into `chroma`, normalised to sum 1. Returns false when
/// the frame has no energy in the chroma range.
pub fn accumulate(frame: &[f32; 12], chroma: &mut [f64; 12]) -> bool {
    let total: f64 = frame.iter().map(|&v| f64::from(v)).sum();
    if total <= 1e-12 {
        return false;
    }
    for (acc, &v) in chroma.iter_mut().zip(frame) {
        *acc += f64::from(v) / total;
    }
    true
}

/// Estimated key: (tonic pitch class, is_major, strength 0 … 1).
pub fn estimate_key(chroma: &[f32; 12]) -> (u8, bool, f32) {
    let total: f32 = chroma.iter().sum();
    if total <= 0.0 {
        return (0, true, 0.0);
    }
    let mut best = (0u8, true, f64::NEG_INFINITY);
    for tonic in 0..12 {
        for (profile, major) in [(&MAJOR, true), (&MINOR, false)] {
            let r = correlation(chroma, profile, tonic);
            if r > best.2 {
                best = (tonic as u8, major, r);
            }
        }
    }
    (best.0, best.1, best.2.clamp(0.0, 1.0) as f32)
}

/// Pearson correlation of `chroma` with `profile` rotated to `tonic`.
fn correlation(chroma: &[f32; 12], profile: &[f64; 12], tonic: usize) -> f64 {
    let x: Vec<f64> = chroma.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = (0..12).map(|pc| profile[(pc + 12 - tonic) % 12]).collect();
    let mx = x.iter().sum::<f64>() / 12.0;
    let my = y.iter().sum::<f64>() / 12.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(&y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chroma_of(pcs: &[usize]) -> [f32; 12] {
        let mut c = [0.0f32; 12];
        for &p in pcs {
            c[p] = 1.0 / pcs.len() as f32;
        }
        c
    }

    #[test]
    fn triads() {
        assert_eq!(
            estimate_key(&chroma_of(&[0, 4, 7])),
            (0, true, estimate_key(&chroma_of(&[0, 4, 7])).2)
        );
        let (k, major, s) = estimate_key(&chroma_of(&[9, 0, 4]));
        assert_eq!((k, major), (9, false));
        assert!(s > 0.5);
        assert_eq!(estimate_key(&[0.0; 12]), (0, true, 0.0));
    }

    #[test]
    fn low_and_high_peaks_land_in_their_class() {
        let bin_hz = 22_050.0 / 2048.0;
        // A Hann-windowed sine's main lobe, sampled at the bins around `f`.
        for (f, pc) in [
            (110.0f64, 9usize),
            (116.54, 10),
            (65.41, 0),
            (440.0, 9),
            (3951.07, 11),
        ] {
            let mut mag = vec![0.0f32; 1025];
            let centre = f / bin_hz;
            for (k, m) in mag.iter_mut().enumerate() {
                let d = k as f64 - centre;
                if d.abs() < 2.0 {
                    *m = (0.5 + 0.5 * (std::f64::consts::PI * d / 2.0).cos()) as f32;
                }
            }
            let power: Vec<f32> = mag.iter().map(|m| m * m).collect();
            let c = peak_chroma(&mag, &power, bin_hz, &mut Vec::new());
            let best = (0..12).fold(0, |b, i| if c[i] > c[b] { i } else { b });
            assert_eq!(best, pc, "{f} Hz: {c:?}");
        }
    }
}

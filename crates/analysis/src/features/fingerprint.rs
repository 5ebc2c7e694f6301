//! The `trackmill-dsp-v1` fingerprint: a compact vector built from the feature record and the
//! spectral shape, each part scaled by fixed constants to comparable spread, then normalised to
//! unit length so that cosine (or Euclidean) distance compares tracks.

use super::extractor::BANDS;
use trackmill_types::Features;

/// Model name stored with the vector.
pub const FINGERPRINT_MODEL: &str = "trackmill-dsp-v1";
/// Length of the vector.
pub const FINGERPRINT_DIMS: usize = 12 + BANDS + 10;

/// Builds the fingerprint. Layout (before the final unit-length normalisation):
/// - 0..12: chroma, `(c − 1/12) · 4` (0 for a flat chroma);
/// - 12..28: spectral shape, band log10 power minus its mean, `· 0.5`;
/// - 28: `log2(centroid mean / 1500 Hz)`, 29: `log2((centroid std + 1) / 800 Hz)`;
/// - 30: `log2(rolloff mean / 3000 Hz)`, 31: `(flatness mean − 0.2) · 4`;
/// - 32: `(flux mean − 0.3) · 3`, 33: `log2(zcr mean / 0.05)` (zcr floored at 1e-4);
/// - 34: tempo, `log2(bpm / 120)` (0 without a pulse), 35: `log2((onset rate + 0.5) / 3)`;
/// - 36: `(loudness range − 8 LU) / 6`, 37: `silence ratio · 2`.
pub fn fingerprint(f: &Features, bands: &[f32; BANDS]) -> Vec<f32> {
    let mut v: Vec<f64> = Vec::with_capacity(FINGERPRINT_DIMS);
    for &c in &f.chroma {
        v.push((f64::from(c) - 1.0 / 12.0) * 4.0);
    }
    for &b in bands {
        v.push(f64::from(b) * 0.5);
    }
    let lg = |x: f64, floor: f64, scale: f64| (x.max(floor) / scale).log2();
    v.push(lg(f64::from(f.spectral_centroid_hz.mean), 1.0, 1500.0));
    v.push(lg(f64::from(f.spectral_centroid_hz.std) + 1.0, 1.0, 800.0));
    v.push(lg(f64::from(f.spectral_rolloff_hz.mean), 1.0, 3000.0));
    v.push((f64::from(f.spectral_flatness.mean) - 0.2) * 4.0);
    v.push((f64::from(f.spectral_flux.mean) - 0.3) * 3.0);
    v.push(lg(f64::from(f.zero_crossing_rate.mean), 1e-4, 0.05));
    v.push(if f.bpm > 0.0 {
        (f64::from(f.bpm) / 120.0).log2()
    } else {
        0.0
    });
    v.push(((f64::from(f.onset_rate) + 0.5) / 3.0).log2());
    v.push((f64::from(f.loudness_range_lu) - 8.0) / 6.0);
    v.push(f64::from(f.silence_ratio) * 2.0);
    debug_assert_eq!(v.len(), FINGERPRINT_DIMS);
    for x in v.iter_mut() {
        if !x.is_finite() {
            *x = 0.0;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| (x / norm) as f32).collect()
    } else {
        v.iter().map(|&x| x as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_length_and_finite() {
        let v = fingerprint(&Features::default(), &[0.0; BANDS]);
        assert_eq!(v.len(), FINGERPRINT_DIMS);
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
        assert!(v.iter().all(|x| x.is_finite()));
    }
}

//! Key refinement: blends the DSP chroma with a model's pitch-class profile and re-runs the
//! Krumhansl–Kessler key-profile correlation on the blend.

use trackmill_types::{CleanText, Features};

const MAJOR: [f32; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const MINOR: [f32; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// Weight of the model profile in the blend (the DSP chroma gets the rest).
const MODEL_WEIGHT: f32 = 0.5;

fn unit_sum(v: &[f32; 12]) -> Option<[f32; 12]> {
    let s: f32 = v.iter().filter(|x| x.is_finite() && **x > 0.0).sum();
    (s > 0.0).then(|| v.map(|x| if x.is_finite() && x > 0.0 { x / s } else { 0.0 }))
}

fn correlation(a: &[f32; 12], b: &[f32; 12]) -> f32 {
    let ma = a.iter().sum::<f32>() / 12.0;
    let mb = b.iter().sum::<f32>() / 12.0;
    let (mut num, mut da, mut db) = (0f32, 0f32, 0f32);
    for i in 0..12 {
        num += (a[i] - ma) * (b[i] - mb);
        da += (a[i] - ma).powi(2);
        db += (b[i] - mb).powi(2);
    }
    if da > 0.0 && db > 0.0 {
        num / (da * db).sqrt()
    } else {
        0.0
    }
}

/// Refines `features.key`, `mode` and `key_strength` with a model's pitch-class profile
/// (C first). A silent or empty profile leaves the features as they are.
pub fn refine_key(features: &mut Features, pitch_class_profile: &[f32; 12]) {
    let Some(model) = unit_sum(pitch_class_profile) else {
        return;
    };
    let blend = match unit_sum(&features.chroma) {
        Some(c) => std::array::from_fn(|i| (1.0 - MODEL_WEIGHT) * c[i] + MODEL_WEIGHT * model[i]),
        None => model,
    };
    let mut best = (0usize, true, f32::NEG_INFINITY);
    for tonic in 0..12 {
        for (major, profile) in [(true, &MAJOR), (false, &MINOR)] {
            let rotated: [f32; 12] = std::array::from_fn(|i| profile[(i + 12 - tonic) % 12]);
            let r = correlation(&blend, &rotated);
            if r > best.2 {
                best = (tonic, major, r);
            }
        }
    }
    features.key = best.0 as u8;
    features.mode = CleanText::new(if best.1 { "major" } else { "minor" });
    features.key_strength = best.2.clamp(0.0, 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_profile_decides_an_ambiguous_chroma() {
        let mut f = Features {
            chroma: [1.0 / 12.0; 12],
            ..Features::default()
        };
        // G major scale weighted on G, B, D.
        let mut p = [0.0f32; 12];
        for (pc, w) in [
            (7, 3.0),
            (11, 2.0),
            (2, 2.5),
            (9, 1.0),
            (0, 1.0),
            (4, 1.0),
            (6, 1.0),
        ] {
            p[pc] = w;
        }
        refine_key(&mut f, &p);
        assert_eq!(f.key, 7);
        assert_eq!(f.mode.as_str(), "major");
        assert!(f.key_strength > 0.5);
    }

    #[test]
    fn an_empty_profile_changes_nothing() {
        let mut f = Features {
            key: 3,
            ..Features::default()
        };
        refine_key(&mut f, &[0.0; 12]);
        assert_eq!(f.key, 3);
    }
}

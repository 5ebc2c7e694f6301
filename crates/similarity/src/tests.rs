//! Properties of the whole vector: near-duplicates (one piece in several encodings) find each
//! other first; tempo octaves and relative keys are close; weights do what they say.

use crate::*;
use rand::{Rng, SeedableRng};
use trackmill_types::analysis::{Embedding, Features, Stat, TrackAnalysis};
use trackmill_types::CleanText;

fn stat(rng: &mut impl Rng, lo: f32, hi: f32) -> Stat {
    Stat {
        mean: rng.random_range(lo..hi),
        std: rng.random_range(lo..hi) * 0.3,
    }
}

/// A random but plausible record.
fn piece(rng: &mut impl Rng) -> TrackAnalysis {
    let mut chroma = [0.0f32; 12];
    for c in &mut chroma {
        *c = rng.random_range(0.0..1.0f32).powi(3);
    }
    let s: f32 = chroma.iter().sum();
    chroma.iter_mut().for_each(|c| *c /= s);
    let mut fp: Vec<f32> = (0..38).map(|_| rng.random_range(-1.0..1.0)).collect();
    let n = fp.iter().map(|x| x * x).sum::<f32>().sqrt();
    fp.iter_mut().for_each(|x| *x /= n);
    let features = Features {
        integrated_lufs: rng.random_range(-30.0..-6.0),
        loudness_range_lu: rng.random_range(1.0..20.0),
        bpm: rng.random_range(60.0..180.0),
        onset_rate: rng.random_range(0.2..8.0),
        spectral_centroid_hz: stat(rng, 400.0, 4000.0),
        spectral_rolloff_hz: stat(rng, 800.0, 9000.0),
        spectral_flatness: stat(rng, 0.01, 0.5),
        spectral_flux: stat(rng, 0.05, 0.8),
        zero_crossing_rate: stat(rng, 0.01, 0.2),
        chroma,
        key: rng.random_range(0..12),
        mode: CleanText::new(if rng.random_bool(0.5) {
            "major"
        } else {
            "minor"
        }),
        key_strength: rng.random_range(0.3..0.9),
        silence_ratio: rng.random_range(0.0..0.2),
        ..Features::default()
    };
    TrackAnalysis {
        features: Some(features),
        embeddings: vec![Embedding {
            model: CleanText::new("trackmill-dsp-v1"),
            values: fp,
        }],
        ..TrackAnalysis::default()
    }
}

/// The same piece through another codec: every value moved within the tolerances the analysis
/// holds across formats (crates/analysis/FEATURES.md: tempo ±1 BPM, centroid ±5 %, rolloff and
/// onset rate ±10 %, chroma L1 < 0.05, equal key).
fn encoding(rng: &mut impl Rng, a: &TrackAnalysis) -> TrackAnalysis {
    let mut b = a.clone();
    let f = b.features.as_mut().unwrap();
    let mut jit = |x: &mut f32, rel: f32| *x *= 1.0 + rng.random_range(-rel..rel);
    jit(&mut f.bpm, 0.005);
    jit(&mut f.spectral_centroid_hz.mean, 0.03);
    jit(&mut f.spectral_centroid_hz.std, 0.05);
    jit(&mut f.spectral_rolloff_hz.mean, 0.06);
    jit(&mut f.onset_rate, 0.06);
    jit(&mut f.spectral_flatness.mean, 0.05);
    jit(&mut f.spectral_flux.mean, 0.05);
    jit(&mut f.zero_crossing_rate.mean, 0.03);
    jit(&mut f.loudness_range_lu, 0.05);
    for c in &mut f.chroma {
        jit(c, 0.1);
    }
    let s: f32 = f.chroma.iter().sum();
    f.chroma.iter_mut().for_each(|c| *c /= s);
    for v in &mut b.embeddings[0].values {
        *v += rng.random_range(-0.01..0.01);
    }
    b
}

fn vectors(space: &Space, recs: &[TrackAnalysis]) -> Vec<Vec<f32>> {
    let ds: Vec<Descriptor> = recs.iter().map(|r| space.describe(r).unwrap()).collect();
    let mut stats = LibraryStats::default();
    for d in &ds {
        stats.push(&d.raw);
    }
    ds.iter().map(|d| space.vector(d, &stats)).collect()
}

#[test]
fn the_encodings_of_a_piece_are_each_others_nearest() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let space = Space::default();
    let mut recs = Vec::new();
    for _ in 0..200 {
        let p = piece(&mut rng);
        for _ in 0..4 {
            recs.push(encoding(&mut rng, &p));
        }
    }
    let vs = vectors(&space, &recs);
    assert_eq!(vs[0].len(), space.dims());
    for (i, v) in vs.iter().enumerate() {
        let mut top = TopK::new(3, None);
        for (j, w) in vs.iter().enumerate() {
            if i != j {
                top.push(distance(v, w), j as i64, None, ());
            }
        }
        for h in top.into_sorted() {
            assert_eq!(
                h.id as usize / 4,
                i / 4,
                "track {i}: neighbour {} from another piece",
                h.id
            );
        }
    }
}

/// Distance between a record and a copy edited by `edit`, in a library of 50 random records.
fn pair(edit: impl Fn(&mut Features)) -> f32 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut recs: Vec<TrackAnalysis> = (0..50).map(|_| piece(&mut rng)).collect();
    recs[0].features.as_mut().unwrap().bpm = 70.0;
    let mut b = recs[0].clone();
    edit(b.features.as_mut().unwrap());
    recs.push(b);
    let vs = vectors(&Space::default(), &recs);
    distance(&vs[0], &vs[50])
}

fn set_key(f: &mut Features, key: u8, mode: &str) {
    f.key = key;
    f.mode = CleanText::new(mode);
}

#[test]
fn tempo_octaves_are_close() {
    let base = pair(|_| {});
    assert!(base < 1e-6, "identical records are at distance 0: {base}");
    let octave = pair(|f| f.bpm *= 2.0);
    let half = pair(|f| f.bpm /= 2.0);
    let off = pair(|f| f.bpm *= 1.41);
    assert!(octave < 1e-3 && half < 1e-3, "{octave} {half}");
    assert!(off > 0.9, "a tritone of tempo is the farthest: {off}");
}

#[test]
fn relative_and_fifth_keys_are_closer_than_distant_ones() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let base = piece(&mut rng);
    let with = |key: u8, mode: &str| {
        let mut r = base.clone();
        set_key(r.features.as_mut().unwrap(), key, mode);
        r
    };
    let recs = vec![
        with(0, "major"),
        with(9, "minor"),
        with(7, "major"),
        with(1, "major"),
        with(6, "major"),
    ];
    let vs = vectors(&Space::default(), &recs);
    let d = |i: usize| distance(&vs[0], &vs[i]);
    assert!(
        d(1) < d(2),
        "relative minor closer than a fifth: {} {}",
        d(1),
        d(2)
    );
    assert!(
        d(2) < d(3),
        "a fifth closer than a semitone: {} {}",
        d(2),
        d(3)
    );
    assert!(d(3) < d(4), "the tritone is farthest");
}

#[test]
fn weights_scale_their_group_and_zero_removes_it() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let recs: Vec<TrackAnalysis> = (0..40).map(|_| piece(&mut rng)).collect();
    let only = |timbre, chroma, tempo, key| Space {
        weights: Weights {
            timbre,
            chroma,
            tempo,
            key,
            mode: 0.0,
            loudness_range: 0.0,
        },
        embeddings: Vec::new(),
    };
    let d2 = |s: &Space| {
        let vs = vectors(s, &recs);
        sq_distance(&vs[0], &vs[1])
    };
    let parts = [
        d2(&only(1.0, 0.0, 0.0, 0.0)),
        d2(&only(0.0, 1.0, 0.0, 0.0)),
        d2(&only(0.0, 0.0, 1.0, 0.0)),
        d2(&only(0.0, 0.0, 0.0, 1.0)),
    ];
    let all = d2(&only(1.0, 1.0, 1.0, 1.0));
    assert!(
        (all - parts.iter().sum::<f32>()).abs() < 1e-4,
        "groups add up"
    );
    let doubled = d2(&only(2.0, 0.0, 0.0, 0.0));
    assert!(
        (doubled - 2.0 * parts[0]).abs() < 1e-4,
        "weight multiplies the squared distance"
    );
    assert_eq!(d2(&only(0.0, 0.0, 0.0, 0.0)), 0.0);
}

#[test]
fn model_inputs_are_used_when_stored_and_absent_otherwise() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut a = piece(&mut rng);
    let notes: Vec<f32> = (0..88).map(|i| (i % 7) as f32).collect();
    a.embeddings.push(Embedding {
        model: CleanText::new("basic-pitch/notes88"),
        values: notes,
    });
    let mut pc = vec![0.0f32; 12];
    pc[0] = 1.0;
    a.embeddings.push(Embedding {
        model: CleanText::new("basic-pitch/pitch-class12"),
        values: pc,
    });
    let space = Space::default();
    let d = space.describe(&a).unwrap();
    let e = d.embeddings[0].as_ref().unwrap();
    assert!(
        (e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5,
        "unit length"
    );
    let dsp_c = a.features.as_ref().unwrap().chroma[0];
    assert!(
        (d.chroma[0] - 0.5 * (dsp_c + 1.0)).abs() < 1e-6,
        "chroma blended with the profile"
    );
    assert!((d.chroma.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // A stored vector of the wrong size, or none, is absent.
    a.embeddings[2].values.truncate(5);
    a.embeddings.remove(1);
    let d = space.describe(&a).unwrap();
    assert!(d.embeddings[0].is_none());
    assert_eq!(d.chroma, a.features.as_ref().unwrap().chroma);
    let v = space.vector(&d, &LibraryStats::default());
    assert_eq!(v.len(), space.dims());
    assert!(v.iter().all(|x| x.is_finite()));
    // No features, no vector.
    assert!(space.describe(&TrackAnalysis::default()).is_none());
}

#[test]
fn hostile_values_give_finite_vectors() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut a = piece(&mut rng);
    {
        let f = a.features.as_mut().unwrap();
        f.bpm = f32::NAN;
        f.spectral_centroid_hz.mean = f32::INFINITY;
        f.onset_rate = -3.0;
        f.chroma = [f32::NAN; 12];
        f.key = 200;
        f.mode = CleanText::new("lydian");
    }
    a.embeddings[0].values[13] = f32::NAN;
    let space = Space::default();
    let recs = vec![a, piece(&mut rng), piece(&mut rng)];
    for v in vectors(&space, &recs) {
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    }
}

#[test]
fn group_keys_fold_case_and_space() {
    assert_eq!(group_key("  The  Beatles "), Some("the beatles".into()));
    assert_eq!(group_key(" \t"), None);
}

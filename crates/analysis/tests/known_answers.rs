//! Known answers on generated signals: pitch and key, tempo of click tracks, the EBU R128
//! reference level, silence.

mod common;
use common::*;

#[test]
fn sine_a440_gives_chroma_a_and_key_a() {
    let dir = tempdir();
    let p = render(
        dir.path(),
        "a.wav",
        "sine=frequency=440:duration=8:sample_rate=44100",
        &[],
    );
    let a = analyze(&p);
    let f = features(&a);
    assert_eq!(argmax(&f.chroma), 9, "chroma {:?}", f.chroma);
    assert!(f.chroma[9] > 0.9, "chroma {:?}", f.chroma);
    assert_eq!(f.key, 9);
    assert_eq!(f.bpm, 0.0, "a steady tone has no pulse");
    assert!(
        (f.spectral_centroid_hz.mean - 440.0).abs() < 30.0,
        "{:?}",
        f.spectral_centroid_hz
    );
    assert!(f.spectral_flatness.mean < 0.01);
    // 440 Hz at 22,050 Hz: about 2 · 440 / 22050 crossings per sample.
    assert!(
        (f.zero_crossing_rate.mean - 0.0399).abs() < 0.002,
        "{:?}",
        f.zero_crossing_rate
    );
    assert!(f.silence_ratio < 0.01);
}

#[test]
fn triads_give_their_keys() {
    let dir = tempdir();
    let chord = |name: &str, hz: [f64; 3]| {
        let src = format!(
            "aevalsrc='0.2*sin(2*PI*{}*t)+0.2*sin(2*PI*{}*t)+0.2*sin(2*PI*{}*t)':s=22050:d=6",
            hz[0], hz[1], hz[2]
        );
        let p = render(dir.path(), name, &src, &[]);
        let a = analyze(&p);
        let f = features(&a).clone();
        (f.key, f.mode.as_str().to_string())
    };
    assert_eq!(
        chord("cmaj.wav", [261.63, 329.63, 392.0]),
        (0, "major".into())
    );
    assert_eq!(
        chord("amin.wav", [220.0, 261.63, 329.63]),
        (9, "minor".into())
    );
    assert_eq!(
        chord("gmaj.wav", [196.0, 246.94, 293.66]),
        (7, "major".into())
    );
}

#[test]
fn click_tracks_give_their_tempo() {
    let dir = tempdir();
    for bpm in [90.0, 120.0, 140.0] {
        let p = render(
            dir.path(),
            &format!("click{bpm}.flac"),
            &click_track(bpm, 30),
            &[],
        );
        let a = analyze(&p);
        let f = features(&a);
        assert!(
            (f64::from(f.bpm) - bpm).abs() <= 1.0,
            "{bpm}: got {}",
            f.bpm
        );
        let rate = bpm / 60.0;
        assert!(
            (f64::from(f.onset_rate) - rate).abs() < 0.1 * rate,
            "{bpm}: onset rate {}",
            f.onset_rate
        );
    }
}

#[test]
fn accented_click_tracks_from_60_to_180_bpm() {
    // Every 8 BPM from 60 to 180, and the fast end densely: a steady pulse correlates as well at
    // twice its period, so the fast tempi are the ones that risk reading at half time.
    let dir = tempdir();
    let mut tempi: Vec<f64> = (0..=15).map(|i| 60.0 + 8.0 * f64::from(i)).collect();
    tempi.extend([170.0, 174.0, 176.0, 178.0]);
    let mut wrong = Vec::new();
    for bpm in tempi {
        let p = render(
            dir.path(),
            &format!("accent{bpm}.wav"),
            &accented_click_track(bpm, 30),
            &[],
        );
        let got = f64::from(features(&analyze(&p)).bpm);
        if (got - bpm).abs() > 1.0 {
            wrong.push((bpm, got));
        }
    }
    assert!(wrong.is_empty(), "(tempo, read as): {wrong:?}");
}

#[test]
fn ebu_reference_level_reads_minus_23_lufs() {
    // EBU Tech 3341 case 1: stereo 1 kHz sine at -23 dBFS per channel reads -23.0 LUFS.
    let dir = tempdir();
    let amp = 10f64.powf(-23.0 / 20.0);
    let src = format!("aevalsrc='{amp}*sin(2*PI*1000*t)|{amp}*sin(2*PI*1000*t)':s=48000:d=20");
    let p = render(dir.path(), "ref.wav", &src, &["-c:a", "pcm_f32le"]);
    let a = analyze(&p);
    let f = features(&a);
    assert!(
        (f.integrated_lufs + 23.0).abs() <= 0.1,
        "{}",
        f.integrated_lufs
    );
    assert!((f.replaygain_track_gain_db - 5.0).abs() <= 0.1);
    assert!((f.replaygain_track_peak - amp as f32).abs() < 1e-3);
    assert!(
        (f.true_peak_dbtp + 23.0).abs() < 0.2,
        "{}",
        f.true_peak_dbtp
    );
    assert!(f.loudness_range_lu < 0.5);
}

#[test]
fn silence_has_ratio_one() {
    let dir = tempdir();
    let p = render(
        dir.path(),
        "silence.wav",
        "anullsrc=r=44100:cl=stereo",
        &["-t", "6"],
    );
    let a = analyze(&p);
    let f = features(&a);
    assert_eq!(f.silence_ratio, 1.0);
    assert_eq!(f.bpm, 0.0);
    assert_eq!(f.onset_rate, 0.0);
    assert_eq!(
        f.integrated_lufs,
        trackmill_analysis::LOUDNESS_FLOOR_LUFS as f32
    );
    assert!(!a.analysis.partial);
    assert!((a.analysis.audio.decoded_s - 6.0).abs() < 0.01);
    let v = &a.analysis.embeddings[0].values;
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn half_silent_track_has_ratio_one_half() {
    let dir = tempdir();
    let src = "aevalsrc='0.5*sin(2*PI*440*t)*lt(t\\,5)':s=44100:d=10";
    let p = render(dir.path(), "half.wav", src, &[]);
    let f = features(&analyze(&p)).clone();
    assert!((f.silence_ratio - 0.5).abs() < 0.01, "{}", f.silence_ratio);
}

#[test]
fn bass_notes_land_in_their_pitch_class() {
    let dir = tempdir();
    for (hz, pc) in [(110.0, 9usize), (65.41, 0), (98.0, 7)] {
        let src = format!("sine=frequency={hz}:duration=4:sample_rate=44100");
        let p = render(dir.path(), &format!("bass{hz}.wav"), &src, &[]);
        let a = analyze(&p);
        let f = features(&a);
        assert_eq!(argmax(&f.chroma), pc, "{hz} Hz: {:?}", f.chroma);
    }
}

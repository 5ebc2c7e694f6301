//! Every supported format decodes, is detected from content, and gives the same features as
//! the lossless source within the tolerances documented in FEATURES.md.

mod common;
use common::*;
use trackmill_analysis::{analyze_file_with, MonoSink, Options};

/// (file name, ffmpeg output arguments, expected container, expected codec, lossy)
const FORMATS: &[(&str, &[&str], &str, &str, bool)] = &[
    ("s.wav", &["-c:a", "pcm_s16le"], "wav", "pcm", false),
    ("s.aiff", &["-c:a", "pcm_s24be"], "aiff", "pcm", false),
    ("s.flac", &["-c:a", "flac"], "flac", "flac", false),
    ("s.m4a", &["-c:a", "alac"], "mp4", "alac", false),
    (
        "s.mp3",
        &["-c:a", "libmp3lame", "-b:a", "192k"],
        "mp3",
        "mp3",
        true,
    ),
    (
        "s.ogg",
        &["-c:a", "libvorbis", "-q:a", "6"],
        "ogg",
        "vorbis",
        true,
    ),
    (
        "s.opus",
        &["-c:a", "libopus", "-b:a", "160k"],
        "ogg",
        "opus",
        true,
    ),
    (
        "aac.m4a",
        &["-c:a", "aac", "-b:a", "192k"],
        "mp4",
        "aac",
        true,
    ),
];

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn all_formats_decode_and_agree() {
    let dir = tempdir();
    let src = render(dir.path(), "source.wav", &music(12), &["-c:a", "pcm_s16le"]);
    let reference = analyze(&src);
    let rf = features(&reference).clone();
    assert!(
        (f64::from(rf.bpm) - 120.0).abs() <= 1.0,
        "reference bpm {}",
        rf.bpm
    );
    assert_eq!((rf.key, rf.mode.as_str()), (0, "major"));

    for (name, args, container, codec, lossy) in FORMATS {
        let p = encode(&src, dir.path(), name, args);
        let a = analyze(&p);
        let au = &a.analysis.audio;
        assert_eq!(au.container.as_str(), *container, "{name}");
        assert_eq!(au.codec.as_str(), *codec, "{name}");
        assert_eq!(au.channels, 2, "{name}");
        assert!(!a.analysis.partial, "{name}: {:?}", a.analysis.notes);
        assert!(
            (au.decoded_s - 12.0).abs() < 0.1,
            "{name}: decoded {}",
            au.decoded_s
        );
        let f = features(&a);
        let (lu, tp) = if *lossy { (0.3, 1.0) } else { (0.02, 0.05) };
        assert!(
            (f.integrated_lufs - rf.integrated_lufs).abs() <= lu,
            "{name}: {} vs {}",
            f.integrated_lufs,
            rf.integrated_lufs
        );
        assert!(
            (f.true_peak_dbtp - rf.true_peak_dbtp).abs() <= tp,
            "{name}: tp {}",
            f.true_peak_dbtp
        );
        assert!((f.bpm - rf.bpm).abs() <= 1.0, "{name}: bpm {}", f.bpm);
        assert_eq!(
            (f.key, f.mode.as_str()),
            (rf.key, rf.mode.as_str()),
            "{name}"
        );
        let chroma_l1: f32 = f
            .chroma
            .iter()
            .zip(&rf.chroma)
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(chroma_l1 < 0.05, "{name}: chroma L1 {chroma_l1}");
        let rel = |x: f32, y: f32| (x - y).abs() / y.abs().max(1e-6);
        assert!(
            rel(f.spectral_centroid_hz.mean, rf.spectral_centroid_hz.mean) < 0.05,
            "{name}: centroid"
        );
        assert!(
            rel(f.spectral_rolloff_hz.mean, rf.spectral_rolloff_hz.mean) < 0.1,
            "{name}: rolloff"
        );
        assert!((f.silence_ratio - rf.silence_ratio).abs() < 0.02, "{name}");
        assert!(
            rel(f.onset_rate, rf.onset_rate) < 0.1,
            "{name}: onsets {} vs {}",
            f.onset_rate,
            rf.onset_rate
        );
        let cos = cosine(
            &a.analysis.embeddings[0].values,
            &reference.analysis.embeddings[0].values,
        );
        assert!(cos > 0.98, "{name}: fingerprint cosine {cos}");
    }
}

#[test]
fn format_comes_from_content_not_extension() {
    let dir = tempdir();
    let mp3 = render(dir.path(), "x.mp3", "sine=frequency=440:duration=3", &[]);
    let lying = dir.path().join("really_mp3.flac");
    std::fs::copy(&mp3, &lying).unwrap();
    let no_ext = dir.path().join("noext");
    std::fs::copy(&mp3, &no_ext).unwrap();
    for p in [lying, no_ext] {
        let a = analyze(&p);
        assert_eq!(a.analysis.audio.container.as_str(), "mp3");
    }
}

#[test]
fn same_file_gives_identical_output() {
    let dir = tempdir();
    let src = render(dir.path(), "d.ogg", &music(6), &["-c:a", "libvorbis"]);
    let a = analyze(&src).analysis;
    let b = analyze(&src).analysis;
    assert_eq!(a, b);
    let bits = |t: &trackmill_types::TrackAnalysis| -> Vec<u32> {
        t.embeddings[0].values.iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&a), bits(&b));
}

#[derive(Default)]
struct Collect {
    begins: u32,
    hint: Option<f64>,
    samples: usize,
    before_begin: bool,
}

impl MonoSink for Collect {
    fn begin(&mut self, duration_hint_s: Option<f64>) {
        self.begins += 1;
        self.hint = duration_hint_s;
    }
    fn accept(&mut self, samples: &[f32]) {
        if self.begins == 0 {
            self.before_begin = true;
        }
        self.samples += samples.len();
    }
}

#[test]
fn sink_receives_the_mono_stream() {
    let dir = tempdir();
    let p = render(
        dir.path(),
        "s.flac",
        "sine=frequency=440:duration=5:sample_rate=48000",
        &[],
    );
    let mut sink = Collect::default();
    let a = analyze_file_with(&p, &Options::default(), &mut sink).unwrap();
    assert_eq!(sink.begins, 1);
    assert!(!sink.before_begin);
    assert!((sink.hint.unwrap() - 5.0).abs() < 0.01);
    assert_eq!(sink.samples, 5 * 22_050);
    assert!(a.stages.decode_us > 0 && a.stages.probe_us > 0);
}

#[test]
fn high_resolution_multichannel_flac() {
    let dir = tempdir();
    let p = render(
        dir.path(),
        "hr.flac",
        "sine=frequency=1000:duration=3:sample_rate=192000",
        &[
            "-ac",
            "6",
            "-sample_fmt",
            "s32",
            "-bits_per_raw_sample",
            "24",
        ],
    );
    let a = analyze(&p);
    assert_eq!(a.analysis.audio.sample_rate, 192_000);
    assert_eq!(a.analysis.audio.channels, 6);
    assert_eq!(a.analysis.audio.bits_per_sample, Some(24));
    assert!((a.analysis.audio.decoded_s - 3.0).abs() < 0.01);
}

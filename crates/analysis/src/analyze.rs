//! `analyze_file`: open, tags, probe, streaming decode with features, and the record, with
//! every stage timed and every panic caught and classified.

use crate::decode::{decode, Decoded};
use crate::error::AnalysisError;
use crate::features::{estimate_key, fingerprint, FrameAnalyzer, FrameSummary, FINGERPRINT_MODEL};
use crate::open::{open, open_input, Opened};
use crate::options::{MonoSink, NullSink, Options};
use crate::tags::{read_tags_from, TagRead};
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};
use trackmill_types::panic_message;
use trackmill_types::{
    AudioProps, CleanText, Embedding, Features, Stage, StageTimes, TrackAnalysis, ANALYZER_VERSION,
};

/// A successful analysis and the time each stage took.
#[derive(Clone, Debug, PartialEq)]
pub struct Analyzed {
    pub analysis: TrackAnalysis,
    pub stages: StageTimes,
}

/// Analyses one file. See the crate documentation for what is measured.
pub fn analyze_file(path: &Path, opts: &Options) -> Result<Analyzed, AnalysisError> {
    analyze_file_with(path, opts, &mut NullSink)
}

/// Analyses one file, handing the mono analysis-rate stream to `sink` as it decodes.
pub fn analyze_file_with(
    path: &Path,
    opts: &Options,
    sink: &mut dyn MonoSink,
) -> Result<Analyzed, AnalysisError> {
    let (file, file_len) = open_input(path, true)?;
    analyze_open_with(file, file_len, opts, sink)
}

/// Analyses a file opened with [`crate::open_input`] (`file_len` as it returned): tags and
/// audio are both read from this one descriptor, so the file analysed is the file checked.
pub fn analyze_open_with(
    file: File,
    file_len: u64,
    opts: &Options,
    sink: &mut dyn MonoSink,
) -> Result<Analyzed, AnalysisError> {
    if opts.analysis_rate == 0 {
        return Err(AnalysisError::unsupported(
            Stage::Open,
            "analysis rate must be above 0",
        ));
    }
    let mut stages = StageTimes::default();
    if file_len == 0 {
        return Err(AnalysisError::corrupt(Stage::Probe, "empty file"));
    }

    // The tag reader reads through its own cursor on a second descriptor of the same open file.
    let tag_file = file
        .try_clone()
        .map_err(|e| AnalysisError::io(Stage::Open, &e))?;
    let t = Instant::now();
    let mut opened = guarded(Stage::Probe, || open(file, file_len))?;
    stages.probe_us = micros(t.elapsed());

    let t = Instant::now();
    let tag_read = if opts.read_tags {
        catch_unwind(|| read_tags_from(&tag_file)).unwrap_or_else(|p| TagRead {
            tags: Default::default(),
            notes: vec![format!("tag reader panicked: {}", panic_message(&*p))],
        })
    } else {
        TagRead {
            tags: Default::default(),
            notes: Vec::new(),
        }
    };
    stages.tags_us = micros(t.elapsed());

    sink.begin(opened.duration_s);
    let mut frames = FrameAnalyzer::new(opts.analysis_rate);
    let mut feature_time = Duration::ZERO;
    let mut sink_time = Duration::ZERO;
    let t = Instant::now();
    let decoded = guarded(Stage::Decode, || {
        decode(&mut opened, opts, &mut |mono: &[f32]| {
            let a = Instant::now();
            frames.push(mono);
            let b = Instant::now();
            sink.accept(mono);
            feature_time += b - a;
            sink_time += b.elapsed();
        })
    })?;
    let loop_time = t.elapsed();
    stages.decode_us = micros(loop_time.saturating_sub(feature_time + sink_time));
    stages.model_us = micros(sink_time);

    let t = Instant::now();
    let summary = guarded(Stage::Features, || Ok(frames.finish()))?;
    let analysis = build_record(&opened, &decoded, summary, tag_read, file_len);
    stages.features_us = micros(feature_time + t.elapsed());
    Ok(Analyzed { analysis, stages })
}

/// Runs `f`, turning a panic into a corrupt-file error of `stage`.
fn guarded<T>(
    stage: Stage,
    f: impl FnOnce() -> Result<T, AnalysisError>,
) -> Result<T, AnalysisError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(AnalysisError::corrupt(
            stage,
            format!("panic while reading the file: {}", panic_message(&*p)),
        )),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn build_record(
    opened: &Opened,
    decoded: &Decoded,
    s: FrameSummary,
    tag_read: TagRead,
    file_len: u64,
) -> TrackAnalysis {
    let decoded_s = decoded.seconds();
    let mut notes: Vec<String> = tag_read.notes;
    notes.extend(decoded.notes.iter().cloned());

    // Partial: damage stopped decoding, or the stream ended early against the stated duration.
    let short = opened
        .duration_s
        .is_some_and(|d| decoded_s < d - (0.02 * d).max(1.0));
    let partial = !decoded.capped && (decoded.damage.is_some() || short);
    if partial {
        let why = decoded
            .damage
            .clone()
            .unwrap_or_else(|| "file ends early".to_string());
        let of = opened
            .duration_s
            .map(|d| format!(" of {d:.1} s"))
            .unwrap_or_default();
        notes.push(format!("partial: {why}; decoded {decoded_s:.1} s{of}"));
    } else if decoded.ended_abruptly && opened.duration_s.is_none() {
        notes.push(format!(
            "stream ended with a read error after {decoded_s:.1} s"
        ));
    }
    if decoded.capped {
        notes.push(format!("decoding stopped at the {decoded_s:.1} s limit"));
    }

    let duration_for_rate = opened.duration_s.unwrap_or(decoded_s);
    let bitrate_kbps = (duration_for_rate > 0.5)
        .then(|| (opened.audio_bytes as f64 * 8.0 / duration_for_rate / 1000.0).round())
        .filter(|b| b.is_finite() && *b >= 0.0 && *b < f64::from(u32::MAX))
        .map(|b| b as u32);
    let _ = file_len;

    let (key, major, key_strength) = estimate_key(&s.chroma);
    let l = decoded.loudness;
    let mut features = Features {
        integrated_lufs: l.integrated_lufs,
        loudness_range_lu: l.range_lu,
        true_peak_dbtp: l.true_peak_dbtp,
        replaygain_track_gain_db: l.replaygain_gain_db,
        replaygain_track_peak: l.replaygain_peak,
        bpm: s.bpm as f32,
        onset_rate: s.onset_rate as f32,
        spectral_centroid_hz: s.centroid.stat(),
        spectral_rolloff_hz: s.rolloff.stat(),
        spectral_flatness: s.flatness.stat(),
        spectral_flux: s.flux.stat(),
        zero_crossing_rate: s.zcr.stat(),
        chroma: s.chroma,
        key,
        mode: CleanText::new(if major { "major" } else { "minor" }),
        key_strength,
        silence_ratio: s.silence_ratio as f32,
    };
    // Round the tempo to 0.01 BPM so the stored value does not carry grid noise.
    features.bpm = (features.bpm * 100.0).round() / 100.0;
    let vector = fingerprint(&features, &s.bands);

    TrackAnalysis {
        analyzer_version: ANALYZER_VERSION,
        partial,
        audio: AudioProps {
            container: CleanText::new(opened.container),
            codec: CleanText::new(opened.codec),
            sample_rate: decoded.sample_rate,
            channels: u16::try_from(decoded.channels).unwrap_or(u16::MAX),
            bits_per_sample: opened.bits_per_sample,
            duration_s: opened.duration_s,
            decoded_s,
            bitrate_kbps,
        },
        tags: tag_read.tags,
        features: Some(features),
        embeddings: vec![Embedding {
            model: CleanText::new(FINGERPRINT_MODEL),
            values: vector,
        }],
        models: Vec::new(),
        notes: notes.iter().map(|n| CleanText::new(n)).collect(),
    }
}

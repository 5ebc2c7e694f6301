//! `trackmill show FILE` without `--json`: the stored row as a readable summary (tags, audio
//! properties, tempo, key, loudness and ReplayGain, the models that ran, failures with every
//! attempt). The JSON form (`--json`) is the stored row as the DB writer returns it.

use serde_json::Value;
use std::fmt::Write;

const KEYS: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn line(out: &mut String, label: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        let _ = writeln!(out, "{:<12} {v}", format!("{label}:"));
    }
}

/// The readable summary of one stored row (the value `trackmill_dbwriter::show` returns).
pub fn render(v: &Value) -> String {
    let mut o = String::new();
    line(&mut o, "path", text(&v["display_path"]));
    let status = text(&v["status"]).map(|s| match v["missing_since"].as_i64() {
        // The file was found gone: the row keeps what it had until `trackmill prune`.
        Some(_) => format!("missing (file gone; stored as {s})"),
        None => s,
    });
    line(&mut o, "status", status);
    line(&mut o, "title", text(&v["title"]));
    let artists: Vec<String> = v["artists"]
        .as_array()
        .map(|a| a.iter().filter_map(text).collect())
        .unwrap_or_default();
    line(&mut o, "artists", Some(artists.join(", ")));
    line(&mut o, "album", text(&v["album"]));
    line(&mut o, "year", text(&v["year"]));
    let track = text(&v["track_number"]).map(|n| match text(&v["track_total"]) {
        Some(t) => format!("{n}/{t}"),
        None => n,
    });
    line(&mut o, "track", track);
    line(
        &mut o,
        "duration",
        num(&v["duration_s"]).map(|d| format!("{}:{:04.1}", (d / 60.0) as u64, d % 60.0)),
    );
    let mut audio = Vec::new();
    for (k, unit) in [
        ("container", ""),
        ("codec", ""),
        ("sample_rate", " Hz"),
        ("channels", " ch"),
        ("bits_per_sample", " bit"),
        ("bitrate_kbps", " kbit/s"),
    ] {
        if let Some(t) = text(&v[k]) {
            audio.push(format!("{t}{unit}"));
        }
    }
    line(&mut o, "audio", Some(audio.join(", ")));
    let f = &v["features"];
    if f.is_object() {
        line(
            &mut o,
            "tempo",
            num(&f["bpm"]).map(|b| format!("{b:.1} BPM")),
        );
        let key = f["key"]
            .as_u64()
            .and_then(|k| KEYS.get(usize::try_from(k).ok()?))
            .map(|k| format!("{k} {}", text(&f["mode"]).unwrap_or_default()));
        line(&mut o, "key", key);
        if let (Some(i), Some(r), Some(p)) = (
            num(&f["integrated_lufs"]),
            num(&f["loudness_range_lu"]),
            num(&f["true_peak_dbtp"]),
        ) {
            line(
                &mut o,
                "loudness",
                Some(format!(
                    "{i:.1} LUFS integrated, range {r:.1} LU, true peak {p:.1} dBTP"
                )),
            );
        }
        if let (Some(g), Some(p)) = (
            num(&f["replaygain_track_gain_db"]),
            num(&f["replaygain_track_peak"]),
        ) {
            line(
                &mut o,
                "replaygain",
                Some(format!("track gain {g:+.2} dB, peak {p:.4}")),
            );
        }
    }
    let models: Vec<String> = v["models"]
        .as_array()
        .map(|a| a.iter().filter_map(text).collect())
        .unwrap_or_default();
    line(
        &mut o,
        "models",
        Some(if models.is_empty() {
            "none (DSP only)".to_owned()
        } else {
            models.join(", ")
        }),
    );
    if v["partial"].as_bool() == Some(true) {
        line(&mut o, "partial", Some("yes".into()));
    }
    line(&mut o, "class", text(&v["failure_class"]));
    line(&mut o, "stage", text(&v["failure_stage"]));
    line(&mut o, "message", text(&v["failure_message"]));
    if let Some(atts) = v["attempts"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(o, "attempts:");
        for a in atts {
            let _ = writeln!(
                o,
                "  run {} attempt {}: {} at {}: {} (pid {}, peak RSS {} bytes, {} ms)",
                text(&a["run_id"]).unwrap_or_default(),
                text(&a["attempt"]).unwrap_or_default(),
                text(&a["class"]).unwrap_or_default(),
                text(&a["stage"]).unwrap_or_default(),
                text(&a["message"]).unwrap_or_default(),
                text(&a["worker_pid"]).unwrap_or_else(|| "-".into()),
                text(&a["peak_rss_bytes"]).unwrap_or_else(|| "-".into()),
                text(&a["elapsed_ms"]).unwrap_or_else(|| "-".into()),
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::render;
    use serde_json::json;

    #[test]
    fn analysed_track_has_labelled_lines() {
        let v = json!({"display_path": "/m/a.flac", "status": "analyzed", "title": "Song",
            "artists": ["A", "B"], "album": "Al", "year": 2001, "track_number": 3,
            "track_total": 9, "duration_s": 125.0, "container": "flac", "codec": "flac",
            "sample_rate": 44100, "channels": 2, "bits_per_sample": 16, "bitrate_kbps": 900,
            "models": [], "attempts": [],
            "features": {"bpm": 120.0, "key": 9, "mode": "minor", "integrated_lufs": -14.2,
                "loudness_range_lu": 6.5, "true_peak_dbtp": -0.8,
                "replaygain_track_gain_db": -3.8, "replaygain_track_peak": 0.9}});
        let s = render(&v);
        for want in [
            "path:        /m/a.flac",
            "status:      analyzed",
            "artists:     A, B",
            "track:       3/9",
            "duration:    2:05.0",
            "audio:       flac, flac, 44100 Hz, 2 ch, 16 bit, 900 kbit/s",
            "tempo:       120.0 BPM",
            "key:         A minor",
            "loudness:    -14.2 LUFS integrated, range 6.5 LU, true peak -0.8 dBTP",
            "replaygain:  track gain -3.80 dB, peak 0.9000",
            "models:      none (DSP only)",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert!(!s.contains("attempts:"));
    }

    #[test]
    fn failed_track_shows_class_and_every_attempt() {
        let v = json!({"display_path": "/m/bad.mp3", "status": "quarantined",
            "failure_class": "oom", "failure_stage": "decode", "failure_message": "killed",
            "models": [], "features": null, "attempts": [
                {"run_id": 1, "attempt": 1, "class": "oom", "stage": "decode",
                 "message": "killed", "worker_pid": 42, "peak_rss_bytes": 100, "elapsed_ms": 7},
                {"run_id": 1, "attempt": 2, "class": "timeout", "stage": "dsp",
                 "message": "late", "worker_pid": 43, "peak_rss_bytes": null, "elapsed_ms": 9}]});
        let s = render(&v);
        assert!(s.contains("status:      quarantined"), "{s}");
        assert!(s.contains("class:       oom"), "{s}");
        assert!(s.contains("stage:       decode"), "{s}");
        assert!(
            s.contains("run 1 attempt 1: oom at decode: killed (pid 42"),
            "{s}"
        );
        assert!(
            s.contains("run 1 attempt 2: timeout at dsp: late (pid 43, peak RSS -"),
            "{s}"
        );
        assert!(!s.contains("tempo:"), "{s}");
    }
}

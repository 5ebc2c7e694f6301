//! A realistic analysis record for the DB-writer tests and the DB benchmark: tags with two
//! artists, the full feature set, the DSP fingerprint and a model embedding, varied by an index.

use trackmill_types::{
    AudioProps, CleanText, Embedding, Features, Stat, Tags, TrackAnalysis, ANALYZER_VERSION,
};

/// The model named in [`sample_analysis`]'s `models` and embedding.
pub const SAMPLE_MODEL: &str = "basic-pitch";

/// Record `i` of a generated library: 50 artists, 200 albums, 12 tracks an album.
pub fn sample_analysis(i: u64) -> TrackAnalysis {
    let artist = CleanText::new(&format!("Artist {}", i % 50));
    let tags = Tags {
        title: Some(CleanText::new(&format!("Track {i}"))),
        artists: vec![artist.clone(), CleanText::new("Guest Singer")],
        album: Some(CleanText::new(&format!("Album {}", i % 200))),
        album_artist: Some(artist),
        genres: vec![CleanText::new("Rock"), CleanText::new("Indie")],
        year: Some(1990 + (i % 30) as i32),
        track_number: Some((i % 12) as u32 + 1),
        track_total: Some(12),
        disc_number: Some(1),
        disc_total: Some(1),
        musicbrainz_recording_id: Some(CleanText::new("1f0e4c3a-2b5d-4e8f-9a7b-6c5d4e3f2a1b")),
        picture_count: 1,
        picture_bytes: 80_000,
        ..Tags::default()
    };
    let stat = |mean: f32, std: f32| Stat { mean, std };
    let features = Features {
        integrated_lufs: -9.5,
        loudness_range_lu: 6.1,
        true_peak_dbtp: -0.3,
        replaygain_track_gain_db: -8.5,
        replaygain_track_peak: 0.98,
        bpm: 120.0 + (i % 40) as f32,
        onset_rate: 3.2,
        spectral_centroid_hz: stat(2100.0, 400.0),
        spectral_rolloff_hz: stat(4800.0, 900.0),
        spectral_flatness: stat(0.12, 0.05),
        spectral_flux: stat(1.5, 0.25),
        zero_crossing_rate: stat(0.08, 0.02),
        chroma: [1.0 / 12.0; 12],
        key: (i % 12) as u8,
        mode: CleanText::new("minor"),
        key_strength: 0.71,
        silence_ratio: 0.02,
    };
    TrackAnalysis {
        analyzer_version: ANALYZER_VERSION,
        partial: false,
        audio: AudioProps {
            container: CleanText::new("flac"),
            codec: CleanText::new("flac"),
            sample_rate: 44_100,
            channels: 2,
            bits_per_sample: Some(16),
            duration_s: Some(215.3),
            decoded_s: 215.3,
            bitrate_kbps: Some(900),
        },
        tags,
        features: Some(features),
        embeddings: vec![
            Embedding {
                model: CleanText::new("trackmill-dsp-v1"),
                values: (0..32).map(|j| (i + j) as f32 / 100.0).collect(),
            },
            Embedding {
                model: CleanText::new(SAMPLE_MODEL),
                values: (0..88).map(|j| j as f32 * 0.5).collect(),
            },
        ],
        models: vec![CleanText::new(SAMPLE_MODEL)],
        notes: vec![],
    }
}

//! Bad input is data: empty, garbage, missing, truncated and tag-bloated files give classified
//! errors or partial results, never a panic.

mod common;
use common::*;
use std::time::{Duration, Instant};
use trackmill_analysis::AnalysisError;
use trackmill_types::{FailureClass, Stage};

fn expect_corrupt(p: &std::path::Path) -> AnalysisError {
    let t = Instant::now();
    let e = try_analyze(p).expect_err("must fail");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "slow failure: {:?}",
        t.elapsed()
    );
    assert_eq!(e.to_failure().class, FailureClass::Corrupt, "{e}");
    e
}

#[test]
fn empty_garbage_and_text_are_corrupt() {
    let dir = tempdir();
    let empty = dir.path().join("empty.mp3");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(expect_corrupt(&empty).stage(), Stage::Probe);

    // Deterministic pseudo-random bytes (xorshift), 2 MB.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let g = dir.path().join("garbage.flac");
    std::fs::write(&g, &garbage).unwrap();
    expect_corrupt(&g);

    let text = dir.path().join("notes.mp3");
    std::fs::write(&text, "this is not audio\n".repeat(1000)).unwrap();
    expect_corrupt(&text);

    let only_id3 = dir.path().join("only_tag.mp3");
    std::fs::write(
        &only_id3,
        b"ID3\x03\x00\x00\x00\x00\x00\x0a\0\0\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    expect_corrupt(&only_id3);
}

#[test]
fn missing_and_directory_are_unreadable() {
    let dir = tempdir();
    let e = try_analyze(&dir.path().join("nope.mp3")).unwrap_err();
    let f = e.to_failure();
    assert_eq!((f.class, f.stage), (FailureClass::Corrupt, Stage::Open));
    assert!(
        f.message.as_str().starts_with("unreadable"),
        "{}",
        f.message
    );
    let e = try_analyze(dir.path()).unwrap_err();
    assert_eq!(e.to_failure().class, FailureClass::Corrupt);
}

#[test]
fn truncated_files_give_partial_results() {
    let dir = tempdir();
    for (name, args) in [
        ("t.flac", &["-c:a", "flac"][..]),
        ("t.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"][..]),
        ("t.wav", &["-c:a", "pcm_s16le"][..]),
    ] {
        let p = render(dir.path(), name, &music(20), args);
        let bytes = std::fs::read(&p).unwrap();
        let cut = dir.path().join(format!("cut_{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let a = analyze(&cut).analysis;
        assert!(a.partial, "{name}: {:?}", a.notes);
        assert!(
            (a.audio.decoded_s - 10.0).abs() < 1.0,
            "{name}: {}",
            a.audio.decoded_s
        );
        assert_eq!(a.audio.duration_s.map(|d| d.round()), Some(20.0), "{name}");
        assert!(
            a.notes.iter().any(|n| n.as_str().starts_with("partial")),
            "{name}"
        );
        assert!(a.features.is_some());

        // Cut inside the headers: nothing decodable.
        let head = dir.path().join(format!("head_{name}"));
        std::fs::write(&head, &bytes[..40.min(bytes.len())]).unwrap();
        let e = try_analyze(&head).unwrap_err();
        assert_eq!(e.to_failure().class, FailureClass::Corrupt, "{name}: {e}");
    }
}

#[test]
fn corrupted_middle_still_analyzes() {
    let dir = tempdir();
    let p = render(dir.path(), "m.mp3", &music(10), &["-c:a", "libmp3lame"]);
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 3..n / 3 + 4000] {
        *b = 0xFF;
    }
    let bad = dir.path().join("bad.mp3");
    std::fs::write(&bad, &bytes).unwrap();
    let a = analyze(&bad).analysis;
    assert!(a.audio.decoded_s > 5.0, "{}", a.audio.decoded_s);
}

/// Builds an ID3v2.3 tag: title, artist, `extra` further text frames (composer, publisher,
/// …, cycling) and one picture of `picture` bytes.
fn id3v23(title: &str, extra: usize, picture: usize) -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, id: &[u8; 4], body: &[u8]) {
        out.extend_from_slice(id);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(body);
    }
    let mut frames = Vec::new();
    frame(
        &mut frames,
        b"TIT2",
        &[&[0u8][..], title.as_bytes()].concat(),
    );
    frame(&mut frames, b"TPE1", b"\0Some Artist");
    const IDS: [&[u8; 4]; 6] = [b"TCOM", b"TPUB", b"TENC", b"TIT1", b"TIT3", b"TCOP"];
    for i in 0..extra {
        frame(
            &mut frames,
            IDS[i % IDS.len()],
            format!("\0value {i}").as_bytes(),
        );
    }
    if picture > 0 {
        let mut body = b"\0image/jpeg\0\x03\0".to_vec();
        let mut x = 1u32;
        body.extend((0..picture).map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        }));
        frame(&mut frames, b"APIC", &body);
    }
    let size = frames.len() as u32;
    let mut tag = b"ID3\x03\x00\x00".to_vec();
    tag.extend_from_slice(&[
        ((size >> 21) & 0x7F) as u8,
        ((size >> 14) & 0x7F) as u8,
        ((size >> 7) & 0x7F) as u8,
        (size & 0x7F) as u8,
    ]);
    tag.extend_from_slice(&frames);
    tag
}

#[test]
fn huge_cover_and_thousands_of_tags_are_fine() {
    let dir = tempdir();
    let audio = render(
        dir.path(),
        "plain.mp3",
        &music(6),
        &[
            "-c:a",
            "libmp3lame",
            "-id3v2_version",
            "0",
            "-write_xing",
            "1",
        ],
    );
    let audio_bytes = std::fs::read(&audio).unwrap();
    for (name, extra, picture) in [("cover.mp3", 10, 20 << 20), ("tags.mp3", 5000, 1000)] {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            [id3v23("Big Song", extra, picture), audio_bytes.clone()].concat(),
        )
        .unwrap();
        let a = analyze(&p).analysis;
        assert_eq!(a.audio.container.as_str(), "mp3", "{name}");
        assert!(
            (a.audio.decoded_s - 6.0).abs() < 0.1,
            "{name}: {}",
            a.audio.decoded_s
        );
        assert!(!a.partial, "{name}");
        assert_eq!(
            a.tags.title.as_ref().map(|t| t.as_str()),
            Some("Big Song"),
            "{name}: {:?}",
            a.notes
        );
        assert_eq!(a.tags.artists.len(), 1, "{name}");
        let bitrate = a.audio.bitrate_kbps.unwrap();
        assert!(
            (100..400).contains(&bitrate),
            "{name}: tags do not count as audio: {bitrate}"
        );
        assert_eq!(
            (a.tags.picture_count, a.tags.picture_bytes),
            (1, picture as u64),
            "{name}"
        );
    }
}

#[test]
fn tags_are_read_and_cleaned() {
    let dir = tempdir();
    let long = "x".repeat(3000);
    let p = render(
        dir.path(),
        "tagged.flac",
        "sine=frequency=440:duration=2",
        &[
            "-metadata",
            "title=Tit\u{1}le",
            "-metadata",
            "artist=Ärtist",
            "-metadata",
            "album=Album",
            "-metadata",
            "album_artist=Various",
            "-metadata",
            "genre=Jazz",
            "-metadata",
            "date=1999-04-01",
            "-metadata",
            "track=3/12",
            "-metadata",
            "disc=1/2",
            "-metadata",
            "MUSICBRAINZ_TRACKID=0b6d8d8a-4b66-4d1e-9d52-1c8f0f0e6a1b",
            "-metadata",
            &format!("comment={long}"),
            "-metadata",
            &format!("album={long}"),
        ],
    );
    let t = analyze(&p).analysis.tags;
    assert_eq!(t.title.unwrap().as_str(), "Title");
    assert_eq!(t.artists[0].as_str(), "Ärtist");
    assert_eq!(
        t.album.unwrap().as_str().len(),
        trackmill_analysis::tags::MAX_VALUE_BYTES
    );
    assert!(t.truncated);
    assert_eq!(t.album_artist.unwrap().as_str(), "Various");
    assert_eq!(t.genres[0].as_str(), "Jazz");
    assert_eq!(t.year, Some(1999));
    assert_eq!((t.track_number, t.track_total), (Some(3), Some(12)));
    assert_eq!((t.disc_number, t.disc_total), (Some(1), Some(2)));
    assert_eq!(
        t.musicbrainz_recording_id.unwrap().as_str(),
        "0b6d8d8a-4b66-4d1e-9d52-1c8f0f0e6a1b"
    );
}

#[test]
fn broken_tags_do_not_fail_the_file() {
    let dir = tempdir();
    let audio = render(
        dir.path(),
        "a.mp3",
        "sine=frequency=440:duration=3",
        &["-id3v2_version", "0"],
    );
    let mut tag = id3v23("T", 3, 0);
    // Frame sizes that run past the tag.
    let n = tag.len();
    tag[n - 12..n - 8].copy_from_slice(&u32::MAX.to_be_bytes());
    let p = dir.path().join("badtag.mp3");
    std::fs::write(&p, [tag, std::fs::read(&audio).unwrap()].concat()).unwrap();
    let a = analyze(&p).analysis;
    assert!((a.audio.decoded_s - 3.0).abs() < 0.1);
}

#[test]
fn five_thousand_vorbis_comments_are_capped() {
    let dir = tempdir();
    let p = render(
        dir.path(),
        "many.flac",
        "sine=frequency=440:duration=2",
        &[],
    );
    let mut list = String::from("TITLE=Many\n");
    for i in 0..5000 {
        list.push_str(&format!("GENRE=genre {i}\nARTIST=artist {i}\n"));
    }
    let tags = dir.path().join("tags.txt");
    std::fs::write(&tags, list).unwrap();
    let st = std::process::Command::new("metaflac")
        .arg(format!("--import-tags-from={}", tags.display()))
        .arg(&p)
        .status()
        .expect("metaflac runs");
    assert!(st.success());
    let a = analyze(&p).analysis;
    assert_eq!(a.tags.title.unwrap().as_str(), "Many");
    assert_eq!(a.tags.genres.len(), 10);
    assert_eq!(a.tags.artists.len(), 10);
    assert!(a.tags.truncated);
    assert!((a.audio.decoded_s - 2.0).abs() < 0.01);
}

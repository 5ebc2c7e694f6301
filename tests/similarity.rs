//! End-to-end similarity queries on the real binary: distinct generated pieces (tempo, key,
//! timbre), each encoded as MP3, FLAC, Ogg Vorbis and Opus and scanned DSP-only; every file's
//! nearest neighbours are the other encodings of its piece, a song path approaches its
//! destination without repeats, a harmonic mix only joins compatible keys and tempos, playlists
//! parse and resolve, and a deleted file is never returned. Two families of pieces (slow
//! minor-key sustained tones, fast major-key percussive patterns) keep to themselves.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use trackmill_e2e::pgserver::PgSchema;
use trackmill_e2e::*;
use trackmill_similarity::{keys_compatible, tempos_compatible, Key};

/// A generated piece: an ffmpeg `aevalsrc` expression of `t`, its tags.
struct Piece {
    name: &'static str,
    artist: &'static str,
    expr: String,
}

fn pulse(bpm: f32, decay: f32) -> String {
    format!("exp(-{decay}*mod(t,{}))", 60.0 / bpm)
}

fn chord(freqs: &[f32], wave: fn(f32) -> String) -> String {
    let parts: Vec<String> = freqs.iter().map(|&f| wave(f)).collect();
    format!("({})/{}", parts.join("+"), freqs.len())
}

fn sine(f: f32) -> String {
    format!("sin(2*PI*{f}*t)")
}

fn square(f: f32) -> String {
    format!("0.5*sgn(sin(2*PI*{f}*t))")
}

fn saw(f: f32) -> String {
    format!("0.6*(2*mod({f}*t,1)-1)")
}

/// Four pieces that differ in tempo, key and timbre.
fn pieces() -> Vec<Piece> {
    vec![
        Piece {
            name: "nocturne",
            artist: "Slow Strings",
            // A minor, sustained sines swelling at 70 BPM.
            expr: format!(
                "0.5*{}*(0.6+0.4*{})",
                chord(&[110.0, 220.0, 261.63, 329.63], sine),
                pulse(70.0, 2.0)
            ),
        },
        Piece {
            name: "sprint",
            artist: "Fast Hands",
            // C major plucked square waves at 140 BPM, with noise hats on the off-beats.
            expr: format!(
                "0.5*{}*{}+0.15*(2*random(0)-1)*exp(-80*mod(t+{},{}))",
                chord(&[261.63, 329.63, 392.0, 523.25], square),
                pulse(140.0, 18.0),
                60.0 / 280.0,
                60.0 / 140.0
            ),
        },
        Piece {
            name: "drift",
            artist: "Saw Motors",
            // F# major sawtooth chords at 100 BPM.
            expr: format!(
                "0.5*{}*{}",
                chord(&[92.5, 185.0, 233.08, 277.18], saw),
                pulse(100.0, 6.0)
            ),
        },
        Piece {
            name: "bells",
            artist: "Glass Works",
            // E minor high sine bells at 120 BPM.
            expr: format!(
                "0.5*{}*{}",
                chord(&[659.26, 783.99, 987.77, 1318.5], sine),
                pulse(120.0, 10.0)
            ),
        },
    ]
}

const FORMATS: [(&str, &[&str]); 4] = [
    ("mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
    ("flac", &["-c:a", "flac"]),
    ("ogg", &["-c:a", "libvorbis", "-q:a", "6"]),
    ("opus", &["-c:a", "libopus", "-b:a", "160k"]),
];

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed (cargo xtask setup)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes every piece in every format under `dir/<piece>/`; returns (piece, file) pairs.
fn library(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut files = Vec::new();
    for p in pieces() {
        let sub = dir.join(p.name);
        std::fs::create_dir_all(&sub).unwrap();
        let master = dir.join(format!("{}.wav", p.name));
        let src = format!("aevalsrc=exprs='{}':s=44100:d=12", p.expr);
        ffmpeg(&["-f", "lavfi", "-i", &src, master.to_str().unwrap()]);
        for (ext, codec) in FORMATS {
            let out = sub.join(format!("{}.{ext}", p.name));
            let mut args = vec!["-i", master.to_str().unwrap()];
            args.extend_from_slice(codec);
            let artist = format!("artist={}", p.artist);
            let title = format!("title={} ({ext})", p.name);
            args.extend([
                "-metadata",
                &artist,
                "-metadata",
                &title,
                out.to_str().unwrap(),
            ]);
            ffmpeg(&args);
            files.push((p.name, out));
        }
        std::fs::remove_file(&master).unwrap();
    }
    files
}

struct Fixture {
    _pg: Option<PgSchema>,
    _tmp: tempfile::TempDir,
    root: PathBuf,
    url: String,
    files: Vec<(&'static str, PathBuf)>,
}

/// The library scanned DSP-only into SQLite, or into a PostgreSQL schema of its own.
fn fixture(pg: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("music");
    let files = library(&root);
    let config = tmp.path().join("dsp.toml");
    std::fs::write(&config, "[analysis]\nmodels = []\n").unwrap();
    let schema = pg.then(|| PgSchema::new("similar"));
    let url = match &schema {
        Some(s) => s.url(),
        None => format!("sqlite://{}", tmp.path().join("t.db").display()),
    };
    let summary_file = tmp.path().join("summary.json");
    let extra = ["--config", config.to_str().unwrap(), "--no-progress"];
    let (out, summary) = scan_url(&root, &url, &summary_file, &extra, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(n(&summary, "analyzed"), files.len() as u64, "{summary:#}");
    Fixture {
        _pg: schema,
        url,
        root: root.canonicalize().unwrap(),
        files,
        _tmp: tmp,
    }
}

fn query(fx: &Fixture, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", "--db", &fx.url]);
    trackmill_json(all)
}

fn tracks(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["tracks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tracks in {v:#}"))
}

fn path_of(t: &serde_json::Value) -> PathBuf {
    PathBuf::from(t["path"].as_str().unwrap())
}

fn key_of(t: &serde_json::Value) -> Key {
    Key::from_record(
        t["key"].as_u64().unwrap() as u8,
        t["mode"].as_str().unwrap(),
    )
}

/// Identity across formats: the three nearest tracks of every file are its other encodings.
fn assert_identity(fx: &Fixture) {
    let piece_of: HashMap<PathBuf, &str> = fx
        .files
        .iter()
        .map(|(p, f)| (f.canonicalize().unwrap(), *p))
        .collect();
    for (piece, file) in &fx.files {
        let v = query(
            fx,
            &[
                "similar",
                file.to_str().unwrap(),
                "-n",
                "3",
                "--per-artist",
                "3",
            ],
        );
        let near: Vec<&str> = tracks(&v).iter().map(|t| piece_of[&path_of(t)]).collect();
        assert_eq!(near, [*piece; 3], "{}: {v:#}", file.display());
        assert!(tracks(&v)
            .iter()
            .all(|t| path_of(t) != file.canonicalize().unwrap()));
        let d: Vec<f64> = tracks(&v)
            .iter()
            .map(|t| t["distance"].as_f64().unwrap())
            .collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first: {d:?}");
    }
}

#[test]
fn identity_across_formats_in_postgresql() {
    assert_identity(&fixture(true));
}

#[test]
fn similarity_queries_on_a_scanned_library() {
    let fx = &fixture(false);
    assert_identity(fx);

    // The per-artist cap: with 2, two encodings of the piece, then other artists.
    let seed = &fx.files[0].1;
    let v = query(fx, &["similar", seed.to_str().unwrap(), "-n", "6"]);
    let mut per_artist: HashMap<String, usize> = HashMap::new();
    for t in tracks(&v) {
        *per_artist
            .entry(t["artist"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(tracks(&v).len(), 6);
    assert!(per_artist.values().all(|&c| c <= 2), "{per_artist:?}");

    // A song path from one piece to another: no track twice, each step closer to TO, and the
    // playlist parses and resolves from its directory.
    let (from, to) = (&fx.files[0].1, &fx.files[8].1);
    let lists = fx.root.join("playlists");
    std::fs::create_dir(&lists).unwrap();
    let m3u = lists.join("path.m3u8");
    let v = query(
        fx,
        &[
            "path",
            from.to_str().unwrap(),
            to.to_str().unwrap(),
            "--steps",
            "6",
            "--m3u",
            m3u.to_str().unwrap(),
            "--relative-to",
            lists.to_str().unwrap(),
        ],
    );
    let steps = tracks(&v);
    assert!(!steps.is_empty(), "{v:#}");
    let mut last = v["distance"].as_f64().unwrap();
    let mut seen = HashSet::new();
    for s in steps {
        let d = s["distance_to_destination"].as_f64().unwrap();
        assert!(d < last, "each step closer to TO: {v:#}");
        last = d;
        assert!(seen.insert(path_of(s)), "no track twice: {v:#}");
        assert!(
            path_of(s) != from.canonicalize().unwrap() && path_of(s) != to.canonicalize().unwrap()
        );
    }
    let entries = parse_m3u(&m3u, &lists);
    assert_eq!(entries.len(), steps.len() + 2, "FROM, the steps, TO");
    assert_eq!(entries[0], from.canonicalize().unwrap());
    assert_eq!(entries[entries.len() - 1], to.canonicalize().unwrap());

    // A harmonic mix: every neighbour pair has compatible keys and tempos.
    let m3u = lists.join("mix.m3u8");
    let v = query(
        fx,
        &[
            "mix",
            from.to_str().unwrap(),
            "--length",
            "10",
            "--harmonic",
            "--m3u",
            m3u.to_str().unwrap(),
        ],
    );
    let seeds = v["seeds"].as_array().unwrap();
    let mut prev = (key_of(&seeds[0]), seeds[0]["bpm"].as_f64().unwrap() as f32);
    for t in tracks(&v) {
        let cur = (key_of(t), t["bpm"].as_f64().unwrap() as f32);
        assert!(keys_compatible(prev.0, cur.0), "{prev:?} → {cur:?}: {v:#}");
        assert!(
            tempos_compatible(prev.1, cur.1),
            "{prev:?} → {cur:?}: {v:#}"
        );
        prev = cur;
    }
    let entries = parse_m3u(&m3u, &lists);
    assert_eq!(
        entries.len(),
        tracks(&v).len() + 1,
        "the seed, then the mix"
    );
    assert!(entries.iter().all(|e| e.is_absolute()));

    // A plain mix keeps its rules too: no artist twice in a row.
    let v = query(fx, &["mix", from.to_str().unwrap(), "--length", "8"]);
    let artists: Vec<&str> = tracks(&v)
        .iter()
        .map(|t| t["artist"].as_str().unwrap())
        .collect();
    assert!(!artists.is_empty());
    assert!(artists.windows(2).all(|w| w[0] != w[1]), "{artists:?}");

    // A deleted file is never returned.
    let gone = fx.files[1].1.canonicalize().unwrap();
    std::fs::remove_file(&gone).unwrap();
    let v = query(
        fx,
        &[
            "similar",
            seed.to_str().unwrap(),
            "-n",
            "15",
            "--per-artist",
            "0",
        ],
    );
    assert_eq!(
        tracks(&v).len(),
        fx.files.len() - 2,
        "all but the seed and the deleted file"
    );
    assert!(tracks(&v).iter().all(|t| path_of(t) != gone));

    // A file that was never analysed is a clear error with its exit code.
    let out = Command::new(binary())
        .args(["similar", "/no/such/file.mp3", "--db", &fx.url])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no analysed track stored"));
}

/// Checks the extended M3U structure and returns the entries' resolved paths (each must exist).
fn parse_m3u(file: &Path, base: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "{text}");
    let mut out = Vec::new();
    let mut pending_inf = false;
    for l in lines {
        if let Some(inf) = l.strip_prefix("#EXTINF:") {
            assert!(!pending_inf, "two #EXTINF in a row: {text}");
            let (secs, label) = inf.split_once(',').unwrap();
            assert!(secs.parse::<i64>().unwrap() >= 11, "{text}");
            assert!(label.contains(" - "), "artist - title: {text}");
            pending_inf = true;
        } else {
            assert!(pending_inf, "a path without #EXTINF: {text}");
            pending_inf = false;
            let p = base.join(l);
            assert!(p.exists(), "{} does not resolve from {}", l, base.display());
            out.push(p.canonicalize().unwrap());
        }
    }
    assert!(!pending_inf);
    out
}

/// Six pieces of a family: (family, expression) with the key's root and the tempo varied.
fn family(slow: bool) -> Vec<String> {
    // Minor triads (root, minor third, fifth) or major ones (root, major third, fifth).
    let roots = [220.0f32, 146.83, 164.81, 261.63, 196.0, 246.94];
    roots
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let i = i as f32;
            if slow {
                let third = r * 2f32.powf(3.0 / 12.0);
                let fifth = r * 1.5;
                format!(
                    "0.5*{}*(0.6+0.4*{})",
                    chord(&[r / 2.0, r, third, fifth], sine),
                    pulse(60.0 + 4.0 * i, 1.5)
                )
            } else {
                let third = r * 2f32.powf(4.0 / 12.0);
                let fifth = r * 1.5;
                let bpm = 128.0 + 4.0 * i;
                format!(
                    "0.5*{}*{}+0.15*(2*random(0)-1)*exp(-80*mod(t+{},{}))",
                    chord(&[r, third, fifth, r * 2.0], square),
                    pulse(bpm, 18.0),
                    30.0 / bpm,
                    60.0 / bpm
                )
            }
        })
        .collect()
}

#[test]
fn families_keep_to_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("music");
    std::fs::create_dir_all(&root).unwrap();
    let mut family_of = HashMap::new();
    for (fam, slow) in [("slow", true), ("fast", false)] {
        for (i, expr) in family(slow).iter().enumerate() {
            let (ext, codec) = FORMATS[i % FORMATS.len()];
            let file = root.join(format!("{fam}-{i}.{ext}"));
            let src = format!("aevalsrc=exprs='{expr}':s=44100:d=12");
            let mut args = vec!["-f", "lavfi", "-i", &src];
            args.extend_from_slice(codec);
            let artist = format!("artist={fam} {i}");
            args.extend(["-metadata", &artist, file.to_str().unwrap()]);
            ffmpeg(&args);
            family_of.insert(file.canonicalize().unwrap(), fam);
        }
    }
    let config = tmp.path().join("dsp.toml");
    std::fs::write(&config, "[analysis]\nmodels = []\n").unwrap();
    let db = tmp.path().join("t.db");
    let (out, summary) = scan(
        &root,
        &db,
        &["--config", config.to_str().unwrap(), "--no-progress"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(n(&summary, "analyzed"), 12, "{summary:#}");
    let url = format!("sqlite://{}", db.display());
    let mut own = 0;
    let mut total = 0;
    for (file, fam) in &family_of {
        let v = trackmill_json([
            "similar",
            file.to_str().unwrap(),
            "-n",
            "5",
            "--json",
            "--db",
            &url,
        ]);
        let near = tracks(&v);
        assert_eq!(near.len(), 5);
        own += near
            .iter()
            .filter(|t| family_of[&path_of(t)] == *fam)
            .count();
        total += near.len();
    }
    let precision = own as f64 / total as f64;
    eprintln!("families: precision at 5 = {precision:.3} ({own} of {total})");
    assert!(precision >= 0.8, "precision at 5 = {precision:.3}");
}

/// `trackmill ARGS…`: exit status and standard output.
fn trackmill(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn files_that_vanish_are_marked_missing_restored_when_back_and_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let album = tmp.path().join("music");
    let other = tmp.path().join("usb");
    let away = tmp.path().join("away");
    for d in [&album, &other, &away] {
        std::fs::create_dir(d).unwrap();
    }
    for i in 0..4 {
        tone(&album.join(format!("t{i}.flac")), 300 + 70 * i, 3);
    }
    tone(&other.join("u.flac"), 900, 3);
    // A disk mounted inside the root (`nas`), and an album folder.
    std::fs::create_dir_all(album.join("nas/x")).unwrap();
    tone(&album.join("nas/x/n.flac"), 1100, 3);
    std::fs::create_dir(album.join("gone-album")).unwrap();
    tone(&album.join("gone-album/g.flac"), 1300, 3);
    let (album, other) = (album.canonicalize().unwrap(), other.canonicalize().unwrap());
    let config = tmp.path().join("dsp.toml");
    std::fs::write(&config, "[analysis]\nmodels = []\n").unwrap();
    let db = tmp.path().join("t.db");
    let url = format!("sqlite://{}", db.display());
    let summary = tmp.path().join("s.json");
    let pass = || {
        let extra = ["--config", config.to_str().unwrap(), "--no-progress"];
        let mut cmd = scan_command_url(&[&album, &other], &url, &summary, &extra);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        assert_accounted(&s);
        (s, err)
    };
    let (s, _) = pass();
    assert_eq!(n(&s, "analyzed"), 7, "{s:#}");
    assert_eq!(n(&s, "missing"), 0, "{s:#}");

    // One file moved away, an album folder moved away; the other root and the inner disk's
    // mount point emptied, as an unmounted disk leaves them.
    let t1 = album.join("t1.flac");
    let g = album.join("gone-album/g.flac");
    std::fs::rename(&t1, away.join("t1.flac")).unwrap();
    std::fs::rename(album.join("gone-album"), away.join("gone-album")).unwrap();
    std::fs::rename(other.join("u.flac"), away.join("u.flac")).unwrap();
    std::fs::rename(album.join("nas/x"), away.join("x")).unwrap();
    let (s, err) = pass();
    assert_eq!(n(&s, "missing"), 2, "t1 and g: {s:#}\n{err}");
    assert_eq!(n(&s, "missing_in_db"), 2, "{s:#}");
    assert!(err.contains("an unmounted disk?"), "{err}");
    assert!(err.contains("2 tracks found gone"), "{err}");
    assert!(stored(&db, &g)["missing_since"].as_i64().is_some());
    let below_empty = stored(&db, &album.join("nas/x/n.flac"));
    assert!(below_empty["missing_since"].is_null(), "{below_empty:#}");
    let row = stored(&db, &t1);
    assert_eq!(row["status"], "analyzed", "the analysis is kept: {row:#}");
    assert!(row["missing_since"].as_i64().is_some(), "{row:#}");
    assert!(stored(&db, &other.join("u.flac"))["missing_since"].is_null());
    let (_, text) = trackmill(&["show", t1.to_str().unwrap(), "--db", &url]);
    assert!(
        text.contains("missing (file gone; stored as analyzed)"),
        "{text}"
    );
    let counts = trackmill_dbwriter::counts(&trackmill_dbwriter::DbUrl::parse(&url).unwrap());
    assert_eq!(counts.unwrap()["missing"], 2);

    // Back with the same size and time: unmarked, and not analysed again.
    std::fs::rename(away.join("t1.flac"), &t1).unwrap();
    let (s, _) = pass();
    assert_eq!(n(&s, "analyzed"), 0, "{s:#}");
    assert_eq!(n(&s, "skipped_unchanged"), 4, "{s:#}");
    assert_eq!(n(&s, "missing_in_db"), 1, "g is still away: {s:#}");
    assert!(stored(&db, &t1)["missing_since"].is_null());

    // Gone for good: never returned by a query, then pruned.
    std::fs::remove_file(&t1).unwrap();
    let (s, _) = pass();
    assert_eq!(n(&s, "missing"), 1, "{s:#}");
    let seed = album.join("t0.flac");
    let v = trackmill_json([
        "similar",
        seed.to_str().unwrap(),
        "-n",
        "10",
        "--per-artist",
        "0",
        "--json",
        "--db",
        &url,
    ]);
    let near: Vec<PathBuf> = tracks(&v).iter().map(path_of).collect();
    // u.flac is still away: not marked (its root looked unmounted), but no query returns a
    // file that does not exist.
    assert_eq!(near.len(), 2, "t2 and t3: {near:?}");
    assert!(!near.contains(&t1), "{near:?}");
    let (code, text) = trackmill(&["prune", "--dry-run", "--db", &url]);
    assert_eq!(
        (code, text.trim()),
        (Some(0), "2 missing tracks would be deleted")
    );
    // The album folder is back before the prune: it looks again, and keeps it.
    std::fs::rename(away.join("gone-album"), album.join("gone-album")).unwrap();
    let (code, text) = trackmill(&["prune", "--db", &url]);
    assert_eq!((code, text.trim()), (Some(0), "1 missing tracks deleted"));
    assert!(stored(&db, &t1).is_null());
    let kept = stored(&db, &g);
    assert_eq!(kept["status"], "analyzed", "{kept:#}");
    assert!(kept["missing_since"].is_null(), "{kept:#}");
    let (code, _) = trackmill(&["show", t1.to_str().unwrap(), "--db", &url]);
    assert_eq!(code, Some(5), "nothing stored any more");
    let (_, text) = trackmill(&["prune", "--db", &url]);
    assert_eq!(text.trim(), "0 missing tracks deleted");
}

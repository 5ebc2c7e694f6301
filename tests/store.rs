//! A record the database refuses costs one file, never its batch, the DB writer or the run: the
//! real binary scans, into SQLite and into the real PostgreSQL server, a library whose batch holds
//! a 3,000-byte random CJK artist tag, a path of about 3,000 random bytes, an ordinary file, and a
//! file whose analysed row a constraint the test adds refuses.

use rand::Rng;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use trackmill_e2e::pgserver::PgSchema;
use trackmill_e2e::*;

/// `n` random CJK ideographs (3 bytes each in UTF-8; random, so they do not compress).
fn random_cjk(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_u32(rng.random_range(0x4E00..0x9FA5)).unwrap())
        .collect()
}

/// A directory chain of random non-UTF-8 names, about `bytes` long in all.
fn deep_random_dir(root: &Path, bytes: usize) -> PathBuf {
    let mut rng = rand::rng();
    let mut dir = root.to_path_buf();
    while dir.as_os_str().len() < bytes {
        let name: Vec<u8> = (0..200).map(|_| rng.random_range(0x80u8..=0xFF)).collect();
        dir.push(std::ffi::OsStr::from_bytes(&name));
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Library {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ordinary: PathBuf,
    long_artist: PathBuf,
    long_path: PathBuf,
    poison: PathBuf,
    config: PathBuf,
}

fn library() -> Library {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    std::fs::create_dir(&dir).unwrap();
    let ordinary = dir.join("ordinary.flac");
    tone(&ordinary, 440, 2);
    let src = dir.join("src.mp3");
    tone(&src, 330, 2);
    let long_artist = dir.join("long-artist.mp3");
    let artist = random_cjk(1000);
    assert_eq!(artist.len(), 3000);
    let st = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(&src)
        .args(["-metadata", &format!("artist={artist}"), "-c", "copy"])
        .arg(&long_artist)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(&src).unwrap();
    let long_path = deep_random_dir(&dir, 3000).join("t.flac");
    tone(&long_path, 550, 2);
    assert!(long_path.as_os_str().len() >= 3000);
    let poison = dir.join("poison.flac");
    tone(&poison, 660, 2);
    let config = tmp.path().join("trackmill.toml");
    std::fs::write(&config, "[analysis]\nmodels = []\n").unwrap();
    Library {
        _tmp: tmp,
        dir,
        ordinary,
        long_artist,
        long_path,
        poison,
        config,
    }
}

/// Scans `lib` into `url` twice (the constraint added by `refuse` before the first) and checks
/// that only the refused file is lost to the constraint and nothing else.
fn one_poison_record_costs_one_file(url: &str, refuse: impl FnOnce()) {
    let lib = library();
    let summary = lib.dir.with_extension("summary.json");
    let extra = ["--workers", "2", "--config", lib.config.to_str().unwrap()];
    // An empty first run creates the schema, so the test can add its constraint.
    let empty = lib.dir.parent().unwrap().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (out, _) = scan_url(&empty, url, &summary, &extra, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refuse();

    let (out, s) = scan_url(&lib.dir, url, &summary, &extra, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(s["status"], "completed", "{s:#}\n{err}");
    assert_accounted(&s);
    assert_eq!(n(&s, "files_seen"), 4, "{s:#}");
    assert_eq!(n(&s, "analyzed"), 3, "{s:#}\n{err}");
    assert_eq!(s["failed"]["store"], 1, "{s:#}");
    assert_eq!(
        n(&s, "db_writer_restarts"),
        0,
        "the writer never died: {s:#}"
    );
    for f in [&lib.ordinary, &lib.long_artist, &lib.long_path] {
        let row = stored_url(url, f);
        assert_eq!(row["status"], "analyzed", "{}: {row:#}", f.display());
    }
    let row = stored_url(url, &lib.long_artist);
    let artists = row["artists"].to_string();
    assert!(artists.len() > 1000, "the long artist is stored: {row:#}");
    // Cut at 1,024 bytes on a character boundary, and flagged.
    let artist = row["artists"][0].as_str().unwrap();
    assert!(artist.len() <= 1024 && artist.len() > 1000, "{artist}");
    assert!(
        row["tags_truncated"] == true || row["tags_truncated"] == 1,
        "{row:#}"
    );
    let poison = stored_url(url, &lib.poison);
    assert_eq!(poison["status"], "failed", "{poison:#}");
    assert_eq!(poison["failure_class"], "store", "{poison:#}");
    assert_eq!(poison["failure_stage"], "store", "{poison:#}");
    assert!(
        poison["failure_message"]
            .as_str()
            .unwrap()
            .contains("refused_for_the_test"),
        "the database's message: {poison:#}"
    );

    // The database is the checkpoint: nothing is analysed again.
    let (out, again) = scan_url(&lib.dir, url, &summary, &extra, &[]);
    assert!(out.status.success());
    assert_eq!(n(&again, "analyzed"), 0, "{again:#}");
    assert_eq!(n(&again, "skipped_unchanged"), 4, "{again:#}");
}

#[test]
fn sqlite_a_refused_record_costs_one_file() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("t.db");
    let url = format!("sqlite://{}", db.display());
    one_poison_record_costs_one_file(&url, || {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON tracks \
                 WHEN NEW.status = 'analyzed' AND NEW.display_path LIKE '%poison%' \
                 BEGIN SELECT RAISE(ABORT, 'refused_for_the_test'); END;",
            )
            .unwrap();
    });
}

#[test]
fn postgres_a_refused_record_costs_one_file() {
    let schema = PgSchema::new("store");
    one_poison_record_costs_one_file(&schema.url(), || {
        schema.rows(
            "ALTER TABLE tracks ADD CONSTRAINT refused_for_the_test \
             CHECK (status <> 'analyzed' OR display_path NOT LIKE '%poison%')",
        );
    });
}

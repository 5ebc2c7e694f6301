//! Extended M3U8 playlists as players and music servers read them: `#EXTM3U`, then per entry
//! `#EXTINF:<seconds>,<artist> - <title>` and the path, absolute or relative to a directory (the
//! server's playlist folder), written atomically (a temporary file in the destination's
//! directory, flushed to disk, renamed over the destination), so a server scanning the folder
//! never reads half a playlist. Paths are written as their bytes; one that is not UTF-8 is
//! counted so the caller can warn.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One playlist entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// Absolute path of the file.
    pub path: PathBuf,
    pub duration_s: Option<f64>,
    pub artist: Option<String>,
    pub title: Option<String>,
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: usize,
    /// Paths written as bytes that are not UTF-8 (some players will not resolve them).
    pub non_utf8: usize,
    /// Paths left out because a line break in them cannot be written in a playlist.
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum M3uError {
    #[error("{0} is not absolute")]
    NotAbsolute(PathBuf),
    #[error("cannot resolve the playlist directory {0}: {1}")]
    Base(PathBuf, std::io::Error),
    #[error("cannot write the playlist {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Text for the `#EXTINF` title: line breaks and commas' neighbours kept readable.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn label(e: &Entry) -> String {
    let title = e
        .title
        .as_deref()
        .map(one_line)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            e.path
                .file_stem()
                .map(|s| one_line(&s.to_string_lossy()))
                .unwrap_or_default()
        });
    match e.artist.as_deref().map(one_line).filter(|a| !a.is_empty()) {
        Some(a) => format!("{a} - {title}"),
        None => title,
    }
}

/// The playlist's bytes. With `relative_to` (an absolute directory), paths are written relative
/// to it (`../` where needed); the caller resolves symbolic links in it first.
pub fn render(
    entries: &[Entry],
    relative_to: Option<&Path>,
) -> Result<(Vec<u8>, Report), M3uError> {
    if let Some(base) = relative_to {
        if !base.is_absolute() {
            return Err(M3uError::NotAbsolute(base.to_path_buf()));
        }
    }
    let mut out = b"#EXTM3U\n".to_vec();
    let mut report = Report::default();
    for e in entries {
        if !e.path.is_absolute() {
            return Err(M3uError::NotAbsolute(e.path.clone()));
        }
        let written = match relative_to {
            Some(base) => pathdiff::diff_paths(&e.path, base).unwrap_or_else(|| e.path.clone()),
            None => e.path.clone(),
        };
        let bytes = written.as_os_str().as_bytes();
        if bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
            report.skipped += 1;
            continue;
        }
        if std::str::from_utf8(bytes).is_err() {
            report.non_utf8 += 1;
        }
        let secs = e
            .duration_s
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map_or(-1, |d| d.round() as i64);
        out.extend_from_slice(format!("#EXTINF:{secs},{}\n", label(e)).as_bytes());
        out.extend_from_slice(bytes);
        out.push(b'\n');
        report.entries += 1;
    }
    Ok((out, report))
}

/// Renders and writes the playlist atomically to `dest`.
pub fn write(
    dest: &Path,
    entries: &[Entry],
    relative_to: Option<&Path>,
) -> Result<Report, M3uError> {
    let (bytes, report) = render(entries, relative_to)?;
    let werr = |e| M3uError::Write(dest.to_path_buf(), e);
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".trackmill-")
        .suffix(".m3u8.tmp")
        .tempfile_in(&dir)
        .map_err(werr)?;
    tmp.write_all(&bytes).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(dest).map_err(|e| werr(e.error))?;
    // The rename itself is durable once the directory is.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn entry(p: &str, d: Option<f64>, a: Option<&str>, t: Option<&str>) -> Entry {
        Entry {
            path: PathBuf::from(p),
            duration_s: d,
            artist: a.map(str::to_owned),
            title: t.map(str::to_owned),
        }
    }

    #[test]
    fn extended_format_absolute_and_relative() {
        let es = [
            entry(
                "/music/A/one.flac",
                Some(241.6),
                Some("Artist"),
                Some("One"),
            ),
            entry("/music/B/two.mp3", None, None, None),
            entry("/other/three.ogg", Some(3.0), Some("X\nY"), Some("Li,ne")),
        ];
        let (abs, r) = render(&es, None).unwrap();
        assert_eq!(
            String::from_utf8(abs).unwrap(),
            "#EXTM3U\n#EXTINF:242,Artist - One\n/music/A/one.flac\n#EXTINF:-1,two\n/music/B/two.mp3\n\
             #EXTINF:3,X Y - Li,ne\n/other/three.ogg\n"
        );
        assert_eq!(
            r,
            Report {
                entries: 3,
                non_utf8: 0,
                skipped: 0
            }
        );
        let (rel, _) = render(&es, Some(Path::new("/music/playlists"))).unwrap();
        let rel = String::from_utf8(rel).unwrap();
        let paths: Vec<&str> = rel.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            paths,
            ["../A/one.flac", "../B/two.mp3", "../../other/three.ogg"]
        );
        assert!(render(&es, Some(Path::new("rel"))).is_err());
        assert!(render(&[entry("x.mp3", None, None, None)], None).is_err());
    }

    #[test]
    fn non_utf8_paths_are_bytes_and_line_breaks_are_left_out() {
        let raw = PathBuf::from(OsStr::from_bytes(b"/m/caf\xe9.mp3"));
        let broken = PathBuf::from("/m/a\nb.mp3");
        let es = [
            Entry {
                path: raw,
                ..Entry::default()
            },
            Entry {
                path: broken,
                ..Entry::default()
            },
        ];
        let (bytes, r) = render(&es, None).unwrap();
        let want = b"\n/m/caf\xe9.mp3\n";
        assert!(bytes.windows(want.len()).any(|w| w == want));
        assert_eq!(
            r,
            Report {
                entries: 1,
                non_utf8: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn writes_atomically_over_an_existing_playlist() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("mix.m3u8");
        std::fs::write(&dest, b"old").unwrap();
        let es = [entry("/a/b.flac", Some(1.0), Some("A"), Some("B"))];
        let r = write(&dest, &es, None).unwrap();
        assert_eq!(r.entries, 1);
        assert!(std::fs::read_to_string(&dest)
            .unwrap()
            .starts_with("#EXTM3U\n#EXTINF:1,A - B\n"));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        let err = write(&dir.path().join("no/such/dir/x.m3u8"), &es, None).unwrap_err();
        assert!(err.to_string().contains("cannot write the playlist"));
    }
}

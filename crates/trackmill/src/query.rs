//! The similarity queries shared by the `similar`, `path` and `mix` commands and the HTTP API:
//! one code path from the database to the answer, whichever front end asks. Each query streams
//! from the database in bounded chunks, first an evenly spread sample of at most 50,000 tracks
//! for the library statistics the vectors are standardised against, then the whole library for
//! the query itself, so memory stays O(k + chunk) whatever the library size. An [`Answer`] is
//! rendered as JSON, as a table or as extended M3U8 entries.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use trackmill_dbwriter::{DbUrl, StoredTrack, TrackReader};
use trackmill_similarity::{
    group_key, m3u, Descriptor, Key, LibraryStats, MixBuilder, MixInfo, MixOptions, PathFinder,
    Space, TopK,
};

/// Rows read from the database at a time.
const CHUNK: usize = 2000;
/// The library statistics come from at most about this many tracks, evenly spread by row id: the
/// standard error of a standard deviation estimated from 50,000 values is 0.3 %, which moves no
/// ranking, and the statistics pass then costs the same at 100,000 tracks as at 10 million.
const STATS_SAMPLE: u64 = 50_000;
/// Embeddings the vectors are built from, beside the features.
const FINGERPRINT: &str = "trackmill-dsp-v1";
const PITCH_CLASS: &str = "basic-pitch/pitch-class12";

/// Why a query has no answer.
#[derive(Debug)]
pub enum QueryError {
    /// No analysed track is stored for this path.
    NotFound(PathBuf),
    /// The database could not be read.
    Db(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::NotFound(p) => write!(f, "no analysed track stored for {}", p.display()),
            QueryError::Db(e) => f.write_str(e),
        }
    }
}

fn db_error(e: impl std::fmt::Display) -> QueryError {
    QueryError::Db(e.to_string())
}

/// What is shown and written for a track.
#[derive(Clone, Debug)]
pub struct Meta {
    id: i64,
    pub path: Vec<u8>,
    artist: Option<String>,
    title: Option<String>,
    album: Option<String>,
    duration_s: Option<f64>,
    bpm: f32,
    key: Key,
}

impl Meta {
    fn new(t: &StoredTrack, d: &Descriptor) -> Meta {
        Meta {
            id: t.id,
            path: t.path.clone(),
            artist: t.artist.clone().or_else(|| t.album_artist.clone()),
            title: t.title.clone(),
            album: t.album.clone(),
            duration_s: t.duration_s,
            bpm: d.bpm,
            key: d.key,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "path": String::from_utf8_lossy(&self.path),
            "path_hex": self.path.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "artist": self.artist,
            "title": self.title,
            "album": self.album,
            "duration_s": self.duration_s,
            "bpm": self.bpm,
            "key": self.key.tonic,
            "mode": if self.key.minor { "minor" } else { "major" },
            "camelot": self.key.camelot(),
        })
    }

    pub fn line(&self) -> String {
        let who = match (&self.artist, &self.title) {
            (Some(a), Some(t)) => format!("{a} - {t}"),
            (None, Some(t)) => t.clone(),
            (Some(a), None) => a.clone(),
            (None, None) => String::new(),
        };
        format!(
            "{:>6.1} BPM {:>3}  {who}  {}",
            self.bpm,
            self.key.camelot(),
            String::from_utf8_lossy(&self.path)
        )
    }

    fn mix_info(&self, t: &StoredTrack) -> MixInfo {
        let artist = self.artist.as_deref().and_then(group_key);
        let album = t.album.as_deref().and_then(group_key).map(|al| {
            let by = t
                .album_artist
                .as_deref()
                .or(t.artist.as_deref())
                .and_then(group_key);
            format!("{}\u{1f}{al}", by.unwrap_or_default())
        });
        MixInfo {
            id: t.id,
            artist,
            album,
            key: self.key,
            bpm: self.bpm,
        }
    }

    pub fn entry(&self) -> m3u::Entry {
        m3u::Entry {
            path: PathBuf::from(OsStr::from_bytes(&self.path)),
            duration_s: self.duration_s,
            artist: self.artist.clone(),
            title: self.title.clone(),
        }
    }
}

/// One listed track: the distance the table shows (to the seed, to TO, to the seeds) and the
/// JSON fields beside the track's own.
pub struct Listed {
    pub meta: Meta,
    pub shown: f32,
    pub extra: Value,
}

fn exists(path: &[u8]) -> bool {
    Path::new(OsStr::from_bytes(path)).exists()
}

/// What a query leaves out besides the seeds and files that are gone (the Bliss Mixer
/// parameters; the commands leave out nothing more).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Paths never returned (a player's queue).
    pub exclude: HashSet<Vec<u8>>,
    /// Shortest and longest duration returned, in seconds.
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// Largest tempo difference, in BPM, from at least one seed.
    pub max_bpm_diff: Option<f32>,
    /// `similar`: only tracks by the seed's artist.
    pub seed_artist_only: bool,
}

/// The artist a track is grouped under (first artist, else album artist).
fn artist_group(t: &StoredTrack) -> Option<String> {
    t.artist
        .as_deref()
        .or(t.album_artist.as_deref())
        .and_then(group_key)
}

impl Filter {
    fn admits(&self, t: &StoredTrack, d: &Descriptor, seed_bpms: &[f32]) -> bool {
        let dur = t.duration_s.unwrap_or(0.0);
        self.min_s.is_none_or(|m| dur >= m)
            && self.max_s.is_none_or(|m| dur <= m)
            && self
                .max_bpm_diff
                .is_none_or(|m| seed_bpms.iter().any(|b| (d.bpm - b).abs() <= m))
            && !self.exclude.contains(&t.path)
    }
}

/// An open library: the reader, the vector space and the library's statistics.
pub struct Library {
    reader: TrackReader,
    space: Space,
    stats: LibraryStats,
}

impl Library {
    /// Opens the library as the commands do (applying migrations, like every writer-side open),
    /// for queries in `space` (see `models::similarity_space`).
    pub fn open(url: &DbUrl, space: Space) -> Result<Library, QueryError> {
        Self::with_reader(space, |models| TrackReader::open(url, models))
    }

    /// Opens the library read-only (the API server).
    pub fn open_read_only(url: &DbUrl, space: Space) -> Result<Library, QueryError> {
        Self::with_reader(space, |models| TrackReader::open_read_only(url, models))
    }

    fn with_reader(
        space: Space,
        open: impl FnOnce(&[&str]) -> Result<TrackReader, trackmill_dbwriter::DbError>,
    ) -> Result<Library, QueryError> {
        let mut models = vec![FINGERPRINT, PITCH_CLASS];
        models.extend(space.embeddings.iter().map(|e| e.name.as_str()));
        let mut reader = open(&models).map_err(db_error)?;
        let mut stats = LibraryStats::default();
        let stride = reader.count().map_err(db_error)?.div_ceil(STATS_SAMPLE);
        reader
            .for_each_every(CHUNK, stride, &mut |t| {
                if let Some(d) = space.describe(&t.analysis) {
                    stats.push(&d.raw);
                }
            })
            .map_err(db_error)?;
        Ok(Library {
            reader,
            space,
            stats,
        })
    }

    /// A seed: its stored track, descriptor and vector. A relative path is taken from the
    /// current directory (the commands; the API resolves paths before it asks).
    fn seed(&mut self, file: &Path) -> Result<(Meta, StoredTrack, Vec<f32>), QueryError> {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let found = self
            .reader
            .track(abs.as_os_str().as_bytes())
            .map_err(db_error)?;
        let Some((t, d)) = found.and_then(|t| self.space.describe(&t.analysis).map(|d| (t, d)))
        else {
            return Err(QueryError::NotFound(abs));
        };
        let v = self.space.vector(&d, &self.stats);
        Ok((Meta::new(&t, &d), t, v))
    }

    /// Every analysed track with its descriptor and vector.
    fn each(
        &mut self,
        f: &mut dyn FnMut(&StoredTrack, &Descriptor, &[f32]),
    ) -> Result<(), QueryError> {
        let (space, stats) = (&self.space, &self.stats);
        self.reader
            .for_each(CHUNK, &mut |t| {
                if let Some(d) = space.describe(&t.analysis) {
                    let v = space.vector(&d, stats);
                    f(t, &d, &v);
                }
            })
            .map(|_| ())
            .map_err(db_error)
    }
}

/// A query's answer: `head` (the seeds and what was asked), the listed tracks, and the playlist
/// (`before`, the listed tracks, `after`: a path's ends, a mix's seeds).
pub struct Answer {
    head: Value,
    pub tracks: Vec<Listed>,
    before: Vec<Meta>,
    after: Vec<Meta>,
}

impl Answer {
    /// `head` with a `tracks` array: each track's fields and its distances.
    pub fn json(&self) -> Value {
        let list: Vec<Value> = self
            .tracks
            .iter()
            .map(|l| {
                let mut v = l.meta.json();
                if let (Some(o), Some(e)) = (v.as_object_mut(), l.extra.as_object()) {
                    o.extend(e.clone());
                }
                v
            })
            .collect();
        let mut head = self.head.clone();
        head["tracks"] = Value::Array(list);
        head
    }

    /// One line per listed track, as the commands print them.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (i, l) in self.tracks.iter().enumerate() {
            out += &format!("{:>3}  {:>7.3}  {}\n", i + 1, l.shown, l.meta.line());
        }
        out
    }

    /// The playlist's entries, in play order.
    pub fn entries(&self) -> Vec<m3u::Entry> {
        let listed = self.tracks.iter().map(|l| &l.meta);
        self.before
            .iter()
            .chain(listed)
            .chain(&self.after)
            .map(Meta::entry)
            .collect()
    }
}

/// The `n` tracks nearest to `file`, at most `per_artist` per artist (0: no cap).
pub fn similar(
    lib: &mut Library,
    file: &Path,
    n: usize,
    per_artist: usize,
    filter: &Filter,
) -> Result<Answer, QueryError> {
    let (seed, _, sv) = lib.seed(file)?;
    let bpms = [seed.bpm];
    let seed_group = seed.artist.as_deref().and_then(group_key);
    let mut top: TopK<Meta> = TopK::new(n, (per_artist > 0).then_some(per_artist));
    lib.each(&mut |t, d, v| {
        if t.id == seed.id || (filter.seed_artist_only && artist_group(t) != seed_group) {
            return;
        }
        let dist = trackmill_similarity::distance(v, &sv);
        if top.admits(dist, t.id) && filter.admits(t, d, &bpms) && exists(&t.path) {
            let m = Meta::new(t, d);
            let group = m.artist.as_deref().and_then(group_key);
            top.push(dist, t.id, group, m);
        }
    })?;
    let tracks = top
        .into_sorted()
        .into_iter()
        .map(|h| Listed {
            extra: json!({"distance": h.distance}),
            shown: h.distance,
            meta: h.item,
        })
        .collect();
    Ok(Answer {
        head: json!({"seed": seed.json()}),
        tracks,
        before: Vec::new(),
        after: Vec::new(),
    })
}

/// A song path from `from` to `to` with at most `steps` tracks between them.
pub fn path(lib: &mut Library, from: &Path, to: &Path, steps: usize) -> Result<Answer, QueryError> {
    let (a, _, av) = lib.seed(from)?;
    let (b, _, bv) = lib.seed(to)?;
    let mut pf: PathFinder<Meta> = PathFinder::new((a.id, &av), (b.id, &bv), steps, steps + 8);
    lib.each(&mut |t, d, v| {
        pf.offer(t.id, v, || exists(&t.path).then(|| Meta::new(t, d)));
    })?;
    let start = trackmill_similarity::distance(&av, &bv);
    let tracks = pf
        .finish()
        .into_iter()
        .map(|s| {
            let extra = json!({"distance_to_destination": s.to_destination,
                               "distance_to_line": s.off_line});
            Listed {
                meta: s.item,
                shown: s.to_destination,
                extra,
            }
        })
        .collect();
    Ok(Answer {
        head: json!({"from": a.json(), "to": b.json(), "distance": start}),
        tracks,
        before: vec![a],
        after: vec![b],
    })
}

/// An instant mix of `length` tracks that follows `seeds`.
pub fn mix(
    lib: &mut Library,
    seeds: &[PathBuf],
    length: usize,
    harmonic: bool,
    filter: &Filter,
) -> Result<Answer, QueryError> {
    let mut metas = Vec::new();
    let mut infos = Vec::new();
    for s in seeds {
        let (m, t, v) = lib.seed(s)?;
        infos.push((m.mix_info(&t), v));
        metas.push(m);
    }
    let bpms: Vec<f32> = metas.iter().map(|m| m.bpm).collect();
    let opts = MixOptions {
        length,
        harmonic,
        ..MixOptions::default()
    };
    let mut mb: MixBuilder<Meta> = MixBuilder::new(infos, opts);
    lib.each(&mut |t, d, v| {
        if !filter.admits(t, d, &bpms) {
            return;
        }
        let m = Meta::new(t, d);
        let info = m.mix_info(t);
        mb.offer(info, v, || exists(&t.path).then_some(m));
    })?;
    let tracks = mb
        .finish()
        .into_iter()
        .map(|e| Listed {
            extra: json!({"seed_distance": e.seed_distance}),
            shown: e.seed_distance,
            meta: e.item,
        })
        .collect();
    let head =
        json!({"seeds": metas.iter().map(Meta::json).collect::<Vec<_>>(), "harmonic": harmonic});
    Ok(Answer {
        head,
        tracks,
        before: metas,
        after: Vec::new(),
    })
}

//! The similarity queries shared by the `similar`, `path` and `mix` commands and the HTTP API:
//! one code path from the database to the answer, whichever front end asks. A query reads the
//! library statistics (one small read: the database keeps them up to date with every store),
//! then streams every analysed track's stored similarity row in windows of row ids, building
//! each vector in one buffer; path and tags are looked up only for the tracks a query keeps.
//! Memory stays O(k + window) whatever the library size. An [`Answer`] is rendered as JSON, as
//! a table or as extended M3U8 entries.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use trackmill_dbwriter::{DbUrl, TrackMeta, TrackReader};
use trackmill_similarity::{
    m3u, Key, LibraryStandard, MixBuilder, MixInfo, MixOptions, PathFinder, Space, StoredView, TopK,
};

/// Row ids per window read from the database.
const WINDOW: i64 = 2000;

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
    fn new(t: TrackMeta, s: &StoredView<'_>) -> Meta {
        Meta {
            id: t.id,
            path: t.path,
            artist: t.artist.or(t.album_artist),
            title: t.title,
            album: t.album,
            duration_s: t.duration_s,
            bpm: s.bpm(),
            key: s.key(),
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

    pub fn entry(&self) -> m3u::Entry {
        m3u::Entry {
            path: PathBuf::from(OsStr::from_bytes(&self.path)),
            duration_s: self.duration_s,
            artist: self.artist.clone(),
            title: self.title.clone(),
        }
    }
}

/// What a mix groups and matches a track by, from its stored row.
fn mix_info(id: i64, s: &StoredView<'_>) -> MixInfo {
    MixInfo {
        id,
        artist: s.artist().map(str::to_owned),
        album: s.album().map(str::to_owned),
        key: s.key(),
        bpm: s.bpm(),
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

impl Filter {
    /// What can be decided from the stored row.
    fn admits(&self, s: &StoredView<'_>, seed_bpms: &[f32]) -> bool {
        let dur = s.duration_s().unwrap_or(0.0);
        self.min_s.is_none_or(|m| dur >= m)
            && self.max_s.is_none_or(|m| dur <= m)
            && self
                .max_bpm_diff
                .is_none_or(|m| seed_bpms.iter().any(|b| (s.bpm() - b).abs() <= m))
    }
}

/// Looks up path and tags of the tracks a query keeps, while the library streams by.
struct Lookup<'r> {
    reader: &'r mut TrackReader,
    error: Option<QueryError>,
}

impl Lookup<'_> {
    /// The track as shown, when its file is still there and `filter` does not exclude it.
    fn keep(&mut self, id: i64, s: &StoredView<'_>, filter: &Filter) -> Option<Meta> {
        if self.error.is_some() {
            return None;
        }
        match self.reader.meta(id) {
            Ok(Some(t)) if !filter.exclude.contains(&t.path) && exists(&t.path) => {
                Some(Meta::new(t, s))
            }
            Ok(_) => None,
            Err(e) => {
                self.error = Some(db_error(e));
                None
            }
        }
    }
}

/// What [`Library::each`] calls for every track: a [`Lookup`], the row id, the stored row and
/// the vector.
type Visit<'f> = dyn FnMut(&mut Lookup<'_>, i64, &StoredView<'_>, &[f32]) + 'f;

/// A seed: what is shown, what a mix groups and matches it by, and its vector.
struct Seed {
    meta: Meta,
    info: MixInfo,
    vector: Vec<f32>,
}

/// An open library: the reader, the vector space and the library's statistics.
pub struct Library {
    reader: TrackReader,
    space: Space,
    stats: LibraryStandard,
}

impl Library {
    /// Opens the library as the commands do (applying migrations, like every writer-side open),
    /// for queries in `space` (see `models::similarity_space`).
    pub fn open(url: &DbUrl, space: Space) -> Result<Library, QueryError> {
        Self::with_reader(space, TrackReader::open(url).map_err(db_error)?)
    }

    /// Opens the library read-only (the API server).
    pub fn open_read_only(url: &DbUrl, space: Space) -> Result<Library, QueryError> {
        Self::with_reader(space, TrackReader::open_read_only(url).map_err(db_error)?)
    }

    fn with_reader(space: Space, mut reader: TrackReader) -> Result<Library, QueryError> {
        let stats = reader.stats().map_err(db_error)?.standard();
        Ok(Library {
            reader,
            space,
            stats,
        })
    }

    /// A seed. A relative path is taken from the current directory (the commands; the API
    /// resolves paths before it asks).
    fn seed(&mut self, file: &Path) -> Result<Seed, QueryError> {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let found = self
            .reader
            .seed(abs.as_os_str().as_bytes())
            .map_err(db_error)?;
        let Some((t, data)) = found else {
            return Err(QueryError::NotFound(abs));
        };
        let Some(view) = StoredView::parse(&data) else {
            return Err(QueryError::NotFound(abs));
        };
        let mut vector = Vec::new();
        self.space.vector_stored(&view, &self.stats, &mut vector);
        let info = mix_info(t.id, &view);
        let meta = Meta::new(t, &view);
        Ok(Seed { meta, info, vector })
    }

    /// Every analysed track whose file is not marked missing: its id, stored row and vector,
    /// with a [`Lookup`] for the tracks the caller keeps. A row that does not parse is skipped.
    fn each(&mut self, f: &mut Visit<'_>) -> Result<(), QueryError> {
        let Some((first, last)) = self.reader.bounds().map_err(db_error)? else {
            return Ok(());
        };
        let mut v = Vec::with_capacity(self.space.dims());
        let mut start = first - 1;
        while start < last {
            let end = start.saturating_add(WINDOW);
            let rows = self.reader.window(start, end).map_err(db_error)?;
            let mut lookup = Lookup {
                reader: &mut self.reader,
                error: None,
            };
            for r in &rows {
                if let Some(s) = StoredView::parse(&r.data) {
                    self.space.vector_stored(&s, &self.stats, &mut v);
                    f(&mut lookup, r.id, &s, &v);
                }
            }
            if let Some(e) = lookup.error {
                return Err(e);
            }
            start = end;
        }
        Ok(())
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
    let seed = lib.seed(file)?;
    let bpms = [seed.meta.bpm];
    let seed_group = seed.info.artist.as_deref();
    let mut top: TopK<Meta> = TopK::new(n, (per_artist > 0).then_some(per_artist));
    lib.each(&mut |lookup, id, s, v| {
        if id == seed.meta.id || (filter.seed_artist_only && s.artist() != seed_group) {
            return;
        }
        let dist = trackmill_similarity::distance(v, &seed.vector);
        if top.admits(dist, id) && filter.admits(s, &bpms) {
            if let Some(m) = lookup.keep(id, s, filter) {
                top.push(dist, id, s.artist().map(str::to_owned), m);
            }
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
        head: json!({"seed": seed.meta.json()}),
        tracks,
        before: Vec::new(),
        after: Vec::new(),
    })
}

/// A song path from `from` to `to` with at most `steps` tracks between them.
pub fn path(lib: &mut Library, from: &Path, to: &Path, steps: usize) -> Result<Answer, QueryError> {
    let a = lib.seed(from)?;
    let b = lib.seed(to)?;
    let mut pf: PathFinder<Meta> = PathFinder::new(
        (a.meta.id, &a.vector),
        (b.meta.id, &b.vector),
        steps,
        steps + 8,
    );
    let none = Filter::default();
    lib.each(&mut |lookup, id, s, v| {
        pf.offer(id, v, || lookup.keep(id, s, &none));
    })?;
    let start = trackmill_similarity::distance(&a.vector, &b.vector);
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
        head: json!({"from": a.meta.json(), "to": b.meta.json(), "distance": start}),
        tracks,
        before: vec![a.meta],
        after: vec![b.meta],
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
        let seed = lib.seed(s)?;
        infos.push((seed.info, seed.vector));
        metas.push(seed.meta);
    }
    let bpms: Vec<f32> = metas.iter().map(|m| m.bpm).collect();
    let opts = MixOptions {
        length,
        harmonic,
        ..MixOptions::default()
    };
    let mut mb: MixBuilder<Meta> = MixBuilder::new(infos, opts);
    lib.each(&mut |lookup, id, s, v| {
        if filter.admits(s, &bpms) {
            mb.offer(mix_info(id, s), v, || lookup.keep(id, s, filter));
        }
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

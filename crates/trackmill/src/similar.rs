//! `similar`, `path` and `mix`: similarity queries over the stored analysis. Each streams from
//! the database in bounded chunks, first an evenly spread sample of at most 50,000 tracks for
//! the library statistics the vectors are standardised against, then the whole library for the
//! query itself, so memory stays O(k + chunk) whatever the library size; results can also be
//! written as an extended M3U8 playlist.

use crate::cli::{exit, load_config, CliError, CliResult, Overrides};
use crate::{db_url, DB_URL_ENV};
use clap::Subcommand;
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use trackmill_dbwriter::{StoredTrack, TrackReader};
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

/// Where to read and how to answer.
#[derive(clap::Args)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// `sqlite://PATH` or `postgres://…` (default: `database.url` of --config, else the
    /// embedded default database).
    #[arg(long, env = DB_URL_ENV, hide_env_values = true)]
    db: Option<String>,
    /// The configuration file whose `database.url` to read.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also write the tracks as an extended M3U8 playlist (replaced atomically).
    #[arg(long)]
    m3u: Option<PathBuf>,
    /// Write the playlist's paths relative to this directory (a music server's playlist folder)
    /// instead of absolute.
    #[arg(long, requires = "m3u")]
    relative_to: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum SimilarCmd {
    /// The tracks nearest to FILE (never FILE itself, never a file that is gone).
    Similar {
        /// A file a scan stored as analysed.
        file: PathBuf,
        /// How many tracks.
        #[arg(short = 'n', long = "count", default_value_t = 20)]
        n: usize,
        /// At most this many tracks per artist.
        #[arg(long, default_value_t = 2)]
        per_artist: usize,
        #[command(flatten)]
        out: Output,
    },
    /// A song path from FROM to TO: each step closer to TO, no track twice.
    Path {
        /// Where the path starts (an analysed file).
        from: PathBuf,
        /// Where it ends.
        to: PathBuf,
        /// Tracks between FROM and TO at most.
        #[arg(long, default_value_t = 12)]
        steps: usize,
        #[command(flatten)]
        out: Output,
    },
    /// An instant mix that follows the seeds: no artist twice in a row, no album more than twice.
    Mix {
        /// Analyzed files the mix follows, in play order.
        #[arg(required = true)]
        seeds: Vec<PathBuf>,
        /// Tracks in the mix (seeds not counted).
        #[arg(long, default_value_t = 50)]
        length: usize,
        /// Only keys compatible on the circle of fifths and tempos within ±8 % (or double/half)
        /// of the previous track.
        #[arg(long)]
        harmonic: bool,
        #[command(flatten)]
        out: Output,
    },
}

/// What is shown and written for a track.
#[derive(Clone, Debug)]
struct Meta {
    id: i64,
    path: Vec<u8>,
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

    fn json(&self) -> Value {
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

    fn line(&self) -> String {
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

    fn entry(&self) -> m3u::Entry {
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
struct Listed {
    meta: Meta,
    shown: f32,
    extra: Value,
}

fn exists(path: &[u8]) -> bool {
    Path::new(OsStr::from_bytes(path)).exists()
}

/// An open library: the reader, the vector space and the library's statistics.
struct Library {
    reader: TrackReader,
    space: Space,
    stats: LibraryStats,
}

fn db_error(e: impl std::fmt::Display) -> CliError {
    CliError::new(exit::BAD_DB, e)
}

impl Library {
    fn open(out: &Output) -> Result<Library, CliError> {
        let cfg = load_config(out.config.as_deref(), &Overrides::default())?;
        let url = db_url(out.db.clone(), &cfg)?;
        let space = crate::models::similarity_space(&cfg, out.config.as_deref());
        let mut models = vec![FINGERPRINT, PITCH_CLASS];
        models.extend(space.embeddings.iter().map(|e| e.name.as_str()));
        let mut reader = TrackReader::open(&url, &models).map_err(db_error)?;
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

    /// A seed: its stored track, descriptor and vector.
    fn seed(&mut self, file: &Path) -> Result<(Meta, StoredTrack, Vec<f32>), CliError> {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let found = self
            .reader
            .track(abs.as_os_str().as_bytes())
            .map_err(db_error)?;
        let Some((t, d)) = found.and_then(|t| self.space.describe(&t.analysis).map(|d| (t, d)))
        else {
            return Err(CliError::new(
                exit::NOT_FOUND,
                format!("no analysed track stored for {}", abs.display()),
            ));
        };
        let v = self.space.vector(&d, &self.stats);
        Ok((Meta::new(&t, &d), t, v))
    }

    /// Every analysed track with its descriptor and vector.
    fn each(
        &mut self,
        f: &mut dyn FnMut(&StoredTrack, &Descriptor, &[f32]),
    ) -> Result<(), CliError> {
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

pub fn run(cmd: SimilarCmd) -> CliResult {
    match cmd {
        SimilarCmd::Similar {
            file,
            n,
            per_artist,
            out,
        } => similar(&file, n, per_artist, &out),
        SimilarCmd::Path {
            from,
            to,
            steps,
            out,
        } => path(&from, &to, steps, &out),
        SimilarCmd::Mix {
            seeds,
            length,
            harmonic,
            out,
        } => mix(&seeds, length, harmonic, &out),
    }
}

fn similar(file: &Path, n: usize, per_artist: usize, out: &Output) -> CliResult {
    let mut lib = Library::open(out)?;
    let (seed, _, sv) = lib.seed(file)?;
    let mut top: TopK<Meta> = TopK::new(n, (per_artist > 0).then_some(per_artist));
    lib.each(&mut |t, d, v| {
        if t.id == seed.id {
            return;
        }
        let dist = trackmill_similarity::distance(v, &sv);
        if top.admits(dist, t.id) && exists(&t.path) {
            let m = Meta::new(t, d);
            let group = m.artist.as_deref().and_then(group_key);
            top.push(dist, t.id, group, m);
        }
    })?;
    let hits = top.into_sorted();
    let tracks: Vec<Listed> = hits
        .into_iter()
        .map(|h| Listed {
            extra: json!({"distance": h.distance}),
            shown: h.distance,
            meta: h.item,
        })
        .collect();
    let playlist: Vec<&Meta> = tracks.iter().map(|l| &l.meta).collect();
    finish(out, json!({"seed": seed.json()}), &tracks, &playlist)
}

fn path(from: &Path, to: &Path, steps: usize, out: &Output) -> CliResult {
    let mut lib = Library::open(out)?;
    let (a, _, av) = lib.seed(from)?;
    let (b, _, bv) = lib.seed(to)?;
    let mut pf: PathFinder<Meta> = PathFinder::new((a.id, &av), (b.id, &bv), steps, steps + 8);
    lib.each(&mut |t, d, v| {
        pf.offer(t.id, v, || exists(&t.path).then(|| Meta::new(t, d)));
    })?;
    let start = trackmill_similarity::distance(&av, &bv);
    let tracks: Vec<Listed> = pf
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
    let mut playlist = vec![&a];
    playlist.extend(tracks.iter().map(|l| &l.meta));
    playlist.push(&b);
    let head = json!({"from": a.json(), "to": b.json(), "distance": start});
    finish(out, head, &tracks, &playlist)
}

fn mix(seeds: &[PathBuf], length: usize, harmonic: bool, out: &Output) -> CliResult {
    let mut lib = Library::open(out)?;
    let mut metas = Vec::new();
    let mut infos = Vec::new();
    for s in seeds {
        let (m, t, v) = lib.seed(s)?;
        infos.push((m.mix_info(&t), v));
        metas.push(m);
    }
    let opts = MixOptions {
        length,
        harmonic,
        ..MixOptions::default()
    };
    let mut mb: MixBuilder<Meta> = MixBuilder::new(infos, opts);
    lib.each(&mut |t, d, v| {
        let m = Meta::new(t, d);
        let info = m.mix_info(t);
        mb.offer(info, v, || exists(&t.path).then_some(m));
    })?;
    let tracks: Vec<Listed> = mb
        .finish()
        .into_iter()
        .map(|e| Listed {
            extra: json!({"seed_distance": e.seed_distance}),
            shown: e.seed_distance,
            meta: e.item,
        })
        .collect();
    let mut playlist: Vec<&Meta> = metas.iter().collect();
    playlist.extend(tracks.iter().map(|l| &l.meta));
    let head =
        json!({"seeds": metas.iter().map(Meta::json).collect::<Vec<_>>(), "harmonic": harmonic});
    finish(out, head, &tracks, &playlist)
}

/// Prints the result (JSON: `head` plus `tracks`) and writes the playlist.
fn finish(out: &Output, mut head: Value, tracks: &[Listed], playlist: &[&Meta]) -> CliResult {
    if out.json {
        let list: Vec<Value> = tracks
            .iter()
            .map(|l| {
                let mut v = l.meta.json();
                if let (Some(o), Some(e)) = (v.as_object_mut(), l.extra.as_object()) {
                    o.extend(e.clone());
                }
                v
            })
            .collect();
        head["tracks"] = Value::Array(list);
        println!("{head}");
    } else {
        for (i, l) in tracks.iter().enumerate() {
            println!("{:>3}  {:>7.3}  {}", i + 1, l.shown, l.meta.line());
        }
    }
    if let Some(dest) = &out.m3u {
        let base = match &out.relative_to {
            Some(dir) => match std::fs::canonicalize(dir) {
                Ok(d) => Some(d),
                Err(e) => {
                    return Err(CliError::config(format!(
                        "--relative-to {}: {e}",
                        dir.display()
                    )))
                }
            },
            None => None,
        };
        let entries: Vec<m3u::Entry> = playlist.iter().map(|m| m.entry()).collect();
        match m3u::write(dest, &entries, base.as_deref()) {
            Ok(r) => {
                if r.non_utf8 > 0 {
                    eprintln!(
                        "trackmill: warning: {} playlist path(s) are not UTF-8 and were written as bytes",
                        r.non_utf8
                    );
                }
                if r.skipped > 0 {
                    eprintln!(
                        "trackmill: warning: {} path(s) with a line break left out of the playlist",
                        r.skipped
                    );
                }
            }
            Err(e) => return Err(CliError::failure(e)),
        }
    }
    Ok(ExitCode::from(exit::OK))
}

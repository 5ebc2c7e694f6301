//! `similar`, `path` and `mix`: the commands over the similarity queries of [`crate::query`]
//! (which the HTTP API answers from too): their arguments, the table or JSON they print, and the
//! extended M3U8 playlist they can write.

use crate::cli::{exit, load_config, CliError, CliResult, Overrides};
use crate::query::{self, Answer, Filter, Library, QueryError};
use crate::{db_url, DB_URL_ENV};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use trackmill_similarity::m3u;

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

impl From<QueryError> for CliError {
    fn from(e: QueryError) -> CliError {
        match e {
            QueryError::NotFound(_) => CliError::new(exit::NOT_FOUND, e),
            QueryError::Db(_) => CliError::new(exit::BAD_DB, e),
        }
    }
}

fn open(out: &Output) -> Result<Library, CliError> {
    let cfg = load_config(out.config.as_deref(), &Overrides::default())?;
    let url = db_url(out.db.clone(), &cfg)?;
    let space = crate::models::similarity_space(&cfg, out.config.as_deref());
    Ok(Library::open(&url, space)?)
}

pub fn run(cmd: SimilarCmd) -> CliResult {
    let none = Filter::default();
    let (answer, out) = match cmd {
        SimilarCmd::Similar {
            file,
            n,
            per_artist,
            out,
        } => (
            query::similar(&mut open(&out)?, &file, n, per_artist, &none)?,
            out,
        ),
        SimilarCmd::Path {
            from,
            to,
            steps,
            out,
        } => (query::path(&mut open(&out)?, &from, &to, steps)?, out),
        SimilarCmd::Mix {
            seeds,
            length,
            harmonic,
            out,
        } => (
            query::mix(&mut open(&out)?, &seeds, length, harmonic, &none)?,
            out,
        ),
    };
    finish(&out, &answer)
}

/// Prints the answer (JSON or a table) and writes the playlist.
fn finish(out: &Output, answer: &Answer) -> CliResult {
    if out.json {
        println!("{}", answer.json());
    } else {
        print!("{}", answer.table());
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
        let entries = answer.entries();
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

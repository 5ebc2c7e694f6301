//! Fault injection for the end-to-end tests, active only when `TRACKMILL_FAULT_INJECTION=1` is in
//! the worker's environment. A file whose content starts with `TRACKMILL-FAULT <kind> [arg]`
//! makes the worker misbehave for real, so the supervisor's handling of each failure class is
//! exercised against real processes, signals and kernel limits:
//!
//! - `alloc`: allocate and touch memory until the RLIMIT_AS cap makes an allocation fail (abort);
//! - `hang`: never answer (sleeps forever; SIGTERM ends it);
//! - `hang-ignore-term`: never answer and ignore SIGTERM (only SIGKILL ends it);
//! - `segv`: raise SIGSEGV;
//! - `abort`: abort();
//! - `block-while PATH`: wait while `PATH` exists, holding the file open (a test finds the
//!   worker by the file among its open descriptors: the sandbox lets a worker write nothing),
//!   then carry on (the file itself is not audio, so it ends as a corrupt failure);
//! - `escape DB SOCKET PORT`: try to leave the sandbox: create a file in the working directory,
//!   read the database file `DB`, connect to the Unix socket `SOCKET` and to TCP port `PORT` on
//!   127.0.0.1; each attempt is logged as `fault escape WHAT: refused (ERROR)` or
//!   `fault escape WHAT: ALLOWED`, then the file is analysed as usual (it is not audio, so it
//!   ends as a corrupt failure).
//! - `model-fail`: answer as if a model had failed on the file (a `crash` of stage `model`), and
//!   end the worker after the reply as a real model failure does.
//!
//! - `lie WHAT`: answer with what a well-behaved worker never sends (a worker taken over by its
//!   file): `empty-strings` (a frame of the maximum size packed with empty strings), `oversized`
//!   (a header above the frame limit), `huge-count` (a list claiming four billion items),
//!   `wrong-job` (a result for a job it was not given), `half-frame` (part of a frame, then
//!   silence), `garbage` (bytes that decode as nothing), or `largest-record` (a well-formed result
//!   with every string and list at the cap the reader allows: that one is a valid answer).
//!
//! Any other file is analysed normally. And with `TRACKMILL_FAULT_HELLO_WHILE=PATH` in its
//! environment, a worker started while `PATH` exists never says hello (as one whose models sit on
//! a hung filesystem).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use trackmill_types::bounded::{
    MAX_EMBEDDINGS, MAX_EMBEDDING_VALUES, MAX_MODELS, MAX_NOTES, MAX_TAG_LIST,
};
use trackmill_types::clean::MAX_DECODED_BYTES;
use trackmill_types::frame::{encode, varint, MAX_FRAME};
use trackmill_types::{
    CleanText, Embedding, Failure, FailureClass, FileStats, FromWorker, Outcome, Stage,
    TrackAnalysis,
};

const MAGIC: &[u8] = b"TRACKMILL-FAULT ";
/// A worker started while the file this names exists never says hello.
pub const HELLO_ENV: &str = "TRACKMILL_FAULT_HELLO_WHILE";

/// Before the hello: hangs forever if [`HELLO_ENV`] names a file that exists.
pub fn before_hello() {
    if std::env::var_os(HELLO_ENV).is_some_and(|p| Path::new(&p).exists()) {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// What the worker answers instead of analysing the file.
pub enum Injected {
    /// This failure of a stage; the worker ends after it, as after a real model failure.
    Fail(Failure),
    /// A valid answer, sent as any result is (`largest-record`).
    Answer(Outcome),
    /// Bytes a well-behaved worker never sends, written by [`lie`].
    Lie(Lie),
}

/// The lies of `lie WHAT`.
#[derive(Clone, Copy, Debug)]
pub enum Lie {
    EmptyStrings,
    Oversized,
    HugeCount,
    WrongJob,
    HalfFrame,
    Garbage,
}

impl Lie {
    fn parse(what: &str) -> Option<Lie> {
        Some(match what {
            "empty-strings" => Lie::EmptyStrings,
            "oversized" => Lie::Oversized,
            "huge-count" => Lie::HugeCount,
            "wrong-job" => Lie::WrongJob,
            "half-frame" => Lie::HalfFrame,
            "garbage" => Lie::Garbage,
            _ => return None,
        })
    }
}

/// Looks at the start of the job's file (read at offset 0, so the analysis still reads it from
/// its start) and misbehaves as it says; returns what to answer instead of analysing it, for
/// faults that stand for a failed stage or a lying worker rather than a dying process.
pub fn maybe_inject(file: &File) -> Option<Injected> {
    let mut head = [0u8; 512];
    let n = file.read_at(&mut head, 0).ok()?;
    let rest = head[..n].strip_prefix(MAGIC)?;
    let line = String::from_utf8_lossy(rest);
    let line = line.lines().next().unwrap_or("").trim().to_string();
    let (kind, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    match kind {
        "alloc" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 16 << 20]);
            }
        }
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "hang-ignore-term" => {
            // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "segv" => {
            // SAFETY: restoring the default action (the Rust runtime installs its own handler for
            // stack overflows) and raising the signal in this process, which ends it.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
        "abort" => std::process::abort(),
        "block-while" => {
            let marker = Path::new(arg);
            while marker.exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "model-fail" => {
            return Some(Injected::Fail(Failure::new(
                FailureClass::Crash,
                Stage::Model,
                "injected model failure",
            )))
        }
        "lie" if arg.trim() == "largest-record" => {
            let a = largest_record(&mut XorShift::seeded());
            return Some(Injected::Answer(Outcome::Analyzed(Box::new(a))));
        }
        "lie" => return Lie::parse(arg.trim()).map(Injected::Lie),
        "escape" => escape(arg),
        _ => {}
    }
    None
}

fn escape(arg: &str) {
    let mut args = arg.split_whitespace();
    let (db, socket, port) = (
        args.next().unwrap_or(""),
        args.next().unwrap_or(""),
        args.next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(9),
    );
    let written = std::env::current_dir()
        .and_then(|d| std::fs::write(d.join(format!("escaped-{}", std::process::id())), b"x"));
    report("write-cwd", written);
    report("read-db", std::fs::read(db).map(drop));
    report(
        "connect-control",
        std::os::unix::net::UnixStream::connect(socket).map(drop),
    );
    report(
        "connect-tcp",
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop),
    );
}

fn report(what: &str, result: std::io::Result<()>) {
    match result {
        Ok(()) => tracing::warn!("fault escape {what}: ALLOWED"),
        Err(e) => tracing::warn!("fault escape {what}: refused ({e})"),
    }
}

/// Writes `lie` as the answer to job `job_id`. A half frame is followed by silence for good.
pub fn lie(lie: Lie, chan: &mut impl Write, job_id: u64) -> io::Result<()> {
    let mut rng = XorShift::seeded();
    let bytes = match lie {
        Lie::EmptyStrings => {
            let (head, tail) = split_at_artists(job_id);
            // The artists' list, as long as the frame allows, of empty strings (one byte each).
            let mut n = MAX_FRAME - head.len() - tail.len();
            while n + varint(n as u64).len() + head.len() + tail.len() > MAX_FRAME {
                n -= 1;
            }
            let mut payload = head;
            payload.extend(varint(n as u64));
            payload.resize(payload.len() + n, 0);
            payload.extend(tail);
            framed(payload)
        }
        Lie::Oversized => ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec(),
        Lie::HugeCount => {
            let (mut payload, tail) = split_at_artists(job_id);
            payload.extend(varint(u64::from(u32::MAX)));
            payload.extend(tail);
            framed(payload)
        }
        Lie::WrongJob => encode_io(&done(job_id ^ 0x5eed_0000_0000, TrackAnalysis::default()))?,
        Lie::HalfFrame => {
            let full = encode_io(&done(job_id, TrackAnalysis::default()))?;
            chan.write_all(&full[..full.len() / 2])?;
            chan.flush()?;
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Lie::Garbage => {
            // A variant index no reply has (0xff continues a varint into random bytes).
            let mut payload = vec![0xff; 256];
            payload[1..].iter_mut().for_each(|b| *b = rng.next() as u8);
            framed(payload)
        }
    };
    chan.write_all(&bytes)?;
    chan.flush()
}

fn done(job_id: u64, a: TrackAnalysis) -> FromWorker {
    FromWorker::Done {
        job_id,
        outcome: Outcome::Analyzed(Box::new(a)),
        stats: FileStats::default(),
        last: false,
    }
}

fn encode_io(msg: &FromWorker) -> io::Result<Vec<u8>> {
    encode(msg).map_err(io::Error::other)
}

fn framed(mut payload: Vec<u8>) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.append(&mut payload);
    out
}

/// The payload of a reply to `job_id` whose title is a mark, cut where the artists' list (empty,
/// so one zero byte, right after the title) begins: `(head, tail)` without that byte.
fn split_at_artists(job_id: u64) -> (Vec<u8>, Vec<u8>) {
    const MARK: &str = "LIE-MARK-5eed";
    let mut a = TrackAnalysis::default();
    a.tags.title = Some(CleanText::new(MARK));
    let frame = encode(&done(job_id, a)).expect("a small reply encodes");
    let payload = &frame[4..];
    let at = payload
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())
        .expect("the mark is in the reply")
        + MARK.len();
    (payload[..at].to_vec(), payload[at + 1..].to_vec())
}

/// A result with every string and list as large as the reader accepts, of random text.
fn largest_record(rng: &mut XorShift) -> TrackAnalysis {
    let mut text = || rng.text(MAX_DECODED_BYTES);
    let mut a = TrackAnalysis::default();
    a.tags.title = Some(text());
    a.tags.album = Some(text());
    a.tags.album_artist = Some(text());
    a.tags.artists = (0..MAX_TAG_LIST).map(|_| text()).collect();
    a.tags.genres = (0..MAX_TAG_LIST).map(|_| text()).collect();
    a.tags.musicbrainz_recording_id = Some(text());
    a.models = (0..MAX_MODELS).map(|_| text()).collect();
    a.notes = (0..MAX_NOTES).map(|_| text()).collect();
    a.audio.container = text();
    a.audio.codec = text();
    a.embeddings = (0..MAX_EMBEDDINGS)
        .map(|_| Embedding {
            model: rng.text(MAX_DECODED_BYTES),
            values: (0..MAX_EMBEDDING_VALUES)
                .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
                .collect(),
        })
        .collect();
    a
}

/// Random enough for hostile test data (incompressible text), with no system call: the sandbox
/// may refuse `/dev/urandom`.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> XorShift {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        XorShift(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `max` bytes of random text: letters, accented and CJK characters, spaces.
    fn text(&mut self, max: usize) -> CleanText {
        let mut s = String::with_capacity(max);
        while s.len() < max {
            let r = self.next();
            let c = match r % 4 {
                0 => char::from(b'a' + (r >> 8) as u8 % 26),
                1 => char::from_u32(0xc0 + (r >> 8) as u32 % 0x40).unwrap_or('x'),
                2 => char::from_u32(0x4e00 + (r >> 8) as u32 % 0x5000).unwrap_or('y'),
                _ => ' ',
            };
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        CleanText::with_max(&s, max)
    }
}

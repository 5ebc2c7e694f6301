//! The configuration file (`trackmill.toml`): every key, its default, and validation with clear
//! errors. Unknown keys are rejected so a typo never passes silently; every duration, size and
//! count has an upper bound, and a value out of range is an error that names its key. Also the
//! lexical normalisation of paths an operator sends.

use crate::units::{parse_size_saturating, MAX_DURATION, MAX_SIZE};
use serde::{de, Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// `path` with `.` and `..` resolved lexically (without touching the file system) and repeated
/// separators dropped: `/music/../etc` becomes `/etc`, so a check that it lies under a library
/// root sees where it really points. `..` at the root stays at the root; a relative path keeps
/// the `..` it cannot resolve (it is never under an absolute root).
pub fn normalize_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Why a library root cannot be used.
#[derive(Debug)]
pub enum RootError {
    NotADirectory(PathBuf),
    Unreadable(PathBuf, std::io::Error),
}

/// The library roots as absolute, symlink-free directories (what scans walk and leases match).
pub fn canonical_roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RootError> {
    paths
        .iter()
        .map(|p| match std::fs::canonicalize(p) {
            Ok(abs) if abs.is_dir() => Ok(abs),
            Ok(_) => Err(RootError::NotADirectory(p.clone())),
            Err(e) => Err(RootError::Unreadable(p.clone(), e)),
        })
        .collect()
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub library: Library,
    pub workers: Workers,
    pub memory: Memory,
    pub database: Database,
    pub analysis: Analysis,
    pub service: Service,
    pub api: Api,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Library {
    /// Directories to scan (`serve`; `scan` takes them on the command line).
    pub roots: Vec<PathBuf>,
    /// File extensions to analyse, case-insensitive; empty means every regular file.
    pub extensions: Vec<String>,
    /// Follow symbolic links (loops are detected and skipped).
    pub follow_symlinks: bool,
}

impl Default for Library {
    fn default() -> Self {
        Library {
            roots: Vec::new(),
            extensions: [
                "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "m4b", "aac", "alac", "wav",
                "wave", "aif", "aiff", "aifc", "caf", "mka", "webm", "wv",
            ]
            .map(String::from)
            .to_vec(),
            follow_symlinks: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workers {
    /// Worker processes; 0 means one per CPU.
    pub count: usize,
    /// Memory cap of each worker: RLIMIT_AS (RLIMIT_DATA in GPU mode).
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub memory_limit: u64,
    /// Per-file deadline.
    #[serde(with = "dur")]
    pub job_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a worker is stopped.
    #[serde(with = "dur")]
    pub kill_grace: Duration,
    /// A worker that has not said hello this long after its start (its models load before the
    /// hello) is stopped and counted as an unplanned death.
    #[serde(with = "dur")]
    pub hello_timeout: Duration,
    /// A worker exits after this many files (±10% jitter) to clear arenas and fragmentation.
    pub recycle_after: u32,
    /// Attempts that count against a file before it is quarantined.
    pub max_attempts: u32,
    /// Checked files waiting for a worker; 0 means 2 × count.
    pub queue_depth: usize,
    /// First retry delay; doubles per attempt (with jitter), capped at 30 s.
    #[serde(with = "dur")]
    pub retry_backoff: Duration,
    /// More than this many unplanned worker deaths within `restart_window` → back off spawning.
    pub restart_intensity: u32,
    #[serde(with = "dur")]
    pub restart_window: Duration,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            count: 0,
            memory_limit: 1 << 30,
            job_timeout: Duration::from_secs(300),
            kill_grace: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(60),
            recycle_after: 200,
            max_attempts: 3,
            queue_depth: 0,
            retry_backoff: Duration::from_millis(250),
            restart_intensity: 20,
            restart_window: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Memory {
    /// Above this share of RAM in use, halve the number of busy workers (recovering gradually).
    #[serde(deserialize_with = "de_ratio")]
    pub high: f64,
    /// Above this share, also kill the largest worker; its file is requeued without penalty.
    #[serde(deserialize_with = "de_ratio")]
    pub critical: f64,
    /// How often memory is sampled.
    #[serde(with = "dur")]
    pub poll_interval: Duration,
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            high: 0.85,
            critical: 0.95,
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://PATH` or `postgres://…`; empty means the default SQLite file.
    pub url: String,
    /// The DB writer commits after this many results…
    pub batch_size: usize,
    /// …or after this long, whichever comes first.
    #[serde(with = "dur")]
    pub batch_interval: Duration,
    /// Results sent but not yet committed; at this bound dispatching pauses (backpressure).
    pub max_unacked: usize,
    /// Lease on a claimed file (shared PostgreSQL); renewed while its owner lives.
    #[serde(with = "dur")]
    pub lease_ttl: Duration,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: String::new(),
            batch_size: 256,
            batch_interval: Duration::from_millis(200),
            max_unacked: 1024,
            lease_ttl: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Models to run (manifest names under `models_dir`); empty for DSP-only analysis.
    pub models: Vec<String>,
    /// Directory of model manifests. A relative path is looked up under the config file's
    /// directory, the executable's directory and its parents, then the working directory and its
    /// parents; `TRACKMILL_MODELS_DIR` overrides it (resolved in the binary, `models.rs`).
    pub models_dir: PathBuf,
    /// Use the CUDA execution provider (falls back to CPU with a warning).
    pub gpu: bool,
    /// ONNX Runtime intra-op threads per worker.
    pub model_threads: usize,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            models: vec!["basic-pitch".into()],
            models_dir: PathBuf::from("models"),
            gpu: false,
            model_threads: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Service {
    /// On SIGTERM/SIGINT, in-flight files get this long to finish before workers are killed.
    #[serde(with = "dur")]
    pub shutdown_grace: Duration,
    /// `serve`: a full pass over `library.roots` this often (0 turns the timer off).
    #[serde(with = "dur")]
    pub rescan_interval: Duration,
    /// `serve`: watch the roots for file-system changes and analyse what changed.
    pub watch: bool,
    /// `serve`: changes are collected until none arrived for this long, then analysed in one pass.
    #[serde(with = "dur")]
    pub watch_debounce: Duration,
    /// `serve`: the control socket; empty means `$XDG_RUNTIME_DIR/trackmill/control.sock`, or
    /// `/run/trackmill/control.sock` for root. Its directory must be private to the service's user.
    pub control_socket: PathBuf,
    /// `serve`: a Prometheus text endpoint (`http://ADDR/metrics`) on a loopback address, e.g.
    /// `127.0.0.1:9187`; empty turns it off.
    pub metrics_addr: String,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            shutdown_grace: Duration::from_secs(30),
            rescan_interval: Duration::from_secs(3600),
            watch: true,
            watch_debounce: Duration::from_secs(2),
            control_socket: PathBuf::new(),
            metrics_addr: String::new(),
        }
    }
}

/// `serve`: the HTTP API for music servers, run in its own child process (see the README's
/// "HTTP API").
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// A loopback address to listen on, e.g. `127.0.0.1:8337`; empty turns the API off.
    pub addr: String,
    /// A request whose body is larger is answered 413.
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub max_body: u64,
    /// A request must arrive whole (headers and body) and be answered within this, else 408.
    #[serde(with = "dur")]
    pub request_timeout: Duration,
    /// Queries answered at the same time; one more is answered 503.
    pub max_concurrent: usize,
    /// RLIMIT_AS of the API process (0: none).
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub memory_limit: u64,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            addr: String::new(),
            max_body: 16 << 10,
            request_timeout: Duration::from_secs(10),
            max_concurrent: 16,
            memory_limit: 1 << 30,
        }
    }
}

/// An error unless `value` (the setting `key`) is empty or a loopback socket address.
fn check_loopback(key: &str, value: &str, example: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Ok(());
    }
    match value.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Ok(()),
        Ok(a) => Err(ConfigError::Invalid(format!(
            "{key} = {a} is not a loopback address (127.0.0.1 or ::1)"
        ))),
        Err(e) => Err(ConfigError::Invalid(format!(
            "{key} = {value:?}: {e} (write e.g. {example})"
        ))),
    }
}

impl Api {
    /// The bounds of the `[api]` keys.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        check_loopback("api.addr", &self.addr, "127.0.0.1:8337")?;
        if !(1 << 10..=64 << 20).contains(&self.max_body) {
            return bad(format!(
                "api.max_body = {} is outside 1KiB..64MiB",
                self.max_body
            ));
        }
        if self.request_timeout < Duration::from_millis(100)
            || self.request_timeout > Duration::from_secs(600)
        {
            return bad("api.request_timeout must lie between 100ms and 10m".into());
        }
        if !(1..=1024).contains(&self.max_concurrent) {
            return bad(format!(
                "api.max_concurrent = {} is outside 1..1024",
                self.max_concurrent
            ));
        }
        if self.memory_limit != 0 && !(128 << 20..=MAX_SIZE).contains(&self.memory_limit) {
            return bad(format!(
                "api.memory_limit = {} is outside 128MiB..1PiB (or 0 for none)",
                self.memory_limit
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.workers.memory_limit != 0 && self.workers.memory_limit < 32 << 20 {
            return bad(format!(
                "workers.memory_limit = {} is below the 32MiB minimum",
                self.workers.memory_limit
            ));
        }
        if self.workers.count > 1024 {
            return bad(format!(
                "workers.count = {} is above 1024",
                self.workers.count
            ));
        }
        if self.workers.recycle_after == 0 {
            return bad("workers.recycle_after must be at least 1".into());
        }
        if self.workers.max_attempts == 0 {
            return bad("workers.max_attempts must be at least 1".into());
        }
        if self.workers.job_timeout.is_zero() {
            return bad("workers.job_timeout must be positive".into());
        }
        if self.workers.hello_timeout.is_zero() {
            return bad("workers.hello_timeout must be positive".into());
        }
        for (key, d) in self.durations() {
            if d > MAX_DURATION {
                return bad(format!("{key} is above the maximum of 365 days"));
            }
        }
        if self.workers.memory_limit > MAX_SIZE {
            return bad("workers.memory_limit is above the maximum of 1PiB".into());
        }
        for (key, n, max) in [
            (
                "workers.max_attempts",
                self.workers.max_attempts as usize,
                100,
            ),
            ("workers.queue_depth", self.workers.queue_depth, 1_000_000),
            ("database.batch_size", self.database.batch_size, 100_000),
            ("database.max_unacked", self.database.max_unacked, 1_000_000),
            ("analysis.model_threads", self.analysis.model_threads, 1024),
        ] {
            if n > max {
                return bad(format!("{key} = {n} is above the maximum of {max}"));
            }
        }
        if !(0.0..=1.0).contains(&self.memory.high) || !(0.0..=1.0).contains(&self.memory.critical)
        {
            return bad(
                "memory.high and memory.critical are shares of RAM between 0 and 1 (or 0%..100%)"
                    .into(),
            );
        }
        if self.memory.critical < self.memory.high {
            return bad(format!(
                "memory.critical ({}) must not be below memory.high ({})",
                self.memory.critical, self.memory.high
            ));
        }
        check_loopback(
            "service.metrics_addr",
            &self.service.metrics_addr,
            "127.0.0.1:9187",
        )?;
        self.api.validate()?;
        if self.database.batch_size == 0 || self.database.max_unacked == 0 {
            return bad("database.batch_size and database.max_unacked must be at least 1".into());
        }
        Ok(())
    }

    /// Every duration setting with its key (each is at most [`MAX_DURATION`]).
    fn durations(&self) -> [(&'static str, Duration); 11] {
        [
            ("workers.job_timeout", self.workers.job_timeout),
            ("workers.kill_grace", self.workers.kill_grace),
            ("workers.hello_timeout", self.workers.hello_timeout),
            ("workers.retry_backoff", self.workers.retry_backoff),
            ("workers.restart_window", self.workers.restart_window),
            ("memory.poll_interval", self.memory.poll_interval),
            ("database.batch_interval", self.database.batch_interval),
            ("database.lease_ttl", self.database.lease_ttl),
            ("service.shutdown_grace", self.service.shutdown_grace),
            ("service.rescan_interval", self.service.rescan_interval),
            ("service.watch_debounce", self.service.watch_debounce),
        ]
    }

    /// Worker count with 0 resolved to the number of CPUs.
    pub fn worker_count(&self) -> usize {
        if self.workers.count == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.workers.count
        }
    }

    pub fn queue_depth(&self) -> usize {
        if self.workers.queue_depth == 0 {
            2 * self.worker_count()
        } else {
            self.workers.queue_depth
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(f64),
    Str(String),
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrStr::deserialize(d)? {
        // `as` saturates, and `validate` names the key of a size above the bound.
        NumOrStr::Num(n) if n >= 0.0 => Ok(n as u64),
        NumOrStr::Num(n) => Err(de::Error::custom(format!(
            "size {n} is not a positive number"
        ))),
        NumOrStr::Str(s) => parse_size_saturating(&s).map_err(de::Error::custom),
    }
}

fn ser_size<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::units::format_size(*v))
}

fn de_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => match s.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .map(|v| v / 100.0)
                .map_err(de::Error::custom),
            None => Err(de::Error::custom(format!(
                "invalid share {s:?} (write e.g. 85% or 0.85)"
            ))),
        },
    }
}

mod dur {
    //! Durations written as `90s`, `5m`, `250ms` (or a number of seconds). One too large for
    //! `Duration` saturates, so that `validate` reports it with its key.
    use super::NumOrStr;
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => crate::units::secs_saturating(n).map_err(de::Error::custom),
            NumOrStr::Str(s) => {
                crate::units::parse_duration_saturating(&s).map_err(de::Error::custom)
            }
        }
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", v.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.workers.memory_limit, 1 << 30);
        assert_eq!(c.workers.recycle_after, 200);
        assert_eq!(c.workers.max_attempts, 3);
        assert_eq!(c.workers.job_timeout, Duration::from_secs(300));
    }

    #[test]
    fn typo_is_rejected_with_the_key() {
        let e = Config::parse("[workers]\ncuont = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cuont"), "{e}");
        let e = Config::parse("[wrokers]\ncount = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrokers"), "{e}");
    }

    #[test]
    fn units_parse() {
        let c = Config::parse("[workers]\nmemory_limit = \"512MiB\"\njob_timeout = \"90s\"\n[memory]\nhigh = \"80%\"\n")
            .unwrap();
        assert_eq!(c.workers.memory_limit, 512 << 20);
        assert_eq!(c.workers.job_timeout, Duration::from_secs(90));
        assert!((c.memory.high - 0.8).abs() < 1e-9);
        assert!(Config::parse("[workers]\nmemory_limit = \"lots\"\n").is_err());
        assert!(Config::parse("[memory]\nhigh = 0.99\ncritical = 0.9\n").is_err());
    }

    #[test]
    fn values_out_of_range_name_their_key() {
        let e = Config::parse("[workers]\njob_timeout = \"99999999999999999999s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers.job_timeout"), "{e}");
        let e = Config::parse("[service]\nrescan_interval = 1e300\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("service.rescan_interval"), "{e}");
        let e = Config::parse("[memory]\npoll_interval = inf\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory.poll_interval"), "{e}");
        assert!(Config::parse("[memory]\npoll_interval = nan\n").is_err());
        let e = Config::parse("[workers]\nmemory_limit = \"99999999999999999999TiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers.memory_limit"), "{e}");
        let e = Config::parse("[workers]\nmemory_limit = 1e300\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers.memory_limit"), "{e}");
        let e = Config::parse("[database]\nmax_unacked = 9223372036854775807\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.max_unacked"), "{e}");
        assert!(Config::parse("[service]\nrescan_interval = \"365d\"\n").is_err());
        assert!(Config::parse("[service]\nrescan_interval = \"8760h\"\n").is_ok());
    }

    #[test]
    fn paths_are_normalised_lexically() {
        let n = |s: &str| normalize_path(Path::new(s));
        assert_eq!(n("/music/../etc"), PathBuf::from("/etc"));
        assert_eq!(
            n("/music/./a//b/../c.flac"),
            PathBuf::from("/music/a/c.flac")
        );
        assert_eq!(n("/../../etc/passwd"), PathBuf::from("/etc/passwd"));
        assert_eq!(n("/music/a/.."), PathBuf::from("/music"));
        assert_eq!(n("a/../../b"), PathBuf::from("../b"));
        assert_eq!(n("/"), PathBuf::from("/"));
    }

    #[test]
    fn metrics_only_on_loopback() {
        assert!(Config::parse("[service]\nmetrics_addr = \"127.0.0.1:9187\"\n").is_ok());
        let e = Config::parse("[service]\nmetrics_addr = \"0.0.0.0:9187\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        assert!(Config::parse("[service]\nmetrics_addr = \"localhost\"\n").is_err());
    }

    #[test]
    fn api_settings_are_bounded_and_loopback_only() {
        let cfg =
            Config::parse("[api]\naddr = \"127.0.0.1:8337\"\nmax_body = \"64KiB\"\n").unwrap();
        assert_eq!(cfg.api.max_body, 64 << 10);
        assert_eq!(cfg.api.request_timeout, Duration::from_secs(10));
        for (text, key) in [
            ("addr = \"0.0.0.0:8337\"", "api.addr"),
            ("addr = \"nowhere\"", "api.addr"),
            ("max_body = \"1GiB\"", "api.max_body"),
            ("request_timeout = \"0s\"", "api.request_timeout"),
            ("max_concurrent = 0", "api.max_concurrent"),
            ("memory_limit = \"1MiB\"", "api.memory_limit"),
        ] {
            let e = Config::parse(&format!("[api]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(Config::parse("[api]\nport = 1\n").is_err());
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../../../config/trackmill.toml");
        let c = Config::parse(text).unwrap();
        let d = Config::default();
        assert_eq!(c.workers.memory_limit, d.workers.memory_limit);
        assert_eq!(c.workers.job_timeout, d.workers.job_timeout);
        assert_eq!(c.database.max_unacked, d.database.max_unacked);
    }
}

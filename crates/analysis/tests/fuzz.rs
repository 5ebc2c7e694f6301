//! Bounded fuzzing: property tests over mutated real files of every format. No panic may escape
//! `analyze_file`, and no analysis may allocate beyond a cap (checked by a counting allocator).
//! Runs for `TRACKMILL_FUZZ_SECONDS` (default 4); `cargo xtask fuzz SECONDS` runs it longer in
//! release mode.

mod common;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most memory one analysis may hold live at once (over what was live when it started), and
/// the largest single allocation allowed.
const ALLOC_CAP: usize = 64 << 20;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn grew(size: usize) {
        let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        Self::grew(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: u32,
        bit: u8,
    },
    Set {
        at: u32,
        byte: u8,
    },
    /// Writes a huge big-endian length-like value.
    BigLength {
        at: u32,
    },
    Truncate {
        at: u32,
    },
    Delete {
        at: u32,
        len: u16,
    },
    Duplicate {
        at: u32,
        len: u16,
    },
    Fill {
        at: u32,
        len: u16,
        byte: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Half of the positions fall in the first 4 KiB, where the headers are.
    let at = prop_oneof![0u32..4096, any::<u32>()];
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (at.clone(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        at.clone().prop_map(|at| Mutation::BigLength { at }),
        any::<u32>().prop_map(|at| Mutation::Truncate { at }),
        (at.clone(), any::<u16>()).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (at.clone(), any::<u16>()).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        (at, any::<u16>(), any::<u8>()).prop_map(|(at, len, byte)| Mutation::Fill {
            at,
            len,
            byte
        }),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        let pos = |at: u32| at as usize % b.len();
        match *m {
            Mutation::Flip { at, bit } => {
                let i = pos(at);
                b[i] ^= 1 << bit;
            }
            Mutation::Set { at, byte } => {
                let i = pos(at);
                b[i] = byte;
            }
            Mutation::BigLength { at } => {
                let i = pos(at);
                for (k, v) in [0x7F, 0xFF, 0xFF, 0xF0].into_iter().enumerate() {
                    if let Some(x) = b.get_mut(i + k) {
                        *x = v;
                    }
                }
            }
            Mutation::Truncate { at } => {
                let i = pos(at);
                b.truncate(i);
            }
            Mutation::Delete { at, len } => {
                let i = pos(at);
                let end = (i + len as usize).min(b.len());
                b.drain(i..end);
            }
            Mutation::Duplicate { at, len } => {
                let i = pos(at);
                let end = (i + len as usize).min(b.len());
                let chunk = b[i..end].to_vec();
                b.splice(i..i, chunk);
            }
            Mutation::Fill { at, len, byte } => {
                let i = pos(at);
                let end = (i + len as usize).min(b.len());
                b[i..end].fill(byte);
            }
        }
    }
    b
}

fn seeds(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let src = render(dir, "seed.wav", &music(2), &["-c:a", "pcm_s16le"]);
    let list: &[(&str, &[&str])] = &[
        ("a.mp3", &["-c:a", "libmp3lame", "-b:a", "96k"]),
        ("a.flac", &["-c:a", "flac"]),
        ("a.ogg", &["-c:a", "libvorbis"]),
        ("a.opus", &["-c:a", "libopus"]),
        ("a.m4a", &["-c:a", "aac"]),
        ("alac.m4a", &["-c:a", "alac"]),
        ("a.wav", &["-c:a", "pcm_s16le"]),
        ("a.aiff", &["-c:a", "pcm_s16be"]),
        (
            "t.mp3",
            &[
                "-c:a",
                "libmp3lame",
                "-metadata",
                "title=T",
                "-metadata",
                "artist=A",
            ],
        ),
    ];
    list.iter()
        .map(|(name, args)| {
            let p = encode(&src, dir, name, args);
            ((*name).to_string(), std::fs::read(p).unwrap())
        })
        .collect()
}

#[test]
fn mutated_files_never_panic_or_overallocate() {
    let seconds: u64 = std::env::var("TRACKMILL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let dir = tempdir();
    let seeds = seeds(dir.path());
    let target: PathBuf = dir.path().join("case.bin");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let outcomes: RefCell<BTreeMap<String, u64>> = RefCell::new(BTreeMap::new());
    let worst_peak = Cell::new(0usize);
    let mut batch = 0u64;
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..6));
    while Instant::now() < deadline {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&batch.to_le_bytes());
        let config = Config {
            cases: 16,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let result = runner.run(&strategy, |(which, muts)| {
            let (name, bytes) = &seeds[which];
            let data = apply(bytes.clone(), &muts);
            std::fs::write(&target, &data).map_err(|e| TestCaseError::fail(e.to_string()))?;
            drop(data);
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            LARGEST.store(0, Ordering::Relaxed);
            let r = try_analyze(&target);
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            let largest = LARGEST.load(Ordering::Relaxed);
            worst_peak.set(worst_peak.get().max(peak));
            let key = match &r {
                Ok(a) if a.analysis.partial => "partial".to_string(),
                Ok(_) => "ok".to_string(),
                Err(e) => format!("{}/{}", e.to_failure().class.as_str(), e.stage().as_str()),
            };
            *outcomes.borrow_mut().entry(key).or_default() += 1;
            prop_assert!(
                peak < ALLOC_CAP,
                "{name} {muts:?}: {peak} bytes live at peak"
            );
            prop_assert!(
                largest < ALLOC_CAP,
                "{name} {muts:?}: one allocation of {largest} bytes"
            );
            Ok(())
        });
        if let Err(e) = result {
            panic!("fuzz case failed: {e}");
        }
        batch += 1;
    }
    let outcomes = outcomes.into_inner();
    let total: u64 = outcomes.values().sum();
    println!(
        "fuzz: {total} cases in {seconds} s, worst peak {:.1} MiB, outcomes {outcomes:?}",
        worst_peak.get() as f64 / (1 << 20) as f64
    );
    assert!(total > 0);
}

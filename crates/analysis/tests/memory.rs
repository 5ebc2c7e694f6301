//! Streaming in bounded memory: analysing a long file never holds the track. A counting
//! allocator measures the most memory live at once during the analysis of a one-minute stereo
//! file (21 MB of decoded samples, 5.3 MB even as mono at the analysis rate); the benchmark
//! (`cargo xtask bench analysis`) measures RSS on a 2-hour file.

mod common;
use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn long_file_is_analyzed_in_a_few_mib() {
    let dir = tempdir();
    let p = render(
        dir.path(),
        "long.flac",
        "sine=frequency=330:duration=60:sample_rate=44100",
        &["-ac", "2", "-c:a", "flac"],
    );
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let a = analyze(&p);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!((a.analysis.audio.decoded_s - 60.0).abs() < 0.01);
    assert!(peak < 4 << 20, "peak live allocation {peak} bytes");
    println!(
        "peak live allocation: {:.2} MiB",
        peak as f64 / f64::from(1 << 20)
    );
}

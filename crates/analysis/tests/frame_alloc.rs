//! The feature extractor's steady state allocates nothing: after a warm-up, feeding it more
//! audio (voiced, noisy and silent stretches, in chunks of uneven sizes) makes no call to the
//! allocator. A counting global allocator counts the calls; this file holds one test so that no
//! other test allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use trackmill_analysis::features::{FrameAnalyzer, HOP};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Ten seconds at 22,050 Hz: a chord with clicks at 120 BPM and pseudo-random noise, with a
/// silent second in the middle.
fn signal() -> Vec<f32> {
    let rate = 22_050.0f32;
    let mut x = 0x2545_f491u32;
    (0..22_050 * 10)
        .map(|i| {
            let t = i as f32 / rate;
            if (4.0..5.0).contains(&t) {
                return 0.0;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = (x >> 8) as f32 / (1 << 24) as f32 - 0.5;
            let beat = t % 0.5;
            0.2 * (std::f32::consts::TAU * 261.63 * t).sin()
                + 0.15 * (std::f32::consts::TAU * 392.0 * t).sin()
                + 0.5 * (std::f32::consts::TAU * 1500.0 * t).sin() * (-120.0 * beat).exp()
                + 0.02 * noise
        })
        .collect()
}

#[test]
fn steady_state_allocates_nothing_per_frame() {
    // The counter sees this test's allocations.
    let probe = CALLS.load(Ordering::Relaxed);
    std::hint::black_box(vec![1u8; 64]);
    assert!(CALLS.load(Ordering::Relaxed) > probe);

    let audio = signal();
    let (warm, rest) = audio.split_at(2 * 22_050);
    let mut fa = FrameAnalyzer::new(22_050);
    fa.push(warm);
    let before = CALLS.load(Ordering::Relaxed);
    // Uneven chunks, as decoders hand them on: shorter and longer than a hop.
    let mut pos = 0;
    let mut sizes = [37usize, HOP, 1152, 4096, 1, 960].iter().cycle();
    while pos < rest.len() {
        let n = (*sizes.next().expect("cycle")).min(rest.len() - pos);
        fa.push(&rest[pos..pos + n]);
        pos += n;
    }
    let during = CALLS.load(Ordering::Relaxed) - before;
    let frames = rest.len() / HOP;
    let summary = fa.finish();
    assert_eq!(
        during, 0,
        "{during} allocations over {frames} frames of steady state"
    );
    // The analysis did run on the audio: the silent second shows, and the pulse was found.
    assert!(
        (summary.silence_ratio - 0.1).abs() < 0.02,
        "{}",
        summary.silence_ratio
    );
    assert!((summary.bpm - 120.0).abs() < 1.0, "{}", summary.bpm);
}

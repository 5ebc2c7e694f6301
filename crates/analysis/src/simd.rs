//! Wider vectors where the CPU has them, with the same results.
//!
//! The crate is built for the x86-64 baseline (SSE2), so that one binary runs on every x86-64
//! machine. The hot loops (the loudness filter and true peak, the half-band decimator, the
//! per-frame spectral passes) are written as lane arrays that the compiler vectorises, or as SSE2
//! intrinsics; `wide_method!` runs such a loop compiled a second time for AVX2 when the CPU
//! supports it, where the same code uses 256-bit registers and three-operand (VEX)
//! instructions, which need fewer register copies.
//!
//! Results are bit-identical to the baseline build: AVX2 without FMA performs the same IEEE
//! operations in the same order (no multiply-add is fused, no sum is reordered); only the width
//! of each instruction changes. A test compares both paths.

/// Whether the AVX2 copies run: the CPU has AVX2 (and, in tests, the baseline is not forced).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && !baseline_forced()
}

/// Defines a method that runs another one, `#[inline(always)]`, compiled for AVX2 when the CPU
/// has it, and at the baseline otherwise:
///
/// `wide_method! { fn frame(&mut self) => frame_body / frame_avx2 }` defines `frame`, which
/// calls `frame_body` either through `frame_avx2` (a copy built with AVX2 enabled) or
/// directly. What `frame_body` inlines is compiled with the wider instructions, so its hot
/// helpers are `#[inline(always)]` too; a function it calls without inlining stays at the
/// baseline.
macro_rules! wide_method {
    ($(#[$m:meta])* fn $name:ident(&mut self $(, $a:ident: $t:ty)*) => $body:ident / $avx2:ident) => {
        $(#[$m])*
        fn $name(&mut self $(, $a: $t)*) {
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::avx2() {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.$avx2($($a),*) };
            }
            self.$body($($a),*)
        }

        /// The AVX2 copy of the method above.
        ///
        /// # Safety
        /// Only on a CPU with AVX2.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2(&mut self $(, $a: $t)*) {
            self.$body($($a),*)
        }
    };
}
pub(crate) use wide_method;

/// Whether the baseline path is forced (tests compare both paths on the same machine).
#[cfg(test)]
fn baseline_forced() -> bool {
    FORCE_BASELINE.with(|f| f.get())
}

#[cfg(not(test))]
#[inline(always)]
fn baseline_forced() -> bool {
    false
}

#[cfg(test)]
thread_local! {
    static FORCE_BASELINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every `wide_method!` taking the baseline path on this thread.
#[cfg(test)]
pub(crate) fn with_baseline<R>(f: impl FnOnce() -> R) -> R {
    FORCE_BASELINE.with(|b| b.set(true));
    let r = f();
    FORCE_BASELINE.with(|b| b.set(false));
    r
}

#[cfg(test)]
mod tests {
    use super::with_baseline;
    use crate::features::FrameAnalyzer;
    use crate::loudness::LoudnessMeter;
    use crate::resample::MonoResampler;

    /// Loudness, the 2:1 decimator and the frame features of 12 s of stereo at 44.1 kHz:
    /// noise (incompressible, every bit of the mantissa in play) under tones and clicks,
    /// fed in uneven chunks.
    fn analyse() -> String {
        let rate = 44_100usize;
        let mut x = 0x9e37_79b9u32;
        let mut noise = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let n = rate * 12;
        let planes: Vec<Vec<f32>> = (0..2)
            .map(|c| {
                (0..n)
                    .map(|i| {
                        let t = i as f32 / rate as f32;
                        let tone = (std::f32::consts::TAU * (220.0 + 110.0 * c as f32) * t).sin();
                        let click = if i % (rate / 2) < 64 { 0.8 } else { 0.0 };
                        0.3 * tone + 0.2 * noise() + click
                    })
                    .collect()
            })
            .collect();
        let mut meter = LoudnessMeter::new(2, rate as u32).unwrap();
        let mut resampler = MonoResampler::new(rate as u32, 22_050).unwrap();
        let mut frames = FrameAnalyzer::new(22_050);
        let mut mono = Vec::new();
        let mut at = 0;
        for chunk in [1152usize, 1, 4096, 577].iter().cycle() {
            if at >= n {
                break;
            }
            let end = (at + chunk).min(n);
            let slices = [&planes[0][at..end], &planes[1][at..end]];
            meter.add(&slices);
            mono.clear();
            mono.extend(slices[0].iter().zip(slices[1]).map(|(a, b)| 0.5 * (a + b)));
            resampler.push(&mono, &mut |s| frames.push(s));
            at = end;
        }
        resampler.finish(&mut |s| frames.push(s));
        format!("{:?} {:?}", meter.finish(), frames.finish())
    }

    #[test]
    fn the_avx2_copies_give_the_baseline_results_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("this CPU has no AVX2: both runs take the baseline path");
        }
        // `Debug` prints every f32 and f64 with the digits that identify it exactly.
        assert_eq!(analyse(), with_baseline(analyse));
    }
}

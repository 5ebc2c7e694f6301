//! 12-bin chroma (pitch-class energy, A4 = 440 Hz) and key estimation by correlation with the
//! Krumhansl–Kessler key profiles.

use super::fastmath::fast_ln;

/// Lowest and highest frequencies of spectral peaks counted in the chroma, Hz.
pub const CHROMA_MIN_HZ: f64 = 55.0;
pub const CHROMA_MAX_HZ: f64 = 5000.0;

/// Krumhansl–Kessler major and minor profiles, tonic first.
const MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// The bins [`peak_chroma`] looks at and each one's pitch on the MIDI scale, computed once per
/// analysis rate: a peak's pitch is then its bin's plus the small correction for the peak's
/// offset from the bin centre, instead of a logarithm and a division per peak.
#[derive(Clone, Debug)]
pub struct PitchTable {
    lo: usize,
    hi: usize,
    /// MIDI pitch (A4 = 69) of bin `k`'s centre frequency, at index `k - lo`.
    midi: Vec<f32>,
    /// 1 / k at index `k - lo`.
    inv_bin: Vec<f32>,
}

impl PitchTable {
    /// For a spectrum of `bins` bins, bin `k` at `k · bin_hz`.
    pub fn new(bin_hz: f64, bins: usize) -> PitchTable {
        let lo = ((CHROMA_MIN_HZ / bin_hz).floor() as usize).max(1);
        let hi = ((CHROMA_MAX_HZ / bin_hz).ceil() as usize).min(bins.saturating_sub(2));
        let ks = lo..=hi;
        PitchTable {
            lo,
            hi,
            midi: ks
                .clone()
                .map(|k| (69.0 + 12.0 * (k as f64 * bin_hz / 440.0).log2()) as f32)
                .collect(),
            inv_bin: ks.map(|k| (1.0 / k as f64) as f32).collect(),
        }
    }
}

/// Semitones per natural-log unit of frequency.
const SEMITONES_PER_LN: f32 = 12.0 / std::f32::consts::LN_2;

/// ln(1 + x) for small |x| by its series to the fifth power. At 22.05 kHz the lowest bin looked
/// at is 5, so |x| = |delta| / k ≤ 0.1: error below 2e-7, 3e-6 semitones.
#[inline(always)]
fn ln_1p_small(x: f32) -> f32 {
    x * (1.0 + x * (-0.5 + x * (1.0 / 3.0 + x * (-0.25 + x * 0.2))))
}

/// Per-frame working space of [`peak_chroma`], kept by the caller so that no frame allocates.
#[derive(Clone, Debug, Default)]
pub struct ChromaScratch {
    /// ln(mag + floor), then ln(mag), over bins `lo - 1 ..= hi + 1`.
    ln: Vec<f32>,
    /// Per bin of `lo ..= hi`: its peak's pitch (MIDI), and its power if it is a peak (else 0).
    pitch: Vec<f32>,
    weight: Vec<f32>,
    /// Indices (into `pitch` and `weight`) of the bins that are peaks, in bin order.
    peaks: Vec<u32>,
}

/// Pitch-class power of one frame from the spectral peaks of `mag` between [`CHROMA_MIN_HZ`]
/// and [`CHROMA_MAX_HZ`] (the bins of `table`): each local maximum's frequency is refined by
/// parabolic interpolation of the log magnitude, so even low notes, whose semitones are
/// narrower than an FFT bin, land in the right class. The peak's power goes to the nearest
/// pitch class (A4 = 440 Hz).
///
/// Every bin of the range is worked out as if it were a peak, in passes without branches the
/// compiler vectorises; a bin that is not a peak then adds a power of 0 (which leaves a sum
/// unchanged). Testing each bin and refining only the peaks took three times as long: whether
/// a bin of a real spectrum is a peak is a coin toss for the branch predictor.
#[inline(always)]
pub fn peak_chroma(
    mag: &[f32],
    power: &[f32],
    table: &PitchTable,
    scratch: &mut ChromaScratch,
) -> [f32; 12] {
    let mut out = [0.0f32; 12];
    let (lo, hi) = (table.lo, table.hi.min(mag.len().saturating_sub(2)));
    if lo > hi {
        return out;
    }
    let floor = 1e-7f32;
    // Bins lo - 1 ..= hi + 1, bin k at index k - (lo - 1): ln(mag + floor), then ln(mag).
    let range = &mag[lo - 1..=hi + 1];
    let ln = &mut scratch.ln;
    ln.clear();
    ln.extend(range.iter().map(|&m| fast_ln(m + floor)));
    ln.extend(range.iter().map(|&m| fast_ln(m)));
    let (ln_floored, ln_plain) = ln.split_at(range.len());
    let n = hi + 1 - lo;
    scratch.pitch.resize(n, 0.0);
    scratch.weight.resize(n, 0.0);
    // Index j is bin k = lo + j, whose neighbours are at j and j + 2 of `range` and the ln
    // slices. Three simple passes that the compiler turns into vector code (each step a
    // select, never a branch): the peak's offset from the bin centre, its pitch, its power.
    let (pitch, weight) = (&mut scratch.pitch[..n], &mut scratch.weight[..n]);
    let sides = ln_floored[..n].iter().zip(&ln_floored[2..n + 2]);
    for ((d, (&la, &lc)), &lb) in pitch.iter_mut().zip(sides).zip(&ln_plain[1..=n]) {
        let den = la - 2.0 * lb + lc;
        let vertex = (0.5 * (la - lc) / den).clamp(-0.5, 0.5);
        *d = if den < 0.0 { vertex } else { 0.0 };
    }
    // The pitch of (k + delta) · bin_hz: bin k's, plus ln(1 + delta / k) in semitones.
    let bins = table.midi[..n].iter().zip(&table.inv_bin[..n]);
    for (d, (&midi, &inv)) in pitch.iter_mut().zip(bins) {
        *d = midi + SEMITONES_PER_LN * ln_1p_small(*d * inv);
    }
    let around = range[..n].iter().zip(&range[2..n + 2]);
    let centre = range[1..=n].iter().zip(&power[lo..=hi]);
    for (w, ((&a, &c), (&b, &p))) in weight.iter_mut().zip(around.zip(centre)) {
        let peak = (b > floor) & (b > a) & (b >= c);
        *w = if peak { p } else { 0.0 };
    }
    // The peaks' indices, in order, without a branch: each index is written, and the count
    // moves on only for a peak. Adding a non-peak's 0 changes no class's sum (the sums are of
    // powers, never -0), so skipping them gives the same sums bit for bit, and the additions
    // into one class, a chain through memory, are about a third as many on a noisy spectrum.
    let peaks = &mut scratch.peaks;
    peaks.resize(n, 0);
    let mut count = 0;
    for (j, &w) in weight.iter().enumerate() {
        peaks[count] = j as u32;
        count += usize::from(w != 0.0);
    }
    // pitch > 0 (f ≥ CHROMA_MIN_HZ): adding one half and truncating rounds to nearest, without
    // the libm call `round` costs on the baseline x86-64 target. (A float-to-integer conversion
    // keeps the loop above from vectorising, so it has this loop of its own.)
    for &j in &peaks[..count] {
        let j = j as usize;
        out[((pitch[j] + 0.5) as usize) % 12] += weight[j];
    }
    out
}

/// Adds one frame's pitch-class power into `chroma`, normalised to sum 1. Returns false when
/// the frame has no energy in the chroma range.
pub fn accumulate(frame: &[f32; 12], chroma: &mut [f64; 12]) -> bool {
    let total: f64 = frame.iter().map(|&v| f64::from(v)).sum();
    if total <= 1e-12 {
        return false;
    }
    for (acc, &v) in chroma.iter_mut().zip(frame) {
        *acc += f64::from(v) / total;
    }
    true
}

/// Estimated key: (tonic pitch class, is_major, strength 0 … 1).
pub fn estimate_key(chroma: &[f32; 12]) -> (u8, bool, f32) {
    let total: f32 = chroma.iter().sum();
    if total <= 0.0 {
        return (0, true, 0.0);
    }
    let mut best = (0u8, true, f64::NEG_INFINITY);
    for tonic in 0..12 {
        for (profile, major) in [(&MAJOR, true), (&MINOR, false)] {
            let r = correlation(chroma, profile, tonic);
            if r > best.2 {
                best = (tonic as u8, major, r);
            }
        }
    }
    (best.0, best.1, best.2.clamp(0.0, 1.0) as f32)
}

/// Pearson correlation of `chroma` with `profile` rotated to `tonic`.
fn correlation(chroma: &[f32; 12], profile: &[f64; 12], tonic: usize) -> f64 {
    let x: Vec<f64> = chroma.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = (0..12).map(|pc| profile[(pc + 12 - tonic) % 12]).collect();
    let mx = x.iter().sum::<f64>() / 12.0;
    let my = y.iter().sum::<f64>() / 12.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(&y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chroma_of(pcs: &[usize]) -> [f32; 12] {
        let mut c = [0.0f32; 12];
        for &p in pcs {
            c[p] = 1.0 / pcs.len() as f32;
        }
        c
    }

    #[test]
    fn triads() {
        assert_eq!(
            estimate_key(&chroma_of(&[0, 4, 7])),
            (0, true, estimate_key(&chroma_of(&[0, 4, 7])).2)
        );
        let (k, major, s) = estimate_key(&chroma_of(&[9, 0, 4]));
        assert_eq!((k, major), (9, false));
        assert!(s > 0.5);
        assert_eq!(estimate_key(&[0.0; 12]), (0, true, 0.0));
    }

    /// Only the peaks are added into their classes; the sums must be those of adding every bin
    /// of the range (a non-peak adding 0) in bin order, bit for bit, whatever share of the bins
    /// are peaks: noise, a sparse spectrum with long runs of zeros, and silence, through one
    /// scratch reused across frames.
    #[test]
    fn adding_only_the_peaks_gives_the_sums_of_all_bins() {
        let bin_hz = 22_050.0 / 2048.0;
        let table = PitchTable::new(bin_hz, 1025);
        let mut scratch = ChromaScratch::default();
        let mut noise = crate::features::test_noise(0x9e37_79b9_7f4a_7c15);
        for frame in 0..60 {
            let mag: Vec<f32> = (0..1025)
                .map(|k| match frame % 3 {
                    // Spread over orders of magnitude, as real spectra are: many small peaks.
                    0 => noise().powi(6),
                    1 if k % 37 == 0 => noise() + 0.5,
                    _ => 0.0,
                })
                .collect();
            let power: Vec<f32> = mag.iter().map(|m| m * m).collect();
            let got = peak_chroma(&mag, &power, &table, &mut scratch);
            let mut want = [0.0f32; 12];
            for (&m, &w) in scratch.pitch.iter().zip(&scratch.weight) {
                want[((m + 0.5) as usize) % 12] += w;
            }
            assert_eq!(
                got.map(f32::to_bits),
                want.map(f32::to_bits),
                "frame {frame}"
            );
        }
    }

    #[test]
    fn low_and_high_peaks_land_in_their_class() {
        let bin_hz = 22_050.0 / 2048.0;
        // A Hann-windowed sine's main lobe, sampled at the bins around `f`.
        for (f, pc) in [
            (110.0f64, 9usize),
            (116.54, 10),
            (65.41, 0),
            (440.0, 9),
            (3951.07, 11),
        ] {
            let mut mag = vec![0.0f32; 1025];
            let centre = f / bin_hz;
            for (k, m) in mag.iter_mut().enumerate() {
                let d = k as f64 - centre;
                if d.abs() < 2.0 {
                    *m = (0.5 + 0.5 * (std::f64::consts::PI * d / 2.0).cos()) as f32;
                }
            }
            let power: Vec<f32> = mag.iter().map(|m| m * m).collect();
            let c = peak_chroma(
                &mag,
                &power,
                &PitchTable::new(bin_hz, 1025),
                &mut ChromaScratch::default(),
            );
            let best = (0..12).fold(0, |b, i| if c[i] > c[b] { i } else { b });
            assert_eq!(best, pc, "{f} Hz: {c:?}");
        }
    }
}

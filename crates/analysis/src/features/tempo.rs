//! Tempo and onset rate from an onset-strength envelope, in bounded memory: the envelope is
//! folded into a running autocorrelation (a ring of [`MAX_LAG`] past values), so a track of any
//! length costs the same.

/// Longest lag kept, in envelope frames (about 9.3 s at 43 frames per second).
pub const MAX_LAG: usize = 400;
/// Tempo search range, BPM.
pub const MIN_BPM: f64 = 40.0;
pub const MAX_BPM: f64 = 240.0;
/// Frames in the causal moving average subtracted from the envelope.
const AVG_FRAMES: usize = 32;
/// Half-width of the peak-picking window, frames.
const PEAK_HALF: usize = 3;

/// Streaming tempo and onset analysis.
pub struct TempoTracker {
    fps: f64,
    /// Ring of past detrended values, `MAX_LAG + 1` long, stored twice over (value `i` at
    /// `i % len` and `i % len + len`), so the newest `MAX_LAG + 1` values are always one
    /// contiguous slice and the autocorrelation update is one vectorisable pass.
    hist: Vec<f64>,
    /// Ring of past raw values for the moving average.
    raw: Vec<f64>,
    raw_sum: f64,
    ac: Vec<f64>,
    sum_x: f64,
    t: usize,
    ema: f64,
    onsets: u64,
    last_onset: Option<usize>,
}

impl TempoTracker {
    /// `fps`: envelope frames per second.
    pub fn new(fps: f64) -> Self {
        TempoTracker {
            fps,
            hist: vec![0.0; 2 * (MAX_LAG + 1)],
            raw: vec![0.0; AVG_FRAMES],
            raw_sum: 0.0,
            ac: vec![0.0; MAX_LAG + 1],
            sum_x: 0.0,
            t: 0,
            ema: 0.0,
            onsets: 0,
            last_onset: None,
        }
    }

    /// Adds the next onset-strength value.
    pub fn push(&mut self, onset: f64) {
        let onset = if onset.is_finite() {
            onset.max(0.0)
        } else {
            0.0
        };
        let slot = self.t % AVG_FRAMES;
        self.raw_sum += onset - self.raw[slot];
        self.raw[slot] = onset;
        let n = (self.t + 1).min(AVG_FRAMES) as f64;
        let x = (onset - self.raw_sum / n).max(0.0);

        let len = MAX_LAG + 1;
        let p = self.t % len;
        self.hist[p] = x;
        self.hist[p + len] = x;
        self.sum_x += x;
        let avail = self.t.min(MAX_LAG);
        // Lag `l` pairs x with the value at `p + len - l`: the slice read backwards.
        let past = &self.hist[p + len - avail..=p + len];
        for (a, &h) in self.ac[..=avail].iter_mut().zip(past.iter().rev()) {
            *a += x * h;
        }
        self.pick_peak();
        self.ema += (x - self.ema) / 64.0;
        self.t += 1;
    }

    /// Counts an onset at `t - PEAK_HALF` when it is the maximum of its window and clearly above
    /// the recent level.
    fn pick_peak(&mut self) {
        if self.t < 2 * PEAK_HALF {
            return;
        }
        let len = MAX_LAG + 1;
        let at = |i: usize| self.hist[i % len];
        let c = self.t - PEAK_HALF;
        let v = at(c);
        let threshold = 1e-4 + 1.5 * self.ema;
        if v <= threshold {
            return;
        }
        let is_max =
            (self.t - 2 * PEAK_HALF..=self.t).all(|i| i == c || at(i) < v || (at(i) == v && i > c));
        let spaced = self.last_onset.is_none_or(|l| c - l > PEAK_HALF);
        if is_max && spaced {
            self.onsets += 1;
            self.last_onset = Some(c);
        }
    }

    /// Onsets per second.
    pub fn onset_rate(&self) -> f64 {
        if self.t == 0 {
            0.0
        } else {
            self.onsets as f64 / (self.t as f64 / self.fps)
        }
    }

    /// Tempo in BPM (0 when there is no pulse): the tempo whose first four beat multiples
    /// have the highest mean autocorrelation coefficient, smoothed over lags
    /// ([`SMOOTH_FRAMES`]) and weighted by a log-normal prior ([`PRIOR_CENTRE_BPM`],
    /// [`PRIOR_OCTAVES`] wide), searched on a 0.05 BPM grid. No pulse: the mean coefficient
    /// (unsmoothed) at that tempo is below [`MIN_PULSE`].
    pub fn bpm(&self) -> f64 {
        let Some(r) = self.coefficients() else {
            return 0.0;
        };
        let mut best = (0.0f64, f64::NEG_INFINITY, 0.0f64);
        let steps = ((MAX_BPM - MIN_BPM) / 0.05).round() as usize;
        for i in 0..=steps {
            let bpm = MIN_BPM + i as f64 * 0.05;
            let lag = 60.0 * self.fps / bpm;
            let (mut s, mut smooth) = (0.0, 0.0);
            let mut used = 0;
            for k in 1..=4 {
                let l = lag * k as f64;
                if l >= MAX_LAG as f64 {
                    break;
                }
                s += interpolate(&r, l);
                smooth += smoothed(&r, l);
                used += 1;
            }
            if used == 0 {
                continue;
            }
            let prior = (-0.5 * ((bpm / PRIOR_CENTRE_BPM).log2() / PRIOR_OCTAVES).powi(2)).exp();
            let score = smooth / used as f64 * prior;
            if score > best.1 {
                best = (bpm, score, s / used as f64);
            }
        }
        if best.2 < MIN_PULSE {
            0.0
        } else {
            best.0
        }
    }

    /// Autocorrelation coefficients of the detrended envelope (lag 0 = 1), or `None` when the
    /// envelope is too short or too flat ([`MIN_ENVELOPE_VARIANCE`]).
    fn coefficients(&self) -> Option<Vec<f64>> {
        if self.t < 4 * PEAK_HALF {
            return None;
        }
        let mean = self.sum_x / self.t as f64;
        let cov = |l: usize| {
            let pairs = self.t.saturating_sub(l).max(1) as f64;
            self.ac[l] / pairs - mean * mean
        };
        let c0 = cov(0);
        if c0 <= MIN_ENVELOPE_VARIANCE {
            return None;
        }
        Some((0..=MAX_LAG).map(|l| cov(l) / c0).collect())
    }
}

/// Variance of the detrended onset envelope below which there is no pulse: steady tones and
/// codec noise stay around 1e-8 and below, a click track or a drum part around 1e-2.
pub const MIN_ENVELOPE_VARIANCE: f64 = 1e-6;

/// Centre and width (standard deviation, octaves) of the log-normal tempo prior. A steady pulse
/// correlates as well at twice its period as at its period, so between a tempo and its half the
/// prior decides: it favours the faster one up to `PRIOR_CENTRE_BPM · √2` (212 BPM). At the slow
/// end, 60 BPM still beats its double while the double's mean coefficient is below 0.69 of its
/// own, as on a click track, where half the double's lags fall between the clicks. A prior at
/// 120 BPM one octave wide halved every steady pulse above 170 BPM.
pub const PRIOR_CENTRE_BPM: f64 = 150.0;
pub const PRIOR_OCTAVES: f64 = 1.5;

/// Minimum mean autocorrelation coefficient for a pulse.
pub const MIN_PULSE: f64 = 0.1;

/// Width (standard deviation, envelope frames) of the Gaussian the coefficients are smoothed
/// with when tempi are compared. Beats fall on whole frames, so a beat period of 14.5 frames
/// puts half of each multiple's correlation at one lag and half at the next: read by linear
/// interpolation, that tempo looked half as periodic as its half (29 frames, nearly all at one
/// lag) and read at half time, and tempi were drawn to whole-frame periods (174 BPM read 172.3).
/// Smoothing gathers a split peak back together.
pub const SMOOTH_FRAMES: f64 = 1.5;

/// The coefficients smoothed by a Gaussian of [`SMOOTH_FRAMES`], read at a fractional lag.
fn smoothed(r: &[f64], lag: f64) -> f64 {
    let reach = 3.0 * SMOOTH_FRAMES;
    let first = (lag - reach).ceil().max(0.0) as usize;
    let last = ((lag + reach).floor() as usize).min(r.len().saturating_sub(1));
    let (mut sum, mut weights) = (0.0, 0.0);
    for (j, &v) in r.iter().enumerate().take(last + 1).skip(first) {
        let d = (j as f64 - lag) / SMOOTH_FRAMES;
        let w = (-0.5 * d * d).exp();
        sum += w * v;
        weights += w;
    }
    if weights > 0.0 {
        sum / weights
    } else {
        0.0
    }
}

fn interpolate(r: &[f64], lag: f64) -> f64 {
    let i = lag.floor() as usize;
    let f = lag - i as f64;
    let a = r.get(i).copied().unwrap_or(0.0);
    let b = r.get(i + 1).copied().unwrap_or(a);
    a + (b - a) * f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impulse_train_tempo() {
        let fps = 22_050.0 / 512.0;
        for bpm in [90.0, 120.0, 140.0] {
            let mut t = TempoTracker::new(fps);
            let period = 60.0 * fps / bpm;
            let frames = (30.0 * fps) as usize;
            let mut next = 5.0;
            for i in 0..frames {
                let v = if (i as f64) >= next {
                    next += period;
                    1.0
                } else {
                    0.0
                };
                t.push(v);
            }
            let got = t.bpm();
            assert!((got - bpm).abs() < 1.5, "{bpm}: {got}");
            assert!(
                (t.onset_rate() - bpm / 60.0).abs() < 0.2,
                "{}",
                t.onset_rate()
            );
        }
    }

    #[test]
    fn silence_has_no_tempo() {
        let mut t = TempoTracker::new(43.0);
        for _ in 0..1000 {
            t.push(0.0);
        }
        assert_eq!(t.bpm(), 0.0);
        assert_eq!(t.onset_rate(), 0.0);
    }
}

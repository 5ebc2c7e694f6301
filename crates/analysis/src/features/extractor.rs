//! The frame-wise feature engine: takes the mono analysis-rate stream in chunks of any size,
//! runs one reused real FFT per hop, and keeps only per-frame accumulators.

use super::chroma;
use super::fastmath::fast_ln;
use super::rfft::{RealFft, RealFftScratch};
use super::spectral;
use super::stats::RunningStat;
use super::tempo::TempoTracker;
use realfft::num_complex::Complex;
use std::sync::Arc;

/// FFT size and hop, samples at the analysis rate (93 ms and 23 ms at 22,050 Hz).
pub const FFT_SIZE: usize = 2048;
pub const HOP: usize = 512;
/// A hop block whose RMS is below this level (dBFS) counts as silent.
pub const SILENCE_DBFS: f64 = -60.0;
/// Bands of the timbre shape used by the fingerprint.
pub const BANDS: usize = 16;
const BAND_MIN_HZ: f64 = 60.0;
/// Scale of the log compression in the onset envelope (magnitudes are full-scale-normalised).
const ONSET_COMPRESSION: f32 = 1000.0;

/// Frame-wise summary of the stream.
#[derive(Clone, Debug, Default)]
pub struct FrameSummary {
    pub samples: u64,
    pub silence_ratio: f64,
    pub centroid: RunningStat,
    pub rolloff: RunningStat,
    pub flatness: RunningStat,
    pub flux: RunningStat,
    pub zcr: RunningStat,
    /// Mean chroma over voiced frames, normalised to sum 1 (zeros when none).
    pub chroma: [f32; 12],
    pub bpm: f64,
    pub onset_rate: f64,
    /// Mean log10 band power over non-silent frames, mean removed (the spectral shape).
    pub bands: [f32; BANDS],
}

/// Groups consecutive bins with the same label into runs `(first, end, label)`, skipping
/// unlabelled bins.
fn runs(labels: &[Option<u8>]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (k, l) in labels.iter().enumerate() {
        let Some(l) = l else { continue };
        let l = usize::from(*l);
        match out.last_mut() {
            Some(last) if last.1 == k && last.2 == l => last.1 = k + 1,
            _ => out.push((k, k + 1, l)),
        }
    }
    out
}

pub struct FrameAnalyzer {
    rate: f64,
    fft: Arc<RealFft>,
    window: Vec<f32>,
    /// The last `FFT_SIZE` samples.
    ring: Vec<f32>,
    hop_buf: Vec<f32>,
    fft_in: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: RealFftScratch,
    mag: Vec<f32>,
    power: Vec<f32>,
    norm: Vec<f32>,
    prev_norm: Vec<f32>,
    log_mag: Vec<f32>,
    prev_log_mag: Vec<f32>,
    bin_scratch: Vec<f32>,
    chroma_scratch: chroma::ChromaScratch,
    mag_scale: f32,
    /// Runs of consecutive bins in the same timbre band.
    band_runs: Vec<(usize, usize, usize)>,
    pitch: Arc<chroma::PitchTable>,
    // Accumulators.
    samples: u64,
    silent_samples: u64,
    centroid: RunningStat,
    rolloff: RunningStat,
    flatness: RunningStat,
    flux: RunningStat,
    zcr: RunningStat,
    chroma: [f64; 12],
    bands: [f64; BANDS],
    band_frames: u64,
    tempo: TempoTracker,
    have_prev: bool,
    last_sample: f32,
}

/// What a `FrameAnalyzer` derives from the rate alone: the FFT plan, the window and the band
/// runs. Built once per thread and rate, since planning the FFT and computing the window cost
/// more than analysing a short file.
#[derive(Clone)]
struct Tables {
    rate: u32,
    fft: Arc<RealFft>,
    window: Vec<f32>,
    mag_scale: f32,
    band_runs: Vec<(usize, usize, usize)>,
    pitch: Arc<chroma::PitchTable>,
}

thread_local! {
    static TABLES: std::cell::RefCell<Option<Tables>> = const { std::cell::RefCell::new(None) };
}

impl Tables {
    fn for_rate(rate: u32) -> Tables {
        TABLES.with_borrow_mut(|cached| {
            if let Some(t) = cached.as_ref().filter(|t| t.rate == rate) {
                return t.clone();
            }
            let t = Tables::build(rate);
            *cached = Some(t.clone());
            t
        })
    }

    fn build(rate: u32) -> Tables {
        let hz = f64::from(rate);
        let fft = Arc::new(RealFft::new(FFT_SIZE));
        let window: Vec<f32> = (0..FFT_SIZE)
            .map(|i| {
                let x = std::f64::consts::TAU * i as f64 / FFT_SIZE as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let window_sum: f32 = window.iter().sum();
        let bins = FFT_SIZE / 2 + 1;
        let bin_hz = hz / FFT_SIZE as f64;
        let nyquist = hz / 2.0;
        let band_of_bin: Vec<Option<u8>> = (0..bins)
            .map(|k| {
                let f = k as f64 * bin_hz;
                if f < BAND_MIN_HZ {
                    return None;
                }
                let pos = (f / BAND_MIN_HZ).ln() / (nyquist / BAND_MIN_HZ).ln() * BANDS as f64;
                Some((pos.floor() as usize).min(BANDS - 1) as u8)
            })
            .collect();
        Tables {
            rate,
            fft,
            window,
            mag_scale: 2.0 / window_sum,
            band_runs: runs(&band_of_bin),
            pitch: Arc::new(chroma::PitchTable::new(bin_hz, bins)),
        }
    }
}

impl FrameAnalyzer {
    pub fn new(rate: u32) -> Self {
        let rate = rate.max(1);
        let Tables {
            fft,
            window,
            mag_scale,
            band_runs,
            pitch,
            ..
        } = Tables::for_rate(rate);
        let rate = f64::from(rate);
        let bins = FFT_SIZE / 2 + 1;
        FrameAnalyzer {
            rate,
            spectrum: vec![Complex::default(); bins],
            scratch: fft.scratch(),
            fft_in: vec![0.0; FFT_SIZE],
            fft,
            window,
            ring: vec![0.0; FFT_SIZE],
            hop_buf: Vec::with_capacity(HOP),
            mag: vec![0.0; bins],
            power: vec![0.0; bins],
            norm: vec![0.0; bins],
            prev_norm: vec![0.0; bins],
            log_mag: vec![0.0; bins],
            prev_log_mag: vec![0.0; bins],
            bin_scratch: Vec::with_capacity(bins),
            chroma_scratch: chroma::ChromaScratch::default(),
            mag_scale,
            band_runs,
            pitch,
            samples: 0,
            silent_samples: 0,
            centroid: RunningStat::default(),
            rolloff: RunningStat::default(),
            flatness: RunningStat::default(),
            flux: RunningStat::default(),
            zcr: RunningStat::default(),
            chroma: [0.0; 12],
            bands: [0.0; BANDS],
            band_frames: 0,
            tempo: TempoTracker::new(rate / HOP as f64),
            have_prev: false,
            last_sample: 0.0,
        }
    }

    /// Feeds the next samples of the mono stream.
    pub fn push(&mut self, mut samples: &[f32]) {
        while !samples.is_empty() {
            let take = (HOP - self.hop_buf.len()).min(samples.len());
            self.hop_buf.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.hop_buf.len() == HOP {
                self.frame();
            }
        }
    }

    /// Processes the last partial hop and returns the summary.
    pub fn finish(mut self) -> FrameSummary {
        if !self.hop_buf.is_empty() {
            self.frame();
        }
        let mut chroma = [0.0f32; 12];
        let total: f64 = self.chroma.iter().sum();
        if total > 0.0 {
            for (c, v) in chroma.iter_mut().zip(self.chroma) {
                *c = (v / total) as f32;
            }
        }
        let mut bands = [0.0f32; BANDS];
        if self.band_frames > 0 {
            let means: Vec<f64> = self
                .bands
                .iter()
                .map(|b| b / self.band_frames as f64)
                .collect();
            let avg = means.iter().sum::<f64>() / BANDS as f64;
            for (o, m) in bands.iter_mut().zip(&means) {
                *o = (m - avg) as f32;
            }
        }
        FrameSummary {
            samples: self.samples,
            silence_ratio: if self.samples == 0 {
                1.0
            } else {
                self.silent_samples as f64 / self.samples as f64
            },
            centroid: self.centroid,
            rolloff: self.rolloff,
            flatness: self.flatness,
            flux: self.flux,
            zcr: self.zcr,
            chroma,
            bpm: self.tempo.bpm(),
            onset_rate: self.tempo.onset_rate(),
            bands,
        }
    }

    crate::simd::wide_method! {
        /// One hop: time-domain measures on the new block, then the spectrum of the last
        /// `FFT_SIZE` samples.
        fn frame(&mut self) => frame_body / frame_avx2
    }

    #[inline(always)] // Compiled into `frame_avx2` too, with the spectral helpers it calls.
    fn frame_body(&mut self) {
        let n = self.hop_buf.len();
        let hop = &self.hop_buf[..];
        let energy = spectral::lane_sum_f64(hop, hop, |s, _| f64::from(s) * f64::from(s));
        // Sign changes, the first against the previous hop's last sample.
        let changed = |p: f32, s: f32| u32::from((s >= 0.0) != (p >= 0.0));
        let crossings = hop.first().map_or(0, |&s| changed(self.last_sample, s))
            + hop
                .iter()
                .zip(hop.get(1..).unwrap_or(&[]))
                .map(|(&p, &s)| changed(p, s))
                .sum::<u32>();
        self.last_sample = hop.last().copied().unwrap_or(self.last_sample);
        let rms = (energy / n as f64).sqrt();
        let silent = rms <= 0.0 || 20.0 * rms.log10() < SILENCE_DBFS;
        self.samples += n as u64;
        if silent {
            self.silent_samples += n as u64;
        }

        self.ring.copy_within(n.., 0);
        let start = FFT_SIZE - n;
        self.ring[start..].copy_from_slice(&self.hop_buf);
        self.hop_buf.clear();
        for ((o, &s), &w) in self.fft_in.iter_mut().zip(&self.ring).zip(&self.window) {
            *o = s * w;
        }
        self.fft
            .process(&mut self.fft_in, &mut self.spectrum, &mut self.scratch);
        // Simple passes over the bins, each one vectorisable: magnitude and power, log
        // magnitude, onset strength (positive log-magnitude change), then pitch-class and band
        // power.
        for ((m, p), c) in self.mag.iter_mut().zip(&mut self.power).zip(&self.spectrum) {
            *m = (c.re * c.re + c.im * c.im).sqrt() * self.mag_scale;
            *p = *m * *m;
        }
        for (l, &m) in self.log_mag.iter_mut().zip(&self.mag) {
            *l = fast_ln(1.0 + ONSET_COMPRESSION * m);
        }
        self.bin_scratch.clear();
        self.bin_scratch.extend(
            self.log_mag
                .iter()
                .zip(&self.prev_log_mag)
                .map(|(&l, &prev)| (l - prev).max(0.0)),
        );
        let onset = spectral::lane_sum(&self.bin_scratch);
        std::mem::swap(&mut self.log_mag, &mut self.prev_log_mag);
        self.tempo.push(f64::from(onset) / self.mag.len() as f64);
        let power_total = spectral::lane_sum(&self.power);
        let mut band = [0.0f32; BANDS + 1];
        for &(a, b, c) in &self.band_runs {
            band[c] += spectral::lane_sum(&self.power[a..b]);
        }

        let norm = power_total.sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for (o, &m) in self.norm.iter_mut().zip(&self.mag) {
            *o = m * inv;
        }
        if !silent {
            let bin_hz = self.rate / FFT_SIZE as f64;
            self.centroid.add(spectral::centroid(&self.mag, bin_hz));
            self.rolloff.add(spectral::rolloff(
                &self.power,
                f64::from(power_total),
                bin_hz,
            ));
            self.flatness.add(spectral::flatness(&self.power));
            if self.have_prev {
                self.flux.add(spectral::flux(&self.norm, &self.prev_norm));
            }
            self.zcr.add(f64::from(crossings) / n as f64);
            let pitch = chroma::peak_chroma(
                &self.mag,
                &self.power,
                &self.pitch,
                &mut self.chroma_scratch,
            );
            chroma::accumulate(&pitch, &mut self.chroma);
            for (acc, &v) in self.bands.iter_mut().zip(&band[..BANDS]) {
                *acc += (f64::from(v) + 1e-10).log10();
            }
            self.band_frames += 1;
        }
        std::mem::swap(&mut self.norm, &mut self.prev_norm);
        self.have_prev = true;
    }
}

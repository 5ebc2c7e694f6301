//! Log-mel spectrogram front end (Hann window, power spectrum, HTK mel scale, triangular filters).

use crate::model::manifest::{LogKind, MelSpec};
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// A reusable spectrogram plan for one manifest.
pub(crate) struct MelFrontend {
    spec: MelSpec,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// `filters[m]` = (first FFT bin, weights).
    filters: Vec<(usize, Vec<f32>)>,
}

fn hz_to_mel(f: f32) -> f32 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f32) -> f32 {
    700.0 * (10f32.powf(m / 2595.0) - 1.0)
}

impl MelFrontend {
    pub(crate) fn new(spec: &MelSpec, sample_rate: u32) -> MelFrontend {
        let n = spec.n_fft;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos())
            .collect();
        let fmax = spec.fmax.unwrap_or(sample_rate as f32 / 2.0);
        let (lo, hi) = (hz_to_mel(spec.fmin), hz_to_mel(fmax));
        let edges: Vec<f32> = (0..spec.n_mels + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f32 / (spec.n_mels + 1) as f32))
            .collect();
        let bin_hz = sample_rate as f32 / n as f32;
        let bins = n / 2 + 1;
        let filters = (0..spec.n_mels)
            .map(|m| {
                let (l, c, r) = (edges[m], edges[m + 1], edges[m + 2]);
                let weights: Vec<f32> = (0..bins)
                    .map(|k| {
                        let f = k as f32 * bin_hz;
                        if f <= l || f >= r {
                            0.0
                        } else if f <= c {
                            (f - l) / (c - l)
                        } else {
                            (r - f) / (r - c)
                        }
                    })
                    .collect();
                let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = weights
                    .iter()
                    .rposition(|&w| w > 0.0)
                    .map_or(first, |p| p + 1);
                (first, weights[first..last].to_vec())
            })
            .collect();
        MelFrontend {
            spec: spec.clone(),
            fft,
            window,
            filters,
        }
    }

    /// Log-mel frames of `audio` (no centering: frame t covers `t·hop .. t·hop + n_fft`), as
    /// `frames × n_mels`, row-major. Audio shorter than one FFT is zero-padded to one frame.
    pub(crate) fn frames(&self, audio: &[f32]) -> (usize, Vec<f32>) {
        let n = self.spec.n_fft;
        let hop = self.spec.hop_length;
        let count = if audio.len() <= n {
            1
        } else {
            1 + (audio.len() - n) / hop
        };
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0f32; n / 2 + 1];
        let mut out = Vec::with_capacity(count * self.spec.n_mels);
        for t in 0..count {
            let start = t * hop;
            for (i, x) in input.iter_mut().enumerate() {
                *x = audio.get(start + i).copied().unwrap_or(0.0) * self.window[i];
            }
            // Lengths match the plan, so the transform cannot fail.
            if self.fft.process(&mut input, &mut spectrum).is_err() {
                spectrum.iter_mut().for_each(|c| *c = Default::default());
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (first, w) in &self.filters {
                let e: f32 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                out.push(self.log(e));
            }
        }
        (count, out)
    }

    /// The value of a silent bin, used to pad short inputs.
    pub(crate) fn floor_value(&self) -> f32 {
        self.log(0.0)
    }

    fn log(&self, e: f32) -> f32 {
        let x = e + self.spec.floor;
        match self.spec.log {
            LogKind::Ln => x.ln(),
            LogKind::Log10 => x.log10(),
            LogKind::Db => 10.0 * x.log10(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_lights_the_right_mel_band() {
        let spec = MelSpec {
            n_fft: 1024,
            hop_length: 512,
            n_mels: 40,
            fmin: 0.0,
            fmax: None,
            log: LogKind::Ln,
            floor: 1e-6,
        };
        let fe = MelFrontend::new(&spec, 22_050);
        let tone: Vec<f32> = (0..22_050)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 22_050.0).sin())
            .collect();
        let (frames, v) = fe.frames(&tone);
        assert_eq!(v.len(), frames * 40);
        let row = &v[40 * 5..40 * 6];
        let best = (0..40)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0);
        let m = hz_to_mel(1000.0) / hz_to_mel(11_025.0) * 41.0 - 1.0;
        assert!(
            (best as f32 - m).abs() <= 1.0,
            "band {best}, expected about {m}"
        );
    }
}

//! Pooling of output frames over time into per-track values, with fixed-order f64 sums so the
//! result is bit-identical for the same input.

use crate::model::manifest::{Layout, Normalize, OutputSpec, PartSpec, Reduce};

/// Output frames of one window: `frames × bins`, row-major.
pub(crate) struct Frames {
    pub frames: usize,
    pub bins: usize,
    pub data: Vec<f32>,
}

impl Frames {
    /// Rearranges a raw output tensor into frames, dropping `trim` frames at each end.
    pub(crate) fn from_tensor(
        spec: &OutputSpec,
        shape: &[i64],
        data: &[f32],
    ) -> Result<Frames, String> {
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        let (t, f, time_major) = match (spec.layout, dims.as_slice()) {
            (Layout::Btf, [1, t, f]) => (*t, *f, true),
            (Layout::Bft, [1, f, t]) => (*t, *f, false),
            (Layout::Bf, [1, f]) => (1, *f, true),
            _ => {
                return Err(format!(
                    "shape {shape:?} does not match layout {:?}",
                    spec.layout
                ))
            }
        };
        if t * f != data.len() || f == 0 {
            return Err(format!(
                "shape {shape:?} does not match {} values",
                data.len()
            ));
        }
        let trim = if spec.layout == Layout::Bf {
            0
        } else {
            spec.trim
        };
        let keep = t.saturating_sub(2 * trim);
        let mut out = Vec::with_capacity(keep * f);
        for ti in trim..trim + keep {
            for fi in 0..f {
                out.push(if time_major {
                    data[ti * f + fi]
                } else {
                    data[fi * t + ti]
                });
            }
        }
        Ok(Frames {
            frames: keep,
            bins: f,
            data: out,
        })
    }
}

/// Running state of one pooled part.
pub(crate) struct Accumulator {
    part: PartSpec,
    frame_rate: Option<f64>,
    bins: usize,
    frames: u64,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    max: Vec<f32>,
    active: Vec<u64>,
    peaks: u64,
}

impl Accumulator {
    pub(crate) fn new(part: &PartSpec, output: &OutputSpec) -> Accumulator {
        Accumulator {
            part: part.clone(),
            frame_rate: output.frame_rate,
            bins: 0,
            frames: 0,
            sum: Vec::new(),
            sum_sq: Vec::new(),
            max: Vec::new(),
            active: Vec::new(),
            peaks: 0,
        }
    }

    pub(crate) fn source(&self) -> &str {
        &self.part.from
    }

    pub(crate) fn add(&mut self, f: &Frames) -> Result<(), String> {
        if self.bins == 0 {
            self.bins = f.bins;
            self.sum = vec![0.0; f.bins];
            self.sum_sq = vec![0.0; f.bins];
            self.max = vec![f32::NEG_INFINITY; f.bins];
            self.active = vec![0; f.bins];
        } else if self.bins != f.bins {
            return Err(format!("{} bins after {}", f.bins, self.bins));
        }
        let thr = self.part.threshold;
        for t in 0..f.frames {
            let row = &f.data[t * f.bins..(t + 1) * f.bins];
            for (b, &v) in row.iter().enumerate() {
                self.sum[b] += v as f64;
                self.sum_sq[b] += (v as f64) * (v as f64);
                self.max[b] = self.max[b].max(v);
                if v >= thr {
                    self.active[b] += 1;
                    if self.part.reduce == Reduce::PeakRate {
                        let prev = (t > 0).then(|| f.data[(t - 1) * f.bins + b]);
                        let next = (t + 1 < f.frames).then(|| f.data[(t + 1) * f.bins + b]);
                        if prev.is_none_or(|p| v > p) && next.is_none_or(|n| v >= n) {
                            self.peaks += 1;
                        }
                    }
                }
            }
        }
        self.frames += f.frames as u64;
        Ok(())
    }

    /// The pooled values of this part.
    pub(crate) fn finish(&self) -> Vec<f32> {
        let n = self.frames.max(1) as f64;
        let per_bin: Vec<f64> = match self.part.reduce {
            Reduce::Mean => self.sum.iter().map(|s| s / n).collect(),
            Reduce::Max => self
                .max
                .iter()
                .map(|&m| if m.is_finite() { m as f64 } else { 0.0 })
                .collect(),
            Reduce::Std => self
                .sum
                .iter()
                .zip(&self.sum_sq)
                .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0).sqrt())
                .collect(),
            Reduce::PeakRate => {
                let secs = self.frames as f64 / self.frame_rate.unwrap_or(1.0);
                let rate = if secs > 0.0 {
                    self.peaks as f64 / secs
                } else {
                    0.0
                };
                return vec![rate as f32];
            }
            Reduce::ActiveRange => {
                let min = self.part.min_frames.max(1) as u64;
                let off = self.part.bin_offset as f32;
                let lo = self.active.iter().position(|&c| c >= min);
                let hi = self.active.iter().rposition(|&c| c >= min);
                return match (lo, hi) {
                    (Some(l), Some(h)) => vec![l as f32 + off, h as f32 + off],
                    _ => vec![0.0, 0.0],
                };
            }
        };
        match self.part.fold {
            Some(k) => {
                let mut folded = vec![0f64; k];
                for (b, v) in per_bin.iter().enumerate() {
                    folded[(b + self.part.bin_offset) % k] += v;
                }
                folded.into_iter().map(|v| v as f32).collect()
            }
            None => per_bin.into_iter().map(|v| v as f32).collect(),
        }
    }
}

/// Applies a normalisation in place (a zero vector stays zero).
pub(crate) fn normalize(v: &mut [f32], how: Normalize) {
    let d: f64 = match how {
        Normalize::None => return,
        Normalize::Sum => v.iter().map(|&x| x as f64).sum(),
        Normalize::L2 => v
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt(),
        Normalize::Max => v.iter().fold(0f64, |m, &x| m.max(x as f64)),
    };
    if d > 0.0 && d.is_finite() {
        v.iter_mut().for_each(|x| *x = (*x as f64 / d) as f32);
    }
}

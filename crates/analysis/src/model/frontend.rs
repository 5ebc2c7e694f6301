//! Turns collected segments into the model's input windows (raw waveform or log-mel).

use crate::model::manifest::{Dim, InputKind, InputSpec};
use crate::model::melspec::MelFrontend;

/// Builds input windows for one manifest.
pub(crate) struct Frontend {
    spec: InputSpec,
    mel: Option<MelFrontend>,
    /// Tensor shape with names replaced by sizes.
    pub(crate) shape: Vec<i64>,
    /// True when the mel axis comes before the time axis in `shape` (log-mel).
    mels_first: bool,
}

impl Frontend {
    pub(crate) fn new(spec: &InputSpec) -> Frontend {
        let mel = match (spec.kind, &spec.mel) {
            (InputKind::LogMel, Some(m)) => Some(MelFrontend::new(m, spec.sample_rate)),
            _ => None,
        };
        let n_mels = spec.mel.as_ref().map_or(1, |m| m.n_mels) as i64;
        let shape = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => *v,
                Dim::Named(n) if n == "window" => spec.window as i64,
                Dim::Named(n) if n == "mels" => n_mels,
                Dim::Named(_) => 1,
            })
            .collect();
        let pos = |name: &str| {
            spec.shape
                .iter()
                .position(|d| *d == Dim::Named(name.into()))
        };
        let mels_first = matches!((pos("mels"), pos("window")), (Some(m), Some(w)) if m < w);
        Frontend {
            spec: spec.clone(),
            mel,
            shape,
            mels_first,
        }
    }

    /// Calls `run` with each input window of `segment`, in order; stops at the first error.
    pub(crate) fn for_each_window<E>(
        &self,
        segment: &[f32],
        mut run: impl FnMut(&[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (window, hop) = (self.spec.window, self.spec.hop);
        match &self.mel {
            None => {
                let pad = self.spec.pad_start;
                let total = pad + segment.len();
                let sample = |i: usize| {
                    if i < pad {
                        0.0
                    } else {
                        segment.get(i - pad).copied().unwrap_or(0.0)
                    }
                };
                let mut buf = vec![0f32; window];
                let mut start = 0;
                loop {
                    for (j, x) in buf.iter_mut().enumerate() {
                        *x = sample(start + j);
                    }
                    run(&buf)?;
                    start += hop;
                    if start + (window - hop) >= total {
                        return Ok(());
                    }
                }
            }
            Some(mel) => {
                let n_mels = self.spec.mel.as_ref().map_or(1, |m| m.n_mels);
                let (frames, values) = mel.frames(segment);
                let floor = mel.floor_value();
                let mut buf = vec![0f32; window * n_mels];
                let mut start = 0;
                loop {
                    for t in 0..window {
                        for m in 0..n_mels {
                            let v = if start + t < frames {
                                values[(start + t) * n_mels + m]
                            } else {
                                floor
                            };
                            let idx = if self.mels_first {
                                m * window + t
                            } else {
                                t * n_mels + m
                            };
                            buf[idx] = v;
                        }
                    }
                    run(&buf)?;
                    start += hop;
                    if start + (window - hop) >= frames {
                        return Ok(());
                    }
                }
            }
        }
    }
}

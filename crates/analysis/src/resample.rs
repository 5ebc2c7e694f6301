//! Streaming mono resampler: chunks of any size in, the analysis rate out, with the filter
//! delay removed so output sample `n` lines up with input time `n / out_rate`. Memory is a few
//! chunks, whatever the track length. While halving the rate does not go below the output rate,
//! half-band stages halve it ([`crate::halfband`]: 44.1 kHz to 22.05 kHz exactly, 48 kHz to
//! 24 kHz, 96 kHz to 48 kHz to 24 kHz), a fraction of the cost of the general FFT resampler,
//! which then takes what is left of the ratio (24 kHz to 22.05 kHz, on half the samples).

use crate::halfband::HalfBand;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Input frames per resampler call.
const CHUNK: usize = 1024;

/// A mono resampler that passes samples through unchanged when the rates match.
pub struct MonoResampler {
    halves: Vec<HalfBand>,
    fft: Option<FftStage>,
}

/// The general resampler with its delay trimming.
struct FftStage {
    fft: Fft<f32>,
    in_rate: u64,
    out_rate: u64,
    pending: Vec<f32>,
    out: Vec<f32>,
    /// Output samples still to drop for the filter delay.
    delay_left: usize,
    in_total: u64,
    out_total: u64,
}

impl MonoResampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, String> {
        let mut halves = Vec::new();
        let mut rate = in_rate;
        while out_rate > 0 && rate & 1 == 0 && rate / 2 >= out_rate {
            halves.push(HalfBand::new());
            rate /= 2;
        }
        let fft = if rate == out_rate {
            None
        } else {
            Some(FftStage::new(rate, out_rate)?)
        };
        Ok(MonoResampler { halves, fft })
    }

    /// Feeds mono samples; `emit` receives resampled output as it becomes available.
    pub fn push(&mut self, input: &[f32], emit: &mut dyn FnMut(&[f32])) {
        let fft = &mut self.fft;
        feed(
            &mut self.halves,
            input,
            &mut |s: &[f32]| match fft.as_mut() {
                Some(f) => f.push(s, emit),
                None => emit(s),
            },
        );
    }

    /// Flushes what is buffered, so the total output matches the input duration.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[f32])) {
        for i in 0..self.halves.len() {
            let (done, rest) = self.halves.split_at_mut(i + 1);
            let fft = &mut self.fft;
            done[i].finish(&mut |s: &[f32]| {
                feed(rest, s, &mut |s: &[f32]| match fft.as_mut() {
                    Some(f) => f.push(s, emit),
                    None => emit(s),
                })
            });
        }
        if let Some(f) = self.fft.as_mut() {
            f.finish(emit);
        }
    }
}

/// Runs `input` through the half-band `stages` in turn, handing the last one's output to `emit`.
fn feed(stages: &mut [HalfBand], input: &[f32], emit: &mut dyn FnMut(&[f32])) {
    match stages.split_first_mut() {
        None => emit(input),
        Some((first, rest)) => first.push(input, &mut |s: &[f32]| feed(rest, s, emit)),
    }
}

impl FftStage {
    fn new(in_rate: u32, out_rate: u32) -> Result<Self, String> {
        let fft = Fft::<f32>::new(
            in_rate as usize,
            out_rate as usize,
            CHUNK,
            1,
            FixedSync::Input,
        )
        .map_err(|e| format!("resampler {in_rate} -> {out_rate} Hz: {e}"))?;
        let out_len = fft.output_frames_max();
        let delay = fft.output_delay();
        Ok(FftStage {
            fft,
            in_rate: u64::from(in_rate),
            out_rate: u64::from(out_rate),
            pending: Vec::with_capacity(CHUNK * 2),
            out: vec![0.0; out_len],
            delay_left: delay,
            in_total: 0,
            out_total: 0,
        })
    }

    fn push(&mut self, input: &[f32], emit: &mut dyn FnMut(&[f32])) {
        self.in_total += input.len() as u64;
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        loop {
            let need = self.fft.input_frames_next();
            if self.pending.len() - pos < need {
                break;
            }
            let chunk = &self.pending[pos..pos + need];
            let (used, written) = run(&mut self.fft, chunk, &mut self.out, None);
            pos += used;
            emit_trimmed(
                &self.out[..written],
                &mut self.delay_left,
                &mut self.out_total,
                u64::MAX,
                emit,
            );
        }
        self.pending.drain(..pos);
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&[f32])) {
        let expected = (self.in_total * self.out_rate).div_ceil(self.in_rate);
        let mut rest = std::mem::take(&mut self.pending);
        // A few calls with silence flush the filter delay; the cap guards against a resampler
        // that never produces output.
        for _ in 0..64 {
            if self.out_total >= expected {
                break;
            }
            let need = self.fft.input_frames_next();
            let take = rest.len().min(need);
            let mut chunk = vec![0.0f32; need];
            chunk[..take].copy_from_slice(&rest[..take]);
            rest.drain(..take);
            let idx = Indexing {
                partial_len: Some(take),
                ..Indexing::default()
            };
            let (_, written) = run(&mut self.fft, &chunk, &mut self.out, Some(&idx));
            emit_trimmed(
                &self.out[..written],
                &mut self.delay_left,
                &mut self.out_total,
                expected,
                emit,
            );
        }
    }
}

fn run(
    fft: &mut Fft<f32>,
    chunk: &[f32],
    out: &mut [f32],
    idx: Option<&Indexing>,
) -> (usize, usize) {
    let frames_out = out.len();
    let (Ok(input), Ok(mut output)) = (
        InterleavedSlice::new(chunk, 1, chunk.len()),
        InterleavedSlice::new_mut(out, 1, frames_out),
    ) else {
        return (chunk.len(), 0);
    };
    // The buffers are sized from the resampler's own limits, so this cannot fail; if it ever
    // did, the chunk is dropped rather than looping.
    fft.process_into_buffer(&input, &mut output, idx)
        .unwrap_or((chunk.len(), 0))
}

fn emit_trimmed(
    mut out: &[f32],
    delay_left: &mut usize,
    out_total: &mut u64,
    cap: u64,
    emit: &mut dyn FnMut(&[f32]),
) {
    let skip = (*delay_left).min(out.len());
    *delay_left -= skip;
    out = &out[skip..];
    let room = usize::try_from(cap.saturating_sub(*out_total)).unwrap_or(usize::MAX);
    let out = &out[..out.len().min(room)];
    if !out.is_empty() {
        *out_total += out.len() as u64;
        emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resample(input: &[f32], from: u32, to: u32, block: usize) -> Vec<f32> {
        let mut r = MonoResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for c in input.chunks(block) {
            r.push(c, &mut |s| out.extend_from_slice(s));
        }
        r.finish(&mut |s| out.extend_from_slice(s));
        out
    }

    #[test]
    fn length_and_alignment() {
        for (from, block) in [
            (44_100u32, 1152usize),
            (48_000, 960),
            (192_000, 4096),
            (8000, 7),
        ] {
            let n = from as usize * 2;
            let f = 441.0f32;
            let input: Vec<f32> = (0..n)
                .map(|i| (std::f32::consts::TAU * f * i as f32 / from as f32).sin())
                .collect();
            let out = resample(&input, from, 22_050, block);
            let expected = (n as u64 * 22_050).div_ceil(u64::from(from)) as usize;
            assert_eq!(out.len(), expected, "{from}");
            // Compare with the ideal sine in the middle: within a fraction of a sample (one
            // sample of offset would be an error of 0.125 at this frequency).
            let mut err = 0.0f32;
            for (i, v) in out.iter().enumerate().skip(2000).take(10_000) {
                let ideal = (std::f32::consts::TAU * f * i as f32 / 22_050.0).sin();
                err = err.max((v - ideal).abs());
            }
            assert!(err < 0.1, "{from}: max error {err}");
        }
    }

    #[test]
    fn two_to_one_keeps_the_band_and_rejects_aliases() {
        // 44.1 kHz to 22.05 kHz: 9 kHz passes at full level, 14 kHz (which would alias to
        // 8.05 kHz) is gone; 48 kHz to 22.05 kHz likewise.
        for from in [44_100u32, 48_000] {
            let rms_out = |f: f64| {
                let input: Vec<f32> = (0..from as usize * 2)
                    .map(|i| (std::f64::consts::TAU * f * i as f64 / f64::from(from)).sin() as f32)
                    .collect();
                let out = resample(&input, from, 22_050, 1152);
                assert_eq!(out.len(), 44_100);
                let mid = &out[2000..40_000];
                (mid.iter().map(|v| v * v).sum::<f32>() / mid.len() as f32).sqrt()
            };
            let pass = rms_out(9000.0);
            assert!(
                (pass - std::f32::consts::FRAC_1_SQRT_2).abs() < 2e-3,
                "{from}: {pass}"
            );
            let alias = rms_out(14_000.0);
            assert!(alias < 1e-3, "{from}: {alias}");
        }
    }

    #[test]
    fn passthrough() {
        let input: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        assert_eq!(resample(&input, 22_050, 22_050, 333), input);
    }
}

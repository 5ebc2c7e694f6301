//! EBU R128 loudness (integrated, range, true peak) and ReplayGain 2.0 on the original
//! channels and rate, in fixed memory.

use crate::r128::R128;
use crate::truepeak::TruePeakMeter;

/// ReplayGain 2.0 reference loudness, LUFS.
pub const REPLAYGAIN_REFERENCE_LUFS: f64 = -18.0;
/// Floor for loudness values: the R128 absolute gate. Silence reports this.
pub const LOUDNESS_FLOOR_LUFS: f64 = -70.0;
/// Floor for peak values in dB (digital silence).
pub const PEAK_FLOOR_DB: f64 = -120.0;

/// Loudness results.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loudness {
    pub integrated_lufs: f32,
    pub range_lu: f32,
    pub true_peak_dbtp: f32,
    pub replaygain_gain_db: f32,
    pub replaygain_peak: f32,
}

/// Streaming loudness meter.
pub struct LoudnessMeter {
    meter: R128,
    true_peak: TruePeakMeter,
    channels: usize,
}

impl LoudnessMeter {
    /// A meter for `channels` channels at `rate` Hz.
    pub fn new(channels: usize, rate: u32) -> Result<Self, String> {
        if channels == 0 || rate == 0 {
            return Err(format!("loudness meter: {channels} channels at {rate} Hz"));
        }
        Ok(LoudnessMeter {
            meter: R128::new(channels, rate),
            true_peak: TruePeakMeter::new(channels, rate),
            channels,
        })
    }

    /// Adds planar frames (one slice per channel, equal lengths).
    pub fn add(&mut self, planes: &[&[f32]]) {
        if planes.len() != self.channels {
            return;
        }
        self.measure_wide(planes);
    }

    crate::simd::wide_method! {
        fn measure_wide(&mut self, planes: &[&[f32]]) => measure / measure_avx2
    }

    #[inline(always)] // Compiled into `measure_avx2` too, with the meters' loops.
    fn measure(&mut self, planes: &[&[f32]]) {
        self.true_peak.add(planes);
        self.meter.add(planes);
    }

    /// The results so far.
    pub fn finish(&self) -> Loudness {
        let integrated = self
            .meter
            .integrated()
            .filter(|v| v.is_finite())
            .unwrap_or(LOUDNESS_FLOOR_LUFS)
            .max(LOUDNESS_FLOOR_LUFS);
        let range = Some(self.meter.range())
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
            .max(0.0);
        let sample_peak = f64::from(self.true_peak.sample_peak());
        let true_peak = f64::from(self.true_peak.peak()).max(sample_peak);
        Loudness {
            integrated_lufs: integrated as f32,
            range_lu: range as f32,
            true_peak_dbtp: to_db(true_peak) as f32,
            replaygain_gain_db: (REPLAYGAIN_REFERENCE_LUFS - integrated) as f32,
            replaygain_peak: sample_peak as f32,
        }
    }
}

fn to_db(linear: f64) -> f64 {
    if linear > 0.0 {
        (20.0 * linear.log10()).max(PEAK_FLOOR_DB)
    } else {
        PEAK_FLOOR_DB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_reports_floors() {
        let mut m = LoudnessMeter::new(2, 48_000).unwrap();
        let z = vec![0.0f32; 48_000];
        m.add(&[&z, &z]);
        let l = m.finish();
        assert_eq!(l.integrated_lufs, -70.0);
        assert_eq!(l.true_peak_dbtp, -120.0);
        assert_eq!(l.replaygain_gain_db, 52.0);
    }
}

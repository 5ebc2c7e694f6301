//! The streaming decode loop: packets → decoder → loudness on the original channels, and a mono
//! downmix resampled to the analysis rate handed on chunk by chunk. Damage part-way through
//! stops decoding and is reported, so the caller can return a partial result.

use crate::error::AnalysisError;
use crate::loudness::{Loudness, LoudnessMeter};
use crate::open::{map_err, Opened};
use crate::options::Options;
use crate::resample::MonoResampler;
use symphonia::core::audio::sample::Sample;
use symphonia::core::audio::{Audio, AudioBuffer, GenericAudioBufferRef};
use symphonia::core::errors::Error as SymError;
use trackmill_types::Stage;

/// What the decode loop produced.
pub struct Decoded {
    /// Frames decoded at the source rate.
    pub frames: u64,
    pub sample_rate: u32,
    pub channels: usize,
    pub loudness: Loudness,
    /// Set when decoding stopped early because of damage.
    pub damage: Option<String>,
    /// Set when the stream ended with a read error (often a truncated file).
    pub ended_abruptly: bool,
    /// Set when [`Options::max_decode_s`] stopped decoding.
    pub capped: bool,
    pub notes: Vec<String>,
}

impl Decoded {
    pub fn seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.frames as f64 / f64::from(self.sample_rate)
        }
    }
}

/// Per-stream state created from the first decoded buffer.
struct Stream {
    rate: u32,
    channels: usize,
    meter: LoudnessMeter,
    resampler: MonoResampler,
}

/// Decodes the selected track to the end (or to the first unrecoverable damage), calling
/// `on_mono` with the analysis-rate mono stream.
pub fn decode(
    opened: &mut Opened,
    opts: &Options,
    on_mono: &mut dyn FnMut(&[f32]),
) -> Result<Decoded, AnalysisError> {
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut stream: Option<Stream> = None;
    let mut frames = 0u64;
    let mut damage = None;
    let mut ended_abruptly = false;
    let mut capped = false;
    let mut notes = Vec::new();
    let mut consecutive_errors = 0u32;
    let mut skipped = 0u64;
    let mut first_error: Option<String> = None;
    let max_frames = |rate: u32| {
        opts.max_decode_s
            .map(|s| (s.max(0.0) * f64::from(rate)) as u64)
            .unwrap_or(u64::MAX)
    };

    loop {
        let packet = match opened.reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ended_abruptly = true;
                break;
            }
            Err(SymError::IoError(e)) => {
                let err = AnalysisError::io(Stage::Decode, &e);
                if frames == 0 || err.class() != trackmill_types::FailureClass::Corrupt {
                    return Err(err);
                }
                damage = Some(format!("read error: {e}"));
                break;
            }
            Err(SymError::ResetRequired) => {
                if frames > 0 {
                    notes.push("stream changed part-way; analysed the first part".into());
                }
                break;
            }
            Err(e) => {
                if frames == 0 {
                    return Err(map_err(Stage::Decode, e));
                }
                damage = Some(format!("demuxer error: {e}"));
                break;
            }
        };
        if packet.track_id != opened.track_id {
            continue;
        }
        let buf = match opened.decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymError::DecodeError(m)) => {
                skipped += 1;
                consecutive_errors += 1;
                first_error.get_or_insert_with(|| m.to_string());
                if consecutive_errors > opts.max_consecutive_decode_errors {
                    if frames == 0 {
                        return Err(AnalysisError::corrupt(Stage::Decode, m));
                    }
                    damage = Some(format!("undecodable data: {m}"));
                    break;
                }
                continue;
            }
            Err(SymError::IoError(e)) => {
                skipped += 1;
                consecutive_errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                if consecutive_errors > opts.max_consecutive_decode_errors {
                    if frames == 0 {
                        return Err(AnalysisError::corrupt(Stage::Decode, e.to_string()));
                    }
                    damage = Some(format!("undecodable data: {e}"));
                    break;
                }
                continue;
            }
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                if frames == 0 {
                    return Err(map_err(Stage::Decode, e));
                }
                damage = Some(format!("decoder error: {e}"));
                break;
            }
        };
        consecutive_errors = 0;
        let n = buf.frames();
        if n == 0 {
            continue;
        }
        let rate = buf.spec().rate();
        let channels = buf.spec().channels().count();
        if channels == 0 || rate == 0 {
            continue;
        }
        let st = match stream.as_mut() {
            Some(st) => {
                if st.rate != rate || st.channels != channels {
                    notes.push(format!(
                        "stream format changed at {:.1} s; analysed the first part",
                        frames as f64 / f64::from(st.rate)
                    ));
                    break;
                }
                st
            }
            None => {
                let meter = LoudnessMeter::new(channels, rate)
                    .map_err(|m| AnalysisError::unsupported(Stage::Decode, m))?;
                let resampler = MonoResampler::new(rate, opts.analysis_rate)
                    .map_err(|m| AnalysisError::unsupported(Stage::Decode, m))?;
                stream.insert(Stream {
                    rate,
                    channels,
                    meter,
                    resampler,
                })
            }
        };
        let slices = as_f32_planes(&buf, &mut planes);
        st.meter.add(&slices);
        downmix(&slices, n, &mut mono);
        st.resampler.push(&mono, on_mono);
        frames += n as u64;
        if frames >= max_frames(rate) {
            capped = true;
            break;
        }
    }

    if skipped > 0 {
        notes.push(format!(
            "{skipped} undecodable packets skipped (first: {})",
            first_error.unwrap_or_default()
        ));
    }
    let Some(mut st) = stream else {
        return Err(if ended_abruptly {
            AnalysisError::truncated(Stage::Decode, "file ends before any audio")
        } else {
            AnalysisError::corrupt(Stage::Decode, "no audio could be decoded")
        });
    };
    st.resampler.finish(on_mono);
    Ok(Decoded {
        frames,
        sample_rate: st.rate,
        channels: st.channels,
        loudness: st.meter.finish(),
        damage,
        ended_abruptly,
        capped,
        notes,
    })
}

/// The decoded planes as f32 with every non-finite sample made 0: the decoder's own planes
/// when they are f32 and all finite (no copy), else converted into `owned`. The common integer
/// formats are converted here rather than by symphonia's generic conversion, with the same
/// values: i16 / 2^15 is exact, and an i32 rounded once to f32 then scaled by 2^-31 is the
/// same correctly rounded value as symphonia's division in f64.
fn as_f32_planes<'a>(
    buf: &'a GenericAudioBufferRef<'_>,
    owned: &'a mut Vec<Vec<f32>>,
) -> Vec<&'a [f32]> {
    fn convert<'a, S: Sample>(
        b: &AudioBuffer<S>,
        owned: &'a mut Vec<Vec<f32>>,
        f: impl Fn(S) -> f32,
    ) -> Vec<&'a [f32]> {
        owned.resize_with(b.num_planes(), Vec::new);
        for (dst, src) in owned.iter_mut().zip(b.iter_planes()) {
            dst.clear();
            dst.extend(src.iter().map(|&s| f(s)));
        }
        owned.iter().map(Vec::as_slice).collect()
    }
    let finite = |s: f32| if s.is_finite() { s } else { 0.0 };
    match buf {
        GenericAudioBufferRef::F32(b) => {
            // A fold rather than `all`, so that the check vectorises instead of branching.
            let clean = b
                .iter_planes()
                .all(|p| p.iter().fold(true, |ok, s| ok & s.is_finite()));
            if clean {
                b.iter_planes().collect()
            } else {
                convert(b, owned, finite)
            }
        }
        GenericAudioBufferRef::S16(b) => convert(b, owned, |s| f32::from(s) / 32_768.0),
        GenericAudioBufferRef::S32(b) => convert(b, owned, |s| s as f32 * (1.0 / 2_147_483_648.0)),
        other => {
            other.copy_to_vecs_planar::<f32>(owned);
            for s in owned.iter_mut().flatten() {
                *s = finite(*s);
            }
            owned.iter().map(Vec::as_slice).collect()
        }
    }
}

/// Mean of the channels (the first `n` samples of each plane) into `out`.
fn downmix(planes: &[&[f32]], n: usize, out: &mut Vec<f32>) {
    out.clear();
    match planes {
        [] => {}
        [only] => out.extend_from_slice(&only[..n]),
        [first, rest @ ..] => {
            out.extend_from_slice(&first[..n]);
            for p in rest {
                for (o, &s) in out.iter_mut().zip(&p[..n]) {
                    *o += s;
                }
            }
            let k = 1.0 / planes.len() as f32;
            for o in out.iter_mut() {
                *o *= k;
            }
        }
    }
}

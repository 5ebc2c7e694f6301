//! Opening a file for decoding: the one open of the file ([`open_input`]: never blocks, refuses
//! what is not a regular file), format detection from content (never the extension), track
//! selection and decoder creation, with symphonia's formats and codecs plus libopus for Opus.

use crate::error::AnalysisError;
use crate::source::Window;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::{Hint, Probe};
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::default::formats as fmt;
use symphonia_adapter_libopus::OpusDecoder;
use trackmill_types::Stage;

/// Read-ahead buffer of the demuxer's byte stream.
const STREAM_BUFFER: usize = 64 * 1024;

/// A demuxer positioned at the start, the chosen audio track's decoder and its properties.
pub struct Opened {
    pub reader: Box<dyn FormatReader>,
    pub decoder: Box<dyn AudioDecoder>,
    pub track_id: u32,
    pub container: &'static str,
    pub codec: &'static str,
    pub bits_per_sample: Option<u16>,
    /// Container duration, seconds, when the container states it.
    pub duration_s: Option<f64>,
    /// Bytes of the file after leading tags (for the bitrate estimate).
    pub audio_bytes: u64,
}

/// Opens `path` once for everything the analysis reads (tags and audio): read-only,
/// non-blocking and close-on-exec, and with `follow_symlinks` false also `O_NOFOLLOW`. The
/// descriptor is then checked with `fstat`: anything but a regular file (a FIFO, a device or a
/// socket swapped in after the scan) fails at once as corrupt, "not a regular file", instead of
/// blocking `open` or `read` until the job's deadline. Returns the file and its length.
pub fn open_input(path: &Path, follow_symlinks: bool) -> Result<(File, u64), AnalysisError> {
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    // std adds O_CLOEXEC to every open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) if !follow_symlinks => AnalysisError::corrupt(
                Stage::Open,
                "is a symbolic link (library.follow_symlinks = false)",
            ),
            _ => AnalysisError::io(Stage::Open, &e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| AnalysisError::io(Stage::Open, &e))?;
    if !meta.is_file() {
        return Err(AnalysisError::corrupt(Stage::Open, "not a regular file"));
    }
    Ok((file, meta.len()))
}

/// Formats only: tags are read by lofty, so symphonia's metadata readers stay unregistered.
fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let mut p = Probe::default();
        p.register_format::<fmt::AdtsReader<'_>>();
        p.register_format::<fmt::CafReader<'_>>();
        p.register_format::<fmt::FlacReader<'_>>();
        p.register_format::<fmt::IsoMp4Reader<'_>>();
        p.register_format::<fmt::MpaReader<'_>>();
        p.register_format::<fmt::AiffReader<'_>>();
        p.register_format::<fmt::WavReader<'_>>();
        p.register_format::<fmt::OggReader<'_>>();
        p.register_format::<fmt::MkvReader<'_>>();
        p
    })
}

/// symphonia's decoders plus libopus for Opus.
fn codecs() -> &'static CodecRegistry {
    static CODECS: OnceLock<CodecRegistry> = OnceLock::new();
    CODECS.get_or_init(|| {
        let mut r = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut r);
        r.register_audio_decoder::<OpusDecoder>();
        r
    })
}

/// Maps a symphonia error in `stage` to a typed error.
pub fn map_err(stage: Stage, e: SymError) -> AnalysisError {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AnalysisError::truncated(stage, "unexpected end of file")
        }
        SymError::IoError(io) => AnalysisError::io(stage, &io),
        SymError::Unsupported(m) => AnalysisError::unsupported(stage, m),
        other => AnalysisError::corrupt(stage, other.to_string()),
    }
}

/// Detects the format of `file` from its content and prepares to decode its audio track.
pub fn open(file: File, file_len: u64) -> Result<Opened, AnalysisError> {
    if file_len == 0 {
        return Err(AnalysisError::corrupt(Stage::Probe, "empty file"));
    }
    let window = Window::new(file, file_len).map_err(|e| AnalysisError::io(Stage::Open, &e))?;
    let audio_bytes = window.audio_len();
    if audio_bytes == 0 {
        return Err(AnalysisError::corrupt(Stage::Probe, "only tags, no audio"));
    }
    let mss = MediaSourceStream::new(
        Box::new(window),
        MediaSourceStreamOptions {
            buffer_len: STREAM_BUFFER,
        },
    );
    let reader = probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymError::Unsupported(_) => {
                AnalysisError::corrupt(Stage::Probe, "not a recognised audio format")
            }
            SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                AnalysisError::corrupt(Stage::Probe, "not a recognised audio format")
            }
            other => map_err(Stage::Probe, other),
        })?;
    let container = match reader.format_info().short_name {
        "isomp4" => "mp4",
        "wave" => "wav",
        "matroska" => "mkv",
        other => other,
    };
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| AnalysisError::unsupported(Stage::Probe, "no audio track"))?;
    let Some(CodecParameters::Audio(params)) = &track.codec_params else {
        return Err(AnalysisError::unsupported(
            Stage::Probe,
            "no audio codec parameters",
        ));
    };
    let track_id = track.id;
    let sample_rate = params.sample_rate.filter(|&r| r > 0);
    let bits_per_sample = params.bits_per_sample.and_then(|b| u16::try_from(b).ok());
    let duration_s = match (track.num_frames, sample_rate) {
        (Some(n), Some(r)) if n > 0 => Some(n as f64 / f64::from(r)),
        _ => track
            .time_base
            .zip(track.duration)
            .and_then(|(tb, d)| tb.calc_duration(d))
            .map(|t| t.as_secs_f64())
            .filter(|s| *s > 0.0),
    };
    let decoder = codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(m) => AnalysisError::unsupported(Stage::Probe, m),
            other => map_err(Stage::Probe, other),
        })?;
    let codec_name = decoder.codec_info().short_name;
    let codec = if codec_name.starts_with("pcm") {
        "pcm"
    } else {
        codec_name
    };
    Ok(Opened {
        reader,
        decoder,
        track_id,
        container,
        codec,
        bits_per_sample,
        duration_s,
        audio_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackmill_types::FailureClass;

    fn refusal(path: &Path, follow: bool) -> String {
        let e = open_input(path, follow).expect_err("refused");
        let f = e.to_failure();
        assert_eq!(f.class, FailureClass::Corrupt, "{f:?}");
        f.message.into_string()
    }

    #[test]
    fn only_regular_files_are_opened_and_a_fifo_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("swapped.flac");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(refusal(&fifo, true).ends_with("not a regular file"));
        assert!(refusal(dir.path(), true).ends_with("not a regular file"));

        let file = dir.path().join("a.flac");
        std::fs::write(&file, b"0123456789").unwrap();
        let link = dir.path().join("link.flac");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let (_, len) = open_input(&link, true).unwrap();
        assert_eq!(len, 10);
        assert!(refusal(&link, false).contains("symbolic link"));
        assert!(open_input(&file, false).is_ok());
    }
}

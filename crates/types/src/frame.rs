//! Length-prefixed postcard frames. The length (u32, little-endian) is checked against the maximum
//! before any allocation, so a hostile or garbage prefix can never make a reader allocate much.
//! This module is the one place that names the codec.

use serde::{de::DeserializeOwned, Serialize};
use std::io::{self, Read, Write};

/// Largest frame any trackmill process accepts (results with embeddings are far smaller).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the channel")]
    Closed,
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame truncated: {0}")]
    Truncated(io::Error),
    #[error("malformed frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("i/o error on channel: {0}")]
    Io(io::Error),
    #[error("frame stalled: it began but was not whole within {within:?}")]
    Stalled { within: std::time::Duration },
}

impl FrameError {
    /// True for errors that mean the peer spoke garbage (a protocol violation), not a closed pipe.
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. }
                | FrameError::Decode(_)
                | FrameError::Truncated(_)
                | FrameError::Stalled { .. }
        )
    }
}

/// Encodes `msg` as one frame (prefix + payload).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// The codec's encoding of a length (LEB128, as it prefixes every list and string): for building
/// frames by hand in tests and in the fault engine's lies.
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Length of `msg`'s payload when encoded, computed without encoding it into a buffer.
pub fn encoded_len<T: Serialize + ?Sized>(msg: &T) -> Result<usize, FrameError> {
    Ok(postcard::serialize_with_flavor(
        msg,
        postcard::ser_flavors::Size::default(),
    )?)
}

/// True when `msg` can be sent as one frame (its payload is at most [`MAX_FRAME`] bytes).
pub fn fits_frame<T: Serialize + ?Sized>(msg: &T) -> bool {
    encoded_len(msg).is_ok_and(|len| len <= MAX_FRAME)
}

/// Checks a frame header and returns the payload length.
pub fn payload_len(header: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a payload (without its prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let buf = encode(msg)?;
    w.write_all(&buf).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame. A clean end of stream before a header is [`FrameError::Closed`].
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R, max: usize) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        header_read(r.read(&mut header[got..]), &mut got)?;
    }
    let len = payload_len(header, max)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(payload_error)?;
    decode(&payload)
}

/// Accounts for one read of the 4-byte header: the bytes it got, or why the frame cannot come.
fn header_read(read: io::Result<usize>, got: &mut usize) -> Result<(), FrameError> {
    match read {
        Ok(0) if *got == 0 => Err(FrameError::Closed),
        Ok(0) => Err(FrameError::Truncated(io::ErrorKind::UnexpectedEof.into())),
        Ok(n) => {
            *got += n;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// A payload that ended early is truncated; any other failure is I/O.
fn payload_error(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated(e),
        _ => FrameError::Io(e),
    }
}

#[cfg(feature = "tokio")]
mod async_io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    pub async fn write_frame_async<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
    where
        W: AsyncWrite + Unpin,
        T: Serialize,
    {
        let buf = encode(msg)?;
        w.write_all(&buf).await.map_err(FrameError::Io)?;
        w.flush().await.map_err(FrameError::Io)
    }

    /// Async twin of [`read_frame`]. Cancel-safety: not cancel-safe; run it in its own task.
    pub async fn read_frame_async<R, T>(r: &mut R, max: usize) -> Result<T, FrameError>
    where
        R: AsyncRead + Unpin,
        T: DeserializeOwned,
    {
        read_frame_within(r, max, None).await
    }

    /// [`read_frame_async`], where a frame that has begun must be whole within `body`: a peer
    /// may take any time to start a frame (a worker analyses for minutes) but not to finish
    /// one, so part of a frame and then silence is [`FrameError::Stalled`] instead of a reader
    /// waiting forever.
    pub async fn read_frame_within<R, T>(
        r: &mut R,
        max: usize,
        body: Option<std::time::Duration>,
    ) -> Result<T, FrameError>
    where
        R: AsyncRead + Unpin,
        T: DeserializeOwned,
    {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got == 0 {
            header_read(r.read(&mut header).await, &mut got)?;
        }
        let rest = async {
            while got < 4 {
                header_read(r.read(&mut header[got..]).await, &mut got)?;
            }
            let len = payload_len(header, max)?;
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload).await.map_err(payload_error)?;
            Ok::<_, FrameError>(payload)
        };
        let payload = match body {
            Some(within) => tokio::time::timeout(within, rest)
                .await
                .map_err(|_| FrameError::Stalled { within })??,
            None => rest.await?,
        };
        decode(&payload)
    }
}

#[cfg(feature = "tokio")]
pub use async_io::{read_frame_async, read_frame_within, write_frame_async};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FromWorker, Hello, Role, ToWorker, PROTOCOL_VERSION};
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let msg = FromWorker::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            pid: 42,
            role: Role::Worker,
        });
        let buf = encode(&msg).unwrap();
        let back: FromWorker = read_frame(&mut &buf[..], MAX_FRAME).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let buf = u32::MAX.to_le_bytes();
        let err = read_frame::<_, ToWorker>(&mut &buf[..], MAX_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn a_frame_begun_and_not_finished_is_stalled() {
        let (mut near, mut far) = tokio::io::duplex(64);
        let msg = FromWorker::Hello(Hello::new(Role::Worker));
        let buf = encode(&msg).unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut far, &buf[..buf.len() - 1])
            .await
            .unwrap();
        let within = std::time::Duration::from_secs(10);
        let err = read_frame_within::<_, FromWorker>(&mut near, MAX_FRAME, Some(within))
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Stalled { .. }), "{err}");
        assert!(err.is_protocol());
        // Silence before a frame begins is no stall: the whole frame arrives later.
        let (mut near, mut far) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            read_frame_within::<_, FromWorker>(&mut near, MAX_FRAME, Some(within)).await
        });
        tokio::time::sleep(within * 3).await;
        tokio::io::AsyncWriteExt::write_all(&mut far, &buf)
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), msg);
    }

    #[test]
    fn empty_stream_is_closed() {
        let err = read_frame::<_, ToWorker>(&mut &[][..], MAX_FRAME).unwrap_err();
        assert!(matches!(err, FrameError::Closed));
    }

    proptest! {
        #[test]
        fn truncated_frames_error(cut in 0usize..64) {
            let msg = FromWorker::Hello(Hello { protocol: PROTOCOL_VERSION, pid: 7, role: Role::Worker });
            let buf = encode(&msg).unwrap();
            let cut = cut.min(buf.len() - 1);
            if cut > 0 {
                let r = read_frame::<_, FromWorker>(&mut &buf[..cut], MAX_FRAME);
                prop_assert!(r.is_err());
            }
        }

        #[test]
        fn garbage_never_panics_nor_allocates_much(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            // A small max proves the length check runs before the allocation.
            let _ = read_frame::<_, FromWorker>(&mut &bytes[..], 1024);
            let _ = read_frame::<_, crate::protocol::ToDb>(&mut &bytes[..], 1024);
            let _ = read_frame::<_, crate::protocol::FromDb>(&mut &bytes[..], 1024);
        }
    }
}

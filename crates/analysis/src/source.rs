//! The byte source handed to the demuxer: the file with any leading ID3v2 tags skipped, so a
//! large cover or thousands of tag frames never reach symphonia (which would read them into
//! memory or give up probing after its 1 MB scan limit).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use symphonia::core::io::MediaSource;

/// A window of a file starting at `start`: offsets seen by the reader are relative to it.
pub struct Window {
    file: File,
    start: u64,
    len: u64,
}

impl Window {
    /// Opens the audio window of `file` (of total length `file_len`): everything after the
    /// leading ID3v2 tags.
    pub fn new(mut file: File, file_len: u64) -> io::Result<Self> {
        let start = skip_id3v2(&mut file, file_len)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(Window {
            file,
            start,
            len: file_len - start,
        })
    }

    /// Bytes in the window.
    pub fn audio_len(&self) -> u64 {
        self.len
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for Window {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let abs = match pos {
            SeekFrom::Start(p) => SeekFrom::Start(self.start.saturating_add(p)),
            SeekFrom::End(d) => SeekFrom::End(d),
            SeekFrom::Current(d) => SeekFrom::Current(d),
        };
        let got = self.file.seek(abs)?;
        if got < self.start {
            self.file.seek(SeekFrom::Start(self.start))?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the audio",
            ));
        }
        Ok(got - self.start)
    }
}

/// Reads `file` at its own position with `pread`, so several readers can share one descriptor
/// (the tag reader and the demuxer's [`Window`]) without moving each other's offset.
pub struct PositionalReader<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> PositionalReader<'a> {
    pub fn new(file: &'a File) -> Self {
        PositionalReader { file, pos: 0 }
    }
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PositionalReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let base = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.file.metadata()?.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}

impl MediaSource for Window {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Offset of the first byte after the leading ID3v2 tags (0 when there are none). A tag whose
/// stated size runs past the end of the file is not skipped: the demuxer then reports the damage.
pub fn skip_id3v2<R: Read + Seek>(file: &mut R, file_len: u64) -> io::Result<u64> {
    let mut pos = 0u64;
    // Files sometimes carry several tags back to back; a few is plenty.
    for _ in 0..8 {
        file.seek(SeekFrom::Start(pos))?;
        let mut h = [0u8; 10];
        if read_full(file, &mut h)? < 10 {
            break;
        }
        match id3v2_size(&h) {
            Some(size) if pos + size <= file_len => pos += size,
            _ => break,
        }
    }
    Ok(pos)
}

/// Total size (header, body, footer) of the ID3v2 tag whose header is `h`, if it is one.
pub fn id3v2_size(h: &[u8; 10]) -> Option<u64> {
    if &h[0..3] != b"ID3" || h[3] == 0xFF || h[4] == 0xFF || h[6..10].iter().any(|b| b & 0x80 != 0)
    {
        return None;
    }
    let body = h[6..10]
        .iter()
        .fold(0u64, |acc, &b| (acc << 7) | u64::from(b));
    let footer = if h[3] >= 4 && h[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + body + footer)
}

/// Counts the pictures (APIC / PIC frames) in the ID3v2 tags that fill `file[0..end]`, and
/// their total size, reading frame headers only. Best effort: a damaged tag stops the count.
pub fn id3v2_pictures<R: Read + Seek>(file: &mut R, end: u64) -> io::Result<(u32, u64)> {
    let (mut count, mut bytes) = (0u32, 0u64);
    let mut tag_start = 0u64;
    while tag_start + 10 <= end {
        file.seek(SeekFrom::Start(tag_start))?;
        let mut h = [0u8; 10];
        if read_full(file, &mut h)? < 10 {
            break;
        }
        let Some(size) = id3v2_size(&h) else { break };
        let tag_end = (tag_start + size).min(end);
        let version = h[3];
        let mut pos = tag_start + 10;
        if h[5] & 0x40 != 0 && version >= 3 {
            // Extended header: its size (v2.4 synchsafe and inclusive, v2.3 exclusive).
            let mut e = [0u8; 4];
            file.seek(SeekFrom::Start(pos))?;
            if read_full(file, &mut e)? < 4 {
                break;
            }
            pos += if version >= 4 {
                u64::from(synchsafe(e))
            } else {
                4 + u64::from(u32::from_be_bytes(e))
            };
        }
        let header_len: u64 = if version == 2 { 6 } else { 10 };
        while pos + header_len <= tag_end {
            file.seek(SeekFrom::Start(pos))?;
            let mut fh = [0u8; 10];
            if read_full(file, &mut fh[..header_len as usize])? < header_len as usize {
                break;
            }
            if fh[0] == 0 {
                break; // padding
            }
            let (is_pic, body) = match version {
                2 => (
                    &fh[0..3] == b"PIC",
                    u64::from(u32::from_be_bytes([0, fh[3], fh[4], fh[5]])),
                ),
                3 => (
                    &fh[0..4] == b"APIC",
                    u64::from(u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]])),
                ),
                _ => (
                    &fh[0..4] == b"APIC",
                    u64::from(synchsafe([fh[4], fh[5], fh[6], fh[7]])),
                ),
            };
            if is_pic {
                let mut head = [0u8; 512];
                let got = read_full(file, &mut head[..body.min(512) as usize])?;
                count = count.saturating_add(1);
                bytes = bytes.saturating_add(
                    body.saturating_sub(picture_header_len(&head[..got], version == 2)),
                );
            }
            pos += header_len + body;
        }
        tag_start += size;
    }
    Ok((count, bytes))
}

/// Length of the fields before the image data in an APIC (or v2.2 PIC) frame body: text
/// encoding, MIME type (a 3-byte format in v2.2), picture type and description.
fn picture_header_len(b: &[u8], v22: bool) -> u64 {
    let Some(&enc) = b.first() else { return 0 };
    let mut i = 1;
    if v22 {
        i += 3;
    } else {
        while i < b.len() && b[i] != 0 {
            i += 1;
        }
        i += 1;
    }
    i += 1; // picture type
    let wide = enc == 1 || enc == 2;
    while i < b.len() {
        if wide {
            if i + 1 < b.len() && b[i] == 0 && b[i + 1] == 0 {
                i += 2;
                break;
            }
            i += 2;
        } else {
            if b[i] == 0 {
                i += 1;
                break;
            }
            i += 1;
        }
    }
    i.min(b.len()) as u64
}

fn synchsafe(b: [u8; 4]) -> u32 {
    b.iter()
        .fold(0u32, |acc, &x| (acc << 7) | u32::from(x & 0x7F))
}

fn read_full<R: Read>(file: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id3_header_size() {
        let h = *b"ID3\x04\x00\x00\x00\x00\x02\x01";
        assert_eq!(id3v2_size(&h), Some(10 + 257));
        let footer = *b"ID3\x04\x00\x10\x00\x00\x00\x01";
        assert_eq!(id3v2_size(&footer), Some(21));
        assert_eq!(id3v2_size(b"fLaC\x00\x00\x00\x22\x00\x00"), None);
        assert_eq!(id3v2_size(b"ID3\x04\x00\x00\x80\x00\x00\x00"), None);
    }
}

//! Bounded tag reading with lofty: at most [`MAX_ITEMS`] items, values cut to
//! [`MAX_VALUE_BYTES`] bytes on a character boundary, lists to [`MAX_LIST`] entries, pictures
//! counted, never decoded.
//! A tag that cannot be read never fails the file: the caller gets notes instead.

use lofty::config::{apply_global_options, GlobalOptions, ParseOptions, ParsingMode};
use lofty::file::TaggedFileExt;
use lofty::probe::Probe;
use lofty::tag::{ItemKey, ItemValue, Tag};
use std::fs::File;
use std::path::Path;
use trackmill_types::{CleanText, Tags};

/// Tag items looked at per file, across all of its tags.
pub const MAX_ITEMS: usize = 100;
/// Bytes kept of one value (cut on a character boundary; `Tags::truncated` is then set).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Entries kept of a list (artists, genres).
pub const MAX_LIST: usize = 10;
/// lofty's per-item allocation limit: a larger item (a huge picture) makes lofty fail, and the
/// tags are then read again without pictures.
pub const ALLOCATION_LIMIT: usize = 16 * 1024 * 1024;
/// Leading ID3v2 tags larger than this are read without pictures (which are then counted from
/// the frame headers), so a huge cover is never loaded.
pub const ID3_PICTURE_READ_LIMIT: u64 = 1024 * 1024;

/// Tags of the file and notes about anything that went wrong while reading them.
pub struct TagRead {
    pub tags: Tags,
    pub notes: Vec<String>,
}

/// Reads the tags of `path`. Never fails: errors become notes.
pub fn read_tags(path: &Path) -> TagRead {
    match File::open(path) {
        Ok(file) => read_tags_from(&file),
        Err(e) => TagRead {
            tags: Tags::default(),
            notes: vec![format!("tags unreadable: {e}")],
        },
    }
}

/// Reads the tags of an open file through its own cursor (`pread`), so the descriptor's offset
/// is left as it was. Never fails: errors become notes.
pub fn read_tags_from(file: &File) -> TagRead {
    apply_global_options(GlobalOptions::new().allocation_limit(ALLOCATION_LIMIT));
    let mut notes = Vec::new();
    if let Some((count, bytes)) = large_id3v2_pictures(file) {
        return match read_with(file, false) {
            Ok(mut tags) => {
                tags.picture_count = count;
                tags.picture_bytes = bytes;
                TagRead { tags, notes }
            }
            Err(e) => {
                notes.push(format!("tags unreadable: {e}"));
                let tags = Tags {
                    picture_count: count,
                    picture_bytes: bytes,
                    ..Tags::default()
                };
                TagRead { tags, notes }
            }
        };
    }
    match read_with(file, true) {
        Ok(tags) => TagRead { tags, notes },
        Err(first) => match read_with(file, false) {
            Ok(mut tags) => {
                notes.push(format!("tags: pictures not counted ({first})"));
                tags.truncated = true;
                TagRead { tags, notes }
            }
            Err(e) => {
                notes.push(format!("tags unreadable: {e}"));
                TagRead {
                    tags: Tags::default(),
                    notes,
                }
            }
        },
    }
}

/// Picture count and bytes of a file whose leading ID3v2 tags exceed
/// [`ID3_PICTURE_READ_LIMIT`]; `None` for any other file.
fn large_id3v2_pictures(file: &File) -> Option<(u32, u64)> {
    let len = file.metadata().ok()?.len();
    let mut f = crate::source::PositionalReader::new(file);
    let end = crate::source::skip_id3v2(&mut f, len).ok()?;
    if end <= ID3_PICTURE_READ_LIMIT {
        return None;
    }
    crate::source::id3v2_pictures(&mut f, end).ok()
}

fn read_with(file: &File, pictures: bool) -> Result<Tags, lofty::error::FileParseError> {
    let opts = ParseOptions::new()
        .read_properties(false)
        .read_cover_art(pictures)
        .parsing_mode(ParsingMode::BestAttempt);
    let reader = crate::source::PositionalReader::new(file);
    let file = Probe::new(reader).options(opts).guess_file_type()?.read()?;
    let mut out = Tags::default();
    let mut budget = MAX_ITEMS;
    // The format's primary tag first, then the others, each filling only what is still missing.
    let primary = file.primary_tag_type();
    let ordered = file
        .tags()
        .iter()
        .filter(|t| t.tag_type() == primary)
        .chain(file.tags().iter().filter(|t| t.tag_type() != primary));
    for tag in ordered {
        fill(&mut out, tag, &mut budget);
        for p in tag.pictures() {
            out.picture_count = out.picture_count.saturating_add(1);
            out.picture_bytes = out.picture_bytes.saturating_add(p.data().len() as u64);
        }
    }
    Ok(out)
}

fn fill(out: &mut Tags, tag: &Tag, budget: &mut usize) {
    for item in tag.items() {
        if *budget == 0 {
            out.truncated = true;
            return;
        }
        *budget -= 1;
        let ItemValue::Text(raw) = item.value() else {
            continue;
        };
        let key = item.key();
        match key {
            ItemKey::TrackTitle => set(&mut out.title, raw, &mut out.truncated),
            ItemKey::AlbumTitle => set(&mut out.album, raw, &mut out.truncated),
            ItemKey::AlbumArtist => set(&mut out.album_artist, raw, &mut out.truncated),
            ItemKey::TrackArtist | ItemKey::TrackArtists => {
                push_list(&mut out.artists, raw, &mut out.truncated)
            }
            ItemKey::Genre => push_list(&mut out.genres, raw, &mut out.truncated),
            ItemKey::Year
            | ItemKey::RecordingDate
            | ItemKey::ReleaseDate
            | ItemKey::OriginalReleaseDate
                if out.year.is_none() =>
            {
                out.year = parse_year(raw);
            }
            ItemKey::TrackNumber => set_num(&mut out.track_number, &mut out.track_total, raw),
            ItemKey::TrackTotal => set_num(&mut out.track_total, &mut None, raw),
            ItemKey::DiscNumber => set_num(&mut out.disc_number, &mut out.disc_total, raw),
            ItemKey::DiscTotal => set_num(&mut out.disc_total, &mut None, raw),
            ItemKey::MusicBrainzRecordingId => {
                set(&mut out.musicbrainz_recording_id, raw, &mut out.truncated)
            }
            ItemKey::MusicBrainzTrackId => {
                set(&mut out.musicbrainz_track_id, raw, &mut out.truncated)
            }
            ItemKey::MusicBrainzReleaseId => {
                set(&mut out.musicbrainz_album_id, raw, &mut out.truncated)
            }
            ItemKey::MusicBrainzArtistId => {
                set(&mut out.musicbrainz_artist_id, raw, &mut out.truncated)
            }
            ItemKey::MusicBrainzReleaseArtistId => set(
                &mut out.musicbrainz_album_artist_id,
                raw,
                &mut out.truncated,
            ),
            _ => {}
        }
    }
}

/// Cuts `raw` to [`MAX_VALUE_BYTES`] bytes on a character boundary and sanitizes it; `None` when
/// nothing is left.
pub fn clean_value(raw: &str, truncated: &mut bool) -> Option<CleanText> {
    let mut end = raw.len().min(MAX_VALUE_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    if end < raw.len() {
        *truncated = true;
    }
    CleanText::non_empty(&raw[..end], MAX_VALUE_BYTES)
}

fn set(slot: &mut Option<CleanText>, raw: &str, truncated: &mut bool) {
    if slot.is_none() {
        *slot = clean_value(raw, truncated);
    }
}

/// Adds the values of one item (several values may be joined by NUL) to a list, without
/// duplicates, up to [`MAX_LIST`] entries.
fn push_list(list: &mut Vec<CleanText>, raw: &str, truncated: &mut bool) {
    for part in raw.split('\0') {
        if list.len() >= MAX_LIST {
            *truncated = true;
            return;
        }
        if let Some(v) = clean_value(part, truncated) {
            if !list.contains(&v) {
                list.push(v);
            }
        }
    }
}

/// "3", "3/12", " 03 " → number (and total when given as "n/total").
fn set_num(num: &mut Option<u32>, total: &mut Option<u32>, raw: &str) {
    let mut parts = raw.trim().splitn(2, '/');
    if num.is_none() {
        *num = parts.next().and_then(|s| s.trim().parse().ok());
    } else {
        parts.next();
    }
    if total.is_none() {
        *total = parts.next().and_then(|s| s.trim().parse().ok());
    }
}

/// The first four-digit run of a date ("2003", "2003-05-01", "May 2003") as a year.
pub fn parse_year(raw: &str) -> Option<i32> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        if b[i..i + 4].iter().all(u8::is_ascii_digit)
            && (i == 0 || !b[i - 1].is_ascii_digit())
            && (i + 4 == b.len() || !b[i + 4].is_ascii_digit())
        {
            let y: i32 = raw[i..i + 4].parse().ok()?;
            return (1000..=2999).contains(&y).then_some(y);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years() {
        assert_eq!(parse_year("2003-05-01"), Some(2003));
        assert_eq!(parse_year("May 1999"), Some(1999));
        assert_eq!(parse_year("12345"), None);
        assert_eq!(parse_year(""), None);
    }

    #[test]
    fn numbers() {
        let (mut n, mut t) = (None, None);
        set_num(&mut n, &mut t, " 3/12");
        assert_eq!((n, t), (Some(3), Some(12)));
    }

    #[test]
    fn values_are_capped_and_clean() {
        let mut tr = false;
        let long = "é".repeat(5000);
        let v = clean_value(&long, &mut tr).unwrap();
        // 512 two-byte characters: the 1,024-byte cap falls on a character boundary.
        assert_eq!(v.as_str().len(), MAX_VALUE_BYTES);
        assert!(tr);
        let mut tr = false;
        let odd = format!("a{}", "é".repeat(600));
        let v = clean_value(&odd, &mut tr).unwrap();
        assert_eq!(
            v.as_str().len(),
            MAX_VALUE_BYTES - 1,
            "cut before a split character"
        );
        assert!(tr);
        let mut tr = false;
        let exact = "b".repeat(MAX_VALUE_BYTES);
        assert_eq!(clean_value(&exact, &mut tr).unwrap().as_str(), exact);
        assert!(!tr);
        let mut tr = false;
        assert_eq!(clean_value("a\0b", &mut tr).unwrap().as_str(), "ab");
        assert!(clean_value("  ", &mut tr).is_none());
    }

    #[test]
    fn lists_are_capped() {
        let mut l = Vec::new();
        let mut tr = false;
        let many: Vec<String> = (0..50).map(|i| format!("a{i}")).collect();
        push_list(&mut l, &many.join("\0"), &mut tr);
        assert_eq!(l.len(), MAX_LIST);
        assert!(tr);
    }
}

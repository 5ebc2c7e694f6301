//! `CleanText`: text that is safe for any database: valid UTF-8, no NUL, no C0 control characters
//! except tab, newline and carriage return, and capped in length (bytes) on a character boundary.
//! Decoding refuses text longer than [`MAX_DECODED_BYTES`] before copying it.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Default cap, in bytes, for text built with [`CleanText::new`].
pub const DEFAULT_MAX_BYTES: usize = 4096;

/// The longest text, in bytes, that deserializing a `CleanText` accepts (the widest cap any
/// constructor is given: a path shown as text). Longer text is a decode error, raised before the
/// text is copied, so a hostile frame cannot make the reader hold more than this per string.
pub const MAX_DECODED_BYTES: usize = 8192;

/// Sanitized text. The only ways to build one run the sanitizer, so holding a `CleanText` is proof
/// that the invariant holds. Deserializing also sanitizes, so a hostile frame cannot smuggle a NUL.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct CleanText(String);

fn allowed(c: char) -> bool {
    !(c.is_control() && (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r')
        && c != '\u{7f}'
        && c != '\0'
}

impl CleanText {
    /// Sanitizes `s` with the default length cap.
    pub fn new(s: &str) -> Self {
        Self::with_max(s, DEFAULT_MAX_BYTES)
    }

    /// Sanitizes `s`, keeping at most `max_bytes` bytes (cut on a character boundary).
    pub fn with_max(s: &str, max_bytes: usize) -> Self {
        let mut out = String::with_capacity(s.len().min(max_bytes));
        for c in s.chars().filter(|&c| allowed(c)) {
            if out.len() + c.len_utf8() > max_bytes {
                break;
            }
            out.push(c);
        }
        CleanText(out)
    }

    /// Sanitizes arbitrary bytes: invalid UTF-8 sequences become U+FFFD, then as [`Self::with_max`].
    pub fn from_bytes(b: &[u8], max_bytes: usize) -> Self {
        Self::with_max(&String::from_utf8_lossy(b), max_bytes)
    }

    /// Sanitized text with leading and trailing whitespace removed; `None` when nothing is left.
    pub fn non_empty(s: &str, max_bytes: usize) -> Option<Self> {
        let t = Self::with_max(s, max_bytes);
        let trimmed = t.0.trim();
        (!trimmed.is_empty()).then(|| CleanText(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for CleanText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CleanText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for CleanText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CleanText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CleanVisitor)
    }
}

/// Checks the length of the text the decoder hands over (borrowed from the frame where the
/// codec allows) before sanitizing a copy of it.
struct CleanVisitor;

impl serde::de::Visitor<'_> for CleanVisitor {
    type Value = CleanText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {MAX_DECODED_BYTES} bytes")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CleanText, E> {
        if s.len() > MAX_DECODED_BYTES {
            return Err(E::invalid_length(s.len(), &self));
        }
        Ok(CleanText::with_max(s, MAX_DECODED_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn forbidden(b: u8) -> bool {
        (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r') || b == 0x7f
    }

    #[test]
    fn strips_nul_and_controls() {
        assert_eq!(
            CleanText::new("a\0b\x01c\td\ne\rf\x7f").as_str(),
            "abc\td\ne\rf"
        );
    }

    #[test]
    fn repairs_invalid_utf8() {
        assert_eq!(
            CleanText::from_bytes(b"ok\xffok\0", 100).as_str(),
            "ok\u{fffd}ok"
        );
    }

    #[test]
    fn caps_on_char_boundary() {
        let t = CleanText::with_max("ééé", 5);
        assert_eq!(t.as_str(), "éé");
    }

    #[test]
    fn decoding_refuses_long_text() {
        let ok = "é".repeat(MAX_DECODED_BYTES / 2);
        let bytes = postcard::to_allocvec(&ok).unwrap();
        let t: CleanText = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(t.as_str(), ok);
        let long = "a".repeat(MAX_DECODED_BYTES + 1);
        let bytes = postcard::to_allocvec(&long).unwrap();
        assert!(postcard::from_bytes::<CleanText>(&bytes).is_err());
        let json = serde_json::to_string(&long).unwrap();
        assert!(serde_json::from_str::<CleanText>(&json).is_err());
    }

    #[test]
    fn deserializing_sanitizes() {
        let bytes = postcard::to_allocvec(&"x\0y".to_string()).unwrap();
        let t: CleanText = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(t.as_str(), "xy");
    }

    proptest! {
        #[test]
        fn never_emits_forbidden_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..600) {
            let t = CleanText::from_bytes(&bytes, max);
            prop_assert!(t.as_str().len() <= max);
            prop_assert!(!t.as_str().bytes().any(forbidden));
        }

        #[test]
        fn keeps_clean_text_unchanged(s in "[a-zA-Z0-9 \t\néü漢]{0,64}") {
            let t = CleanText::with_max(&s, usize::MAX);
            prop_assert_eq!(t.as_str(), s.as_str());
        }
    }
}

//! `CleanText`: text that is safe for any database: valid UTF-8, no NUL, no C0 control characters
//! except tab, newline and carriage return, and capped in length on a character boundary.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Default cap, in bytes, for text built with [`CleanText::new`].
pub const DEFAULT_MAX_BYTES: usize = 4096;

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
        let s = String::deserialize(d)?;
        Ok(CleanText::with_max(&s, usize::MAX))
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

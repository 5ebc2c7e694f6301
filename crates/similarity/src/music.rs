//! Key and tempo as DJs mix them: keys on the circle of fifths (relative major and minor share a
//! place), tempo as a position within its octave (70 and 140 BPM are the same place), and the
//! compatibility rules of `mix --harmonic`.

use std::f32::consts::TAU;

/// A key: tonic pitch class (0 = C … 11 = B) and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub tonic: u8,
    pub minor: bool,
}

impl Key {
    /// From the stored record's `key` and `mode` ("major"/"minor"; anything else reads major).
    pub fn from_record(key: u8, mode: &str) -> Key {
        Key {
            tonic: key % 12,
            minor: mode.eq_ignore_ascii_case("minor"),
        }
    }

    /// Place on the circle of fifths, 0 … 11 (C major = 0, G major = 1, … F major = 11); a minor
    /// key takes its relative major's place (A minor = C major = 0), as the Camelot wheel does.
    pub fn fifths(self) -> u8 {
        let major_tonic = if self.minor {
            (self.tonic + 3) % 12
        } else {
            self.tonic
        };
        (major_tonic * 7) % 12
    }

    /// Steps between two places on the circle of fifths, 0 … 6.
    pub fn fifths_apart(self, other: Key) -> u8 {
        let d = (i16::from(self.fifths()) - i16::from(other.fifths())).rem_euclid(12) as u8;
        d.min(12 - d)
    }

    /// The key as a point on the unit circle of fifths.
    pub fn point(self) -> [f32; 2] {
        let a = TAU * f32::from(self.fifths()) / 12.0;
        [a.cos(), a.sin()]
    }

    /// Camelot notation (8B = C major, 8A = A minor), for people who mix by it.
    pub fn camelot(self) -> String {
        let n = (u16::from(self.fifths()) + 7) % 12 + 1;
        format!("{n}{}", if self.minor { 'A' } else { 'B' })
    }
}

/// Harmonic mixing: the same key, one step round the circle of fifths in the same mode, or the
/// relative major/minor.
pub fn keys_compatible(a: Key, b: Key) -> bool {
    let d = a.fifths_apart(b);
    if a.minor == b.minor {
        d <= 1
    } else {
        d == 0
    }
}

/// Largest relative tempo difference that still mixes.
pub const TEMPO_TOLERANCE: f32 = 0.08;

/// Tempos mix when they are within ±8 % of each other, or of double or half of each other.
/// Two tracks without a pulse (bpm 0) mix; a track without one does not mix with one that has.
pub fn tempos_compatible(a: f32, b: f32) -> bool {
    let pa = a > 0.0 && a.is_finite();
    let pb = b > 0.0 && b.is_finite();
    if !pa || !pb {
        return pa == pb;
    }
    [b, b * 2.0, b / 2.0]
        .iter()
        .any(|&c| (c - a).abs() <= TEMPO_TOLERANCE * a)
}

/// Tempo as a point on the unit circle, one turn per octave: `log2(bpm)` modulo 1. 70 and
/// 140 BPM land on the same point; the farthest tempo from 120 is 120·√2 ≈ 170 (or 85).
/// No pulse is the centre.
pub fn tempo_point(bpm: f32) -> [f32; 2] {
    if !(bpm > 0.0 && bpm.is_finite()) {
        return [0.0, 0.0];
    }
    let a = TAU * bpm.log2().rem_euclid(1.0);
    [a.cos(), a.sin()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(tonic: u8, minor: bool) -> Key {
        Key { tonic, minor }
    }

    fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    #[test]
    fn circle_of_fifths_places() {
        assert_eq!(k(0, false).fifths(), 0); // C
        assert_eq!(k(7, false).fifths(), 1); // G
        assert_eq!(k(5, false).fifths(), 11); // F
        assert_eq!(k(9, true).fifths(), 0); // A minor = C major
        assert_eq!(k(4, true).fifths(), 1); // E minor = G major
        assert_eq!(k(6, false).fifths(), 6); // F# is opposite C
        assert_eq!(k(0, false).fifths_apart(k(6, false)), 6);
        assert_eq!(k(0, false).fifths_apart(k(5, false)), 1);
        assert_eq!(k(0, false).camelot(), "8B");
        assert_eq!(k(9, true).camelot(), "8A");
        assert_eq!(k(7, false).camelot(), "9B");
        assert_eq!(k(5, false).camelot(), "7B");
        assert_eq!(Key::from_record(14, "Minor"), k(2, true));
    }

    #[test]
    fn relative_keys_and_fifths_are_close_a_semitone_is_far() {
        let c = k(0, false).point();
        assert!(
            dist(c, k(9, true).point()) < 1e-6,
            "A minor sits on C major"
        );
        let fifth = dist(c, k(7, false).point());
        let semitone = dist(c, k(1, false).point());
        let tritone = dist(c, k(6, false).point());
        assert!(fifth < semitone && semitone < tritone);
        assert!((tritone - 2.0).abs() < 1e-5);
    }

    #[test]
    fn harmonic_rules() {
        let c = k(0, false);
        assert!(keys_compatible(c, c));
        assert!(keys_compatible(c, k(7, false)));
        assert!(keys_compatible(c, k(5, false)));
        assert!(keys_compatible(c, k(9, true)));
        assert!(keys_compatible(k(9, true), c));
        assert!(keys_compatible(k(9, true), k(4, true)), "A minor, E minor");
        assert!(!keys_compatible(c, k(2, false)), "two fifths");
        assert!(!keys_compatible(c, k(1, false)));
        assert!(
            !keys_compatible(c, k(0, true)),
            "parallel minor is not relative"
        );
        assert!(
            !keys_compatible(c, k(4, true)),
            "E minor is G major's relative"
        );
    }

    #[test]
    fn tempo_rules() {
        assert!(tempos_compatible(120.0, 120.0));
        assert!(tempos_compatible(120.0, 129.0));
        assert!(!tempos_compatible(120.0, 131.0));
        assert!(tempos_compatible(70.0, 140.0));
        assert!(tempos_compatible(140.0, 72.0));
        assert!(tempos_compatible(60.0, 118.0));
        assert!(!tempos_compatible(100.0, 150.0));
        assert!(tempos_compatible(0.0, 0.0));
        assert!(!tempos_compatible(0.0, 120.0));
        assert!(!tempos_compatible(120.0, f32::NAN));
    }

    #[test]
    fn tempo_octaves_coincide() {
        assert!(dist(tempo_point(70.0), tempo_point(140.0)) < 1e-5);
        assert!(dist(tempo_point(60.0), tempo_point(240.0)) < 1e-5);
        let near = dist(tempo_point(120.0), tempo_point(125.0));
        let far = dist(tempo_point(120.0), tempo_point(170.0));
        assert!(near < 0.4 && far > 1.99, "{near} {far}");
        assert_eq!(tempo_point(0.0), [0.0, 0.0]);
        let p = tempo_point(97.3);
        assert!((p[0].hypot(p[1]) - 1.0).abs() < 1e-6);
    }
}

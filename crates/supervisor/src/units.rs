//! Parsing of human units in the config and on the command line: sizes (`512MiB`, `1GiB`) and
//! durations (`90s`, `5m`, `250ms`), each with an upper bound ([`MAX_SIZE`], [`MAX_DURATION`])
//! checked without overflow: an absurd value is an error, never a panic.

use std::time::Duration;

/// The longest duration any setting accepts: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest size any setting accepts: 1 PiB.
pub const MAX_SIZE: u64 = 1 << 50;

/// Splits `12.5MiB` into its number and unit; `None` when the number does not parse.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit))
}

/// Parses a size such as `512MiB`, `1GiB`, `2G`, `1048576`, at most [`MAX_SIZE`].
pub fn parse_size(s: &str) -> Result<u64, String> {
    match parse_size_saturating(s)? {
        n if n > MAX_SIZE => Err(format!("size {s:?} is above the maximum of 1PiB")),
        n => Ok(n),
    }
}

/// As [`parse_size`], but a size above the bound comes back as `u64::MAX` (the config file
/// checks the bound itself, so that its error names the key).
pub(crate) fn parse_size_saturating(s: &str) -> Result<u64, String> {
    let (n, unit) =
        split_number(s).ok_or_else(|| format!("invalid size {s:?} (write e.g. 512MiB or 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" | "ki" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" | "mi" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" | "gi" => 1 << 30,
        "tib" | "ti" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    if n < 0.0 {
        return Err(format!("size {s:?} is negative"));
    }
    // `as` saturates: a huge or infinite product becomes u64::MAX.
    Ok((n * mult as f64) as u64)
}

/// Parses a duration such as `90s`, `5m`, `1h`, `250ms`; a bare number is seconds. At most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_duration_saturating(s)? {
        d if d > MAX_DURATION => Err(format!("duration {s:?} is above the maximum of 365 days")),
        d => Ok(d),
    }
}

/// A number of seconds as a duration; one too large for `Duration` is `Duration::MAX`.
pub(crate) fn secs_saturating(secs: f64) -> Result<Duration, String> {
    if secs.is_nan() || secs < 0.0 {
        return Err(format!("duration {secs} is not a non-negative number"));
    }
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// As [`parse_duration`], but a duration above the bound comes back as `Duration::MAX` (the
/// config file checks the bound itself, so that its error names the key).
pub(crate) fn parse_duration_saturating(s: &str) -> Result<Duration, String> {
    let (n, unit) =
        split_number(s).ok_or_else(|| format!("invalid duration {s:?} (write e.g. 90s or 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?} (use ms, s, m, h)"
            ))
        }
    };
    secs_saturating(secs)
}

pub fn format_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn absurd_values_are_errors_not_panics() {
        for s in [
            "99999999999999999999s",
            "1e400",
            "366d",
            "9999999h",
            "8766h",
        ] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
        assert_eq!(
            parse_duration_saturating("99999999999999999999s").unwrap(),
            Duration::MAX
        );
        for s in ["99999999999999999999TiB", "2048TiB", "1e30"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
        assert_eq!(parse_size("1024TiB").unwrap(), MAX_SIZE);
        assert!(secs_saturating(f64::NAN).is_err());
        assert_eq!(secs_saturating(f64::INFINITY).unwrap(), Duration::MAX);
    }
}

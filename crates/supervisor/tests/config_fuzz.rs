//! Fuzzing of the config parser: the shipped file with its values replaced by hostile ones
//! (huge, negative, non-finite, of the wrong type), keys dropped and lines cut, for
//! `TRACKMILL_FUZZ_SECONDS` (default 2; `cargo xtask fuzz` sets it). Every text must parse or be
//! an error: a config file, or one sent through SIGHUP, can never panic the service.

use std::time::{Duration, Instant};
use trackmill_supervisor::Config;

const SHIPPED: &str = include_str!("../../../config/trackmill.toml");

/// Values that have broken parsers: out of every range, non-finite, of the wrong type.
const HOSTILE: &[&str] = &[
    "1e400",
    "-1",
    "nan",
    "inf",
    "-inf",
    "\"\"",
    "\"99999999999999999999s\"",
    "\"9999999999999999999999h\"",
    "\"1.5.5s\"",
    "\"-0s\"",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "\"\\u0001\"",
    "[]",
    "{}",
    "true",
    "\"1e999GiB\"",
    "\"99999999999999999999TiB\"",
    "0",
    "\"0.0000000001ms\"",
    "\"18446744073709551616\"",
    "[\"a\", 1]",
];

/// xorshift64: a fixed seed per run, so a failure prints enough to reproduce it.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn mutate(rng: &mut u64) -> String {
    let mut text = String::new();
    for line in SHIPPED.lines() {
        let r = next(rng);
        match line.split_once(" = ") {
            Some((key, _)) if r.is_multiple_of(4) => {
                let v = HOSTILE[(r >> 8) as usize % HOSTILE.len()];
                text.push_str(&format!("{key} = {v}\n"));
            }
            Some(_) if r % 17 == 1 => {} // key dropped
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    if next(rng).is_multiple_of(8) {
        let cut = (next(rng) % (text.len() as u64 + 1)) as usize;
        let cut = (0..=cut).rev().find(|&c| text.is_char_boundary(c)).unwrap();
        text.truncate(cut);
    }
    text
}

#[test]
fn config_text_never_panics() {
    let seconds: u64 = std::env::var("TRACKMILL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let end = Instant::now() + Duration::from_secs(seconds);
    let seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut rng = seed;
    let (mut rounds, mut errors) = (0u64, 0u64);
    while Instant::now() < end || rounds < 200 {
        let text = mutate(&mut rng);
        let r = std::panic::catch_unwind(|| Config::parse(&text).is_err());
        match r {
            Ok(e) => errors += u64::from(e),
            Err(_) => panic!("Config::parse panicked (seed {seed:#x}) on:\n{text}"),
        }
        rounds += 1;
    }
    // The mutations must reach the validation, not only the TOML parser.
    assert!(errors > 0 && errors < rounds, "{errors} errors in {rounds}");
    eprintln!("config fuzz: {rounds} texts, {errors} refused, no panic");
}

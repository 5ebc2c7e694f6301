//! Memory readings from /proc: the per-file peak (VmHWM, reset through clear_refs) and the current RSS of any process.

use std::fs;

/// Resets this process's peak-RSS mark (VmHWM) so the next reading covers one file only.
pub fn reset_peak() {
    let _ = fs::write("/proc/self/clear_refs", b"5");
}

/// This process's peak RSS since the last reset, in bytes.
pub fn peak_bytes() -> u64 {
    status_kib("/proc/self/status", "VmHWM:").map_or(0, |k| k * 1024)
}

/// Current RSS of `pid`, in bytes (0 when the process is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:").map_or(0, |k| k * 1024)
}

fn status_kib(file: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss_and_peak() {
        assert!(rss_bytes(std::process::id()) > 0);
        reset_peak();
        let v = vec![1u8; 64 << 20];
        let peak = peak_bytes();
        assert!(peak >= 64 << 20, "peak {peak} after touching 64 MiB");
        drop(v);
    }
}

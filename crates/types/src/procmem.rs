//! Memory readings from /proc: the per-file peak (VmHWM, reset through clear_refs) and the current RSS of any process.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;

/// This process's peak RSS (VmHWM), reset before each file so that a reading covers one file.
/// Both /proc files stay open: a reset is one `pwrite` and a reading one `pread`, where opening
/// them per file cost a dozen system calls. `clear_refs` is opened for writing only (no create,
/// no truncate), which is all a sandbox that grants it `WriteFile` allows.
pub struct PeakMeter {
    clear_refs: Option<File>,
    status: Option<File>,
    buf: Vec<u8>,
}

impl PeakMeter {
    pub fn open() -> Self {
        PeakMeter {
            clear_refs: OpenOptions::new()
                .write(true)
                .open("/proc/self/clear_refs")
                .ok(),
            status: File::open("/proc/self/status").ok(),
            buf: vec![0; 4096],
        }
    }

    /// Resets the peak mark. Where the kernel refuses, the reset is not tried again and
    /// readings are the peak since the process started.
    pub fn reset(&mut self) {
        if let Some(f) = &self.clear_refs {
            if f.write_at(b"5", 0).is_err() {
                self.clear_refs = None;
            }
        }
    }

    /// The peak RSS since the last reset, in bytes (0 when /proc cannot be read).
    pub fn peak_bytes(&mut self) -> u64 {
        let Some(f) = &self.status else { return 0 };
        // The whole file in one read (about 1.5 KiB); grown once if it ever fills the buffer.
        let n = loop {
            match f.read_at(&mut self.buf, 0) {
                Ok(n) if n == self.buf.len() => self.buf.resize(n * 2, 0),
                Ok(n) => break n,
                Err(_) => return 0,
            }
        };
        std::str::from_utf8(&self.buf[..n])
            .ok()
            .and_then(|text| field_kib(text, "VmHWM:"))
            .map_or(0, |k| k * 1024)
    }
}

/// This process's peak RSS since it started (or since the last [`PeakMeter::reset`]), in bytes.
pub fn peak_bytes() -> u64 {
    status_kib("/proc/self/status", "VmHWM:").map_or(0, |k| k * 1024)
}

/// Current RSS of `pid`, in bytes (0 when the process is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:").map_or(0, |k| k * 1024)
}

fn status_kib(file: &str, key: &str) -> Option<u64> {
    field_kib(&fs::read_to_string(file).ok()?, key)
}

/// The value of a `Key:   123 kB` line of a /proc status file.
fn field_kib(text: &str, key: &str) -> Option<u64> {
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
        let mut meter = PeakMeter::open();
        let v = vec![1u8; 64 << 20];
        let peak = meter.peak_bytes();
        assert!(peak >= 64 << 20, "peak {peak} after touching 64 MiB");
        drop(v);
        // After a reset the mark falls back to the current RSS, far below the 64 MiB peak
        // (the test harness's other threads allocate a little, not tens of MiB).
        meter.reset();
        let after = meter.peak_bytes();
        assert!(
            after < peak - (32 << 20),
            "peak {after} after a reset, {peak} before"
        );
    }
}

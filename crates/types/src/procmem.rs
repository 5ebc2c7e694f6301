//! Memory readings from /proc: the per-file peak (VmHWM, reset through clear_refs) and the current RSS of any process.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;

/// This process's peak RSS (VmHWM), reset before each file so that a reading covers one file.
/// Both /proc files stay open: a reset is one `pwrite` and a reading one `pread`, where opening
/// them per file cost a dozen system calls. `clear_refs` is opened for writing only (no create,
/// no truncate), which is all a sandbox that grants it `WriteFile` allows.
///
/// Most readings need no `status` at all (the kernel renders all of it, about 1.5 KiB, for one
/// line: a tenth of a tiny file's cost in a worker). Resident memory grows only through page
/// faults, and the kernel counts every one, those it takes on the process's behalf included
/// (`getrusage`). So a reset also notes the fault count and the current RSS (`statm`, a few
/// numbers): if no fault happened since, the peak is that RSS, and `status` is read only when
/// one did.
pub struct PeakMeter {
    clear_refs: Option<File>,
    status: Option<File>,
    statm: Option<File>,
    buf: Vec<u8>,
    /// Faults so far and RSS in bytes, noted at the last reset.
    at_reset: Option<(u64, u64)>,
}

impl PeakMeter {
    pub fn open() -> Self {
        PeakMeter {
            clear_refs: OpenOptions::new()
                .write(true)
                .open("/proc/self/clear_refs")
                .ok(),
            status: File::open("/proc/self/status").ok(),
            statm: File::open("/proc/self/statm").ok(),
            buf: vec![0; 4096],
            at_reset: None,
        }
    }

    /// Resets the peak mark. Where the kernel refuses, the reset is not tried again and
    /// readings are the peak since the process started.
    pub fn reset(&mut self) {
        self.at_reset = None;
        let Some(f) = &self.clear_refs else { return };
        // Faults first, then the RSS, then the reset: with no fault from the first step to the
        // reading, no moment after the RSS was read had more resident (never an under-count).
        let faults = faults();
        let rss = statm_rss(self.statm.as_ref(), &mut self.buf);
        if f.write_at(b"5", 0).is_err() {
            self.clear_refs = None;
            return;
        }
        self.at_reset = faults.zip(rss);
    }

    /// The peak RSS since the last reset, in bytes (0 when /proc cannot be read).
    pub fn peak_bytes(&mut self) -> u64 {
        if let Some((before, rss)) = self.at_reset {
            if faults() == Some(before) {
                return rss;
            }
        }
        let Some(n) = read_whole(self.status.as_ref(), &mut self.buf) else {
            return 0;
        };
        std::str::from_utf8(&self.buf[..n])
            .ok()
            .and_then(|text| field_kib(text, "VmHWM:"))
            .map_or(0, |k| k * 1024)
    }
}

/// Resident bytes now, from an open `statm` (its second field, in pages); `buf` is scratch.
fn statm_rss(statm: Option<&File>, buf: &mut Vec<u8>) -> Option<u64> {
    let n = read_whole(statm, buf)?;
    let pages: u64 = std::str::from_utf8(&buf[..n])
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The whole of an open /proc file in `buf` (grown once if it ever fills it): its length.
fn read_whole(file: Option<&File>, buf: &mut Vec<u8>) -> Option<usize> {
    let file = file?;
    loop {
        match file.read_at(buf, 0) {
            Ok(n) if n == buf.len() => buf.resize(n * 2, 0),
            Ok(n) => return Some(n),
            Err(_) => return None,
        }
    }
}

/// Page faults this process has taken so far (minor and major, all threads, the kernel's on
/// its behalf included).
fn faults() -> Option<u64> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    Some(u64::try_from(u.ru_minflt).ok()? + u64::try_from(u.ru_majflt).ok()?)
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

    #[test]
    fn memory_touched_after_a_reset_is_in_the_reading() {
        let mut meter = PeakMeter::open();
        meter.reset();
        let quiet = meter.peak_bytes();
        assert!(quiet > 0);
        // Pages touched after the reset fault, so the reading comes from VmHWM and has them,
        // though they are freed again before it (RSS is back down, the peak is not).
        meter.reset();
        let mut v = vec![0u8; 48 << 20];
        for (i, b) in v.iter_mut().enumerate().step_by(4096) {
            *b = i as u8;
        }
        std::hint::black_box(&v);
        drop(v);
        let peak = meter.peak_bytes();
        assert!(
            peak >= quiet + (40 << 20),
            "peak {peak} after touching 48 MiB, {quiet} without"
        );
    }
}

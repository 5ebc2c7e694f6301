//! `trackmill inspect`: a healthy file, a corrupt one, worker deaths (crash, oom) classified, and
//! JSON output that parses.

use std::process::{Command, Output};
use trackmill_e2e::*;

fn inspect(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(binary())
        .arg("inspect")
        .args(args)
        .env("TRACKMILL_FAULT_INJECTION", "1")
        .output()
        .expect("run trackmill inspect")
}

#[test]
fn healthy_file_prints_its_analysis_and_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("a.flac");
    tone(&f, 440, 6);
    let out = inspect(&[f.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("analysed in"), "{text}");
    assert!(text.contains("key A "), "{text}");
    assert!(text.contains("basic-pitch/notes88 [88]"), "{text}");
    assert!(text.contains("trackmill-dsp-v1 [38]"), "{text}");
}

#[test]
fn corrupt_file_gives_a_classified_failure_and_exit_9() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("garbage.mp3");
    std::fs::write(
        &f,
        (0..20000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = inspect(&[f.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(9), "{text}");
    assert!(text.contains("FAILED (corrupt"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn json_output_parses_and_classifies_worker_deaths() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.ogg");
    tone(&good, 330, 4);
    let corrupt = tmp.path().join("empty.wav");
    std::fs::write(&corrupt, b"").unwrap();
    let segv = tmp.path().join("segv.mp3");
    std::fs::write(&segv, b"TRACKMILL-FAULT segv\n").unwrap();
    let oom = tmp.path().join("oom.mp3");
    std::fs::write(&oom, b"TRACKMILL-FAULT alloc\n").unwrap();
    let out = inspect(&[
        "--json".as_ref(),
        "--memory-limit".as_ref(),
        "256MiB".as_ref(),
        good.as_os_str(),
        corrupt.as_os_str(),
        segv.as_os_str(),
        oom.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(9));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{v:#}");
    assert_eq!(rows[0]["status"], "analyzed", "{v:#}");
    assert_eq!(rows[0]["path"], good.to_str().unwrap());
    let emb = rows[0]["analysis"]["embeddings"].as_array().unwrap();
    assert!(
        emb.iter()
            .any(|e| e["model"] == "basic-pitch/pitch-class12"),
        "{emb:?}"
    );
    assert!(rows[0]["stats"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(rows[1]["status"], "failed");
    assert_eq!(rows[1]["class"], "corrupt", "{v:#}");
    assert_eq!(rows[2]["class"], "crash", "{v:#}");
    assert_eq!(rows[2]["stage"], "worker");
    assert!(
        rows[2]["message"].as_str().unwrap().contains("SIGSEGV"),
        "{v:#}"
    );
    assert_eq!(rows[3]["class"], "oom", "{v:#}");
    let msg = rows[3]["message"].as_str().unwrap();
    assert!(msg.contains("ran out of memory under its 256"), "{v:#}");
}

#[test]
fn an_inspected_file_is_read_in_a_sandbox_limited_to_its_own_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("album");
    let beside = tmp.path().join("elsewhere");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&beside).unwrap();
    let secret = beside.join("secret.db");
    std::fs::write(&secret, b"not for a worker").unwrap();
    let f = dir.join("escape.mp3");
    std::fs::write(
        &f,
        format!(
            "TRACKMILL-FAULT escape {} {} 9\n",
            secret.display(),
            beside.join("none.sock").display()
        ),
    )
    .unwrap();
    let out = inspect(&[f.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    // The file itself is readable (the fault engine read it), and is not audio.
    assert!(err.contains("fault escape read-db: "), "{err}");
    assert!(text.contains("FAILED (corrupt"), "{text}\n{err}");
    if landlock_abi().is_some() {
        assert!(err.contains("fault escape read-db: refused"), "{err}");
        assert!(!err.contains("ALLOWED"), "{err}");
    } else {
        eprintln!("this kernel has no Landlock: the refusal is not checked");
    }
}

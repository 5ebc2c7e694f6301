//! End-to-end tests of the HTTP API of `trackmill serve` (`[api] addr`), with a real HTTP client
//! and raw sockets for the malformed cases: every route in JSON and M3U, the Bliss Mixer routes,
//! the limits (413, 408, 404, 400; 503 past `max_concurrent`, with a query held on a PostgreSQL
//! table lock), `/metrics` from the supervisor's pushes, and an API server killed from outside
//! that is restarted while a scan goes on undisturbed.

use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use trackmill_e2e::service::*;
use trackmill_e2e::*;

/// `[api]` on a port the kernel picks, with short limits so the slow-client case is quick.
const API: &str =
    "\n[api]\naddr = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"\nmax_body = \"1KiB\"\n";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Status and body of a GET.
fn get(base: &str, path_and_query: &str) -> (u16, String, String) {
    let mut r = agent()
        .get(format!("{base}{path_and_query}"))
        .call()
        .unwrap();
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), kind, body)
}

fn get_json(base: &str, path_and_query: &str) -> Value {
    let (code, kind, body) = get(base, path_and_query);
    assert_eq!(code, 200, "{path_and_query}: {body}");
    assert!(kind.starts_with("application/json"), "{kind}");
    serde_json::from_str(&body).unwrap()
}

fn post(base: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut r = agent()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

/// The entries of an extended M3U: (#EXTINF line, path), checking the format on the way.
fn m3u_entries(text: &str) -> Vec<(String, String)> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "{text}");
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len() % 2, 0, "{text}");
    rest.chunks(2)
        .map(|p| {
            assert!(p[0].starts_with("#EXTINF:"), "{text}");
            assert!(Path::new(p[1]).exists(), "{} in {text}", p[1]);
            (p[0].to_string(), p[1].to_string())
        })
        .collect()
}

fn get_m3u(base: &str, path_and_query: &str) -> Vec<(String, String)> {
    let (code, kind, body) = get(base, path_and_query);
    assert_eq!(code, 200, "{path_and_query}: {body}");
    assert_eq!(kind, "audio/x-mpegurl");
    m3u_entries(&body)
}

/// Writes `head` raw on a new connection, waits, and returns everything the server answered.
fn raw(addr: &str, head: &[u8]) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head).unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text
}

fn q(p: &Path) -> String {
    let s = p.to_str().unwrap();
    s.replace('%', "%25")
        .replace('&', "%26")
        .replace(' ', "%20")
}

/// A library of `n` tones a major third apart; returns the files.
fn tones(lib: &Path, n: u32) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let f = lib.join(format!("t{i}.flac"));
            tone(&f, 330 + 110 * i, 2);
            f
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    (tmp, lib)
}

/// Waits until the API server is up; returns its address and pid.
fn api_up(svc: &Service, restarts: u64) -> (String, u32) {
    let s = svc.wait_status("the API server is up", |s| {
        s["api"]["ready"] == true && num(s, &["api", "restarts"]) == restarts
    });
    let addr = s["api"]["addr"].as_str().unwrap().to_string();
    (addr, num(&s, &["api", "pid"]) as u32)
}

#[test]
fn api_answers_every_route_in_json_and_m3u_within_its_limits() {
    let (tmp, lib) = setup();
    let files = tones(&lib, 4);
    let svc = Service::start(tmp.path(), &lib, 1, API);
    svc.wait_status("the library analysed", |s| {
        s["state"] == "idle" && num(s, &["totals", "analyzed"]) == 4 && committed(s)
    });
    let (addr, _) = api_up(&svc, 0);
    let base = format!("http://{addr}");
    let (a, b) = (q(&files[0]), q(&files[3]));

    let h = get_json(&base, "/api/health");
    assert_eq!(
        (h["status"].as_str(), h["tracks"].as_u64()),
        (Some("ok"), Some(4))
    );

    let v = get_json(&base, &format!("/api/similar?path={a}&n=3&per_artist=0"));
    assert_eq!(v["tracks"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["seed"]["path"], files[0].to_str().unwrap());
    assert_eq!(
        get_m3u(&base, &format!("/api/similar?path={a}&n=2&format=m3u")).len(),
        2
    );

    let v = get_json(&base, &format!("/api/path?from={a}&to={b}&steps=2"));
    let between = v["tracks"].as_array().unwrap().len();
    let entries = get_m3u(
        &base,
        &format!("/api/path?from={a}&to={b}&steps=2&format=m3u"),
    );
    assert_eq!(entries.len(), between + 2, "the ends and what lies between");
    assert_eq!(entries[0].1, files[0].to_str().unwrap());

    let v = get_json(&base, &format!("/api/mix?seed={a}&seed={b}&length=2"));
    assert_eq!(v["seeds"].as_array().unwrap().len(), 2, "{v}");
    let mixed = v["tracks"].as_array().unwrap().len();
    assert!(mixed >= 1, "{v}");
    let entries = get_m3u(
        &base,
        &format!("/api/mix?seed={a}&seed={b}&length=2&format=m3u"),
    );
    assert_eq!(entries.len(), 2 + mixed);
    let v = get_json(&base, &format!("/api/mix?seed={a}&length=3&harmonic=true"));
    assert_eq!(v["harmonic"], true);

    // Bliss Mixer: a path relative to the library root in, relative paths out.
    let (code, body) = post(
        &base,
        "/api/mix",
        br#"{"count":2,"tracks":["t0.flac"],"previous":["t1.flac"]}"#,
    );
    assert_eq!(code, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 2, "{body}");
    for l in &lines {
        assert!(
            !l.starts_with('/') && lib.join(l).exists() && *l != "t1.flac" && *l != "t0.flac",
            "{body}"
        );
    }
    let (code, body) = post(
        &base,
        "/api/list",
        br#"{"count":1,"track":"t2.flac","byartist":0}"#,
    );
    assert_eq!((code, body.lines().count()), (200, 1), "{body}");

    refusals(&svc, &addr, &base, &a);
}

/// 404, 400, 413, 408, and `/metrics` from the supervisor's pushes.
fn refusals(svc: &Service, addr: &str, base: &str, a: &str) {
    let (code, kind, body) = get(base, "/nowhere");
    assert_eq!((code, kind.as_str()), (404, "application/json"), "{body}");
    let gone = "/music/not/there.flac";
    let (code, _, body) = get(base, &format!("/api/similar?path={gone}"));
    assert_eq!(code, 404, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], gone);
    assert!(v["error"].as_str().unwrap().contains(gone), "{v}");
    for bad in [
        format!("/api/similar?path={a}&n=0"),
        format!("/api/similar?path={a}&lenght=3"),
        "/api/similar".to_string(),
        format!("/api/mix?seed={a}&harmonic=perhaps"),
        format!("/api/path?from={a}&to={a}&format=pls"),
        "/api/mix".to_string(),
    ] {
        let (code, _, body) = get(base, &bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    let (code, body) = post(base, "/api/mix", &vec![b' '; 4096]);
    assert_eq!(code, 413, "{body}");
    let (code, _) = post(base, "/api/mix", b"{not json");
    assert_eq!(code, 400);

    // Half a request line, then silence: 408 once request_timeout (1 s) is over.
    let text = raw(addr, b"GET /api/hea");
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    // Headers whole, the body promised and never sent.
    let text = raw(
        addr,
        b"POST /api/mix HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");

    let text = wait_for(
        "metrics of the analysed library",
        Duration::from_secs(60),
        || {
            let (code, kind, text) = get(base, "/metrics");
            (code == 200
                && kind.starts_with("text/plain")
                && text.contains("trackmill_files_total{outcome=\"analyzed\"} 4\n"))
            .then_some(text)
        },
    );
    assert!(
        text.contains("# TYPE trackmill_analysis_seconds histogram"),
        "{text}"
    );
    assert!(svc.status().unwrap()["api"]["restarts"] == 0);
}

#[test]
fn a_killed_api_server_is_restarted_while_a_scan_goes_on() {
    let (tmp, lib) = setup();
    tones(&lib, 2);
    let marker = tmp.path().join("hold");
    blocking_file(&lib.join("block.mp3"), &marker);
    let mut svc = Service::start(tmp.path(), &lib, 2, API);
    take_blocked_pid(&marker, DEADLINE);
    let (addr, first) = api_up(&svc, 0);
    let base = format!("http://{addr}");
    assert_eq!(get(&base, "/api/health").0, 200);
    let listed = children(svc.pid());
    assert!(
        listed
            .iter()
            .any(|(p, cmd)| *p == first && cmd.contains("api-child")),
        "{listed:?}"
    );

    signal(first, Signal::SIGKILL);
    let (again, second) = api_up(&svc, 1);
    assert_eq!(again, addr, "the same socket serves on");
    assert_ne!(second, first);
    assert!(is_dead(first));
    assert_eq!(get(&base, "/api/health").0, 200);
    svc.wait_log("API server");
    assert!(
        svc.log().contains(&format!("API server {first} exited")),
        "{}",
        svc.log()
    );

    // The scan was not disturbed: the held file and the others all settle.
    std::fs::remove_file(&marker).unwrap();
    let s = svc.wait_status("every file settled", |s| {
        num(s, &["totals", "analyzed"]) == 2
            && num(s, &["totals", "failed", "corrupt"]) == 1
            && committed(s)
            && s["state"] == "idle"
    });
    assert_eq!(num(&s, &["api", "restarts"]), 1);

    // SIGTERM of the service ends its API server too.
    let (st, _) = svc.terminate();
    assert!(st.success(), "{st}");
    wait_for("the API server gone", DEADLINE, || {
        is_dead(second).then_some(())
    });
}

#[test]
fn a_query_beyond_max_concurrent_is_answered_503_while_the_held_one_completes() {
    let (tmp, lib) = setup();
    let files = tones(&lib, 3);
    let pg = pgserver::PgSchema::new("api503");
    let d = tmp.path();
    let text = config_text(
        d,
        &lib,
        1,
        "\n[api]\naddr = \"127.0.0.1:0\"\nrequest_timeout = \"60s\"\nmax_concurrent = 1\n",
    )
    .replace(&format!("sqlite://{}", d.join("t.db").display()), &pg.url());
    let cfg = d.join("pg.toml");
    std::fs::write(&cfg, text).unwrap();
    let svc = Service::start_with(d, &cfg, &[]);
    svc.wait_status("the library analysed", |s| {
        s["state"] == "idle" && num(s, &["totals", "analyzed"]) == 3 && committed(s)
    });
    let (addr, _) = api_up(&svc, 0);
    let base = format!("http://{addr}");
    let similar = format!("/api/similar?path={}&n=2", q(&files[0]));

    // The one query slot held: a query waiting on a lock of the similarity table.
    let lock = pgserver::TableLock::take(&pg.name, "similarity");
    let held = {
        let (base, similar) = (base.clone(), similar.clone());
        std::thread::spawn(move || get(&base, &similar))
    };
    wait_for("the API's query waiting on the lock", DEADLINE, || {
        (pg.count(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%similarity%'",
        ) > 0)
            .then_some(())
    });
    let (code, kind, body) = get(&base, &similar);
    assert_eq!((code, kind.as_str()), (503, "application/json"), "{body}");
    assert!(body.contains("\"error\""), "{body}");
    // A route that needs no query slot still answers.
    assert_eq!(get(&base, "/metrics").0, 200);

    drop(lock);
    let (code, _, body) = held.join().unwrap();
    assert_eq!(code, 200, "the held query completes: {body}");
    assert_eq!(get(&base, &similar).0, 200, "the slot is free again");
    assert_eq!(svc.status().unwrap()["api"]["restarts"], 0);
}

#[test]
fn a_non_loopback_api_address_is_a_config_error() {
    let (tmp, lib) = setup();
    let d = tmp.path();
    let cfg = d.join("bad.toml");
    let text = config_text(d, &lib, 1, "\n[api]\naddr = \"0.0.0.0:8337\"\n");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.addr") && err.contains("loopback"),
        "{err}"
    );
}

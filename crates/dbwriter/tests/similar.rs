//! The similarity data in both sinks: every analysed track's stored row streamed once, in id
//! order, across window boundaries; failed and missing tracks left out; a seed by path with its
//! tags; the library statistics equal to a recomputation from the rows after stores, replacements,
//! failures and prunes; and a version 4 library given the same rows by the migration.

#[macro_use]
mod common;

use common::*;
use trackmill_dbwriter::{SimilarityRow, TrackReader, WriterOptions};
use trackmill_e2e::records::SAMPLE_MODEL;
use trackmill_similarity::vector::STAT_DIMS;
use trackmill_similarity::{LibraryStats, StoredView};
use trackmill_types::*;

/// An analysed record whose DSP values differ from track to track (`variant` moves them again).
fn varied(run: i64, k: FileKey, i: u64, variant: u64) -> Record {
    let mut r = analysed(run, k, i);
    if let RecordOutcome::Analyzed(a) = &mut r.outcome {
        let f = a.features.as_mut().unwrap();
        let x = ((i * 37 + variant * 101) % 97) as f32;
        f.spectral_centroid_hz.mean = 800.0 + 40.0 * x;
        f.spectral_flux.mean = 0.1 + x / 200.0;
        f.loudness_range_lu = 2.0 + x / 10.0;
        f.silence_ratio = x / 500.0;
    }
    r
}

fn path_of(i: u64) -> String {
    format!("/music/{i:03}.flac")
}

/// Stores `ids` (one in seven failed, the others analysed with `variant`).
fn store(b: &Backend, ids: impl Iterator<Item = u64>, variant: u64, fail: &dyn Fn(u64) -> bool) {
    let mut c = Client::start(b, WriterOptions::default());
    let run = c.start_run();
    for (seq, i) in ids.enumerate() {
        let k = key(path_of(i).as_bytes(), 1000 + i, 5_000 + variant as i64);
        let record = if fail(i) {
            failed(run, k)
        } else {
            varied(run, k, i, variant)
        };
        c.send(&ToDb::Store {
            seq: seq as u64 + 1,
            record: Box::new(record),
        });
    }
    c.flush(1);
    c.close().unwrap();
}

fn windows(r: &mut TrackReader, size: i64) -> Vec<SimilarityRow> {
    let Some((first, last)) = r.bounds().unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = first - 1;
    while start < last {
        out.extend(r.window(start, start + size).unwrap());
        start += size;
    }
    out
}

/// The statistics recomputed from the stored rows, one track at a time.
fn recomputed(rows: &[SimilarityRow]) -> LibraryStats {
    let mut s = LibraryStats::default();
    for r in rows {
        s.push(&StoredView::parse(&r.data).unwrap().raws());
    }
    s
}

fn assert_same_stats(got: &LibraryStats, want: &LibraryStats) {
    for i in 0..STAT_DIMS {
        assert_eq!(got.count(i), want.count(i), "count of dim {i}");
        assert!((got.mean(i) - want.mean(i)).abs() < 1e-6, "mean of dim {i}");
        assert!((got.std(i) - want.std(i)).abs() < 1e-6, "std of dim {i}");
    }
}

both!(
    stored_rows_stream_in_windows_without_failed_or_missing_tracks,
    |b: Backend| {
        store(&b, 0..70, 0, &|i| i % 7 == 3);
        let analysed = b.scalar("SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'") as usize;
        assert_eq!(analysed, 60);
        let mut r = TrackReader::open(&b.url()).unwrap();
        assert_eq!(r.count().unwrap() as usize, analysed);
        let whole = windows(&mut r, 10_000);
        assert_eq!(whole.len(), analysed);
        for size in [1, 7, 59, 60, 61] {
            assert_eq!(windows(&mut r, size), whole, "windows of {size}");
        }
        assert!(whole.windows(2).all(|w| w[0].id < w[1].id), "in id order");
        for row in &whole {
            let v = StoredView::parse(&row.data).expect("a stored row parses");
            assert!(v.artist().is_some_and(|a| a.starts_with("artist ")));
            assert!(v.album().is_some_and(|a| a.contains("\u{1f}album ")));
            assert_eq!(v.duration_s().map(|d| d.round()), Some(215.0));
            assert_eq!(v.embedding(SAMPLE_MODEL).map(<[u8]>::len), Some(2 * 88));
        }

        // A seed: its tags and its row; a failed file and an unknown path are none.
        let (meta, data) = r.seed(path_of(5).as_bytes()).unwrap().unwrap();
        assert_eq!(meta.artist.as_deref(), Some("Artist 5"), "first artist");
        assert_eq!(meta.title.as_deref(), Some("Track 5"));
        assert_eq!(meta.album.as_deref(), Some("Album 5"));
        assert_eq!(meta.path, path_of(5).into_bytes());
        assert_eq!(
            Some(&data),
            whole.iter().find(|w| w.id == meta.id).map(|w| &w.data)
        );
        assert!(r.seed(path_of(3).as_bytes()).unwrap().is_none());
        assert!(r.seed(b"/music/none.flac").unwrap().is_none());

        // A track marked missing is left out of every window and is no seed.
        b.exec(&format!(
            "UPDATE tracks SET missing_since = 1 WHERE id = {}",
            meta.id
        ));
        let rest = windows(&mut r, 7);
        assert_eq!(rest.len(), analysed - 1);
        assert!(rest.iter().all(|w| w.id != meta.id));
        assert!(r.seed(path_of(5).as_bytes()).unwrap().is_none());
        assert_eq!(r.count().unwrap() as usize, analysed - 1);
    }
);

both!(
    statistics_follow_stores_replacements_failures_and_prunes,
    |b: Backend| {
        store(&b, 0..40, 0, &|_| false);
        let mut r = TrackReader::open(&b.url()).unwrap();
        let rows = windows(&mut r, 16);
        assert_eq!(rows.len(), 40);
        let stats = r.stats().unwrap();
        assert!(stats.std(0) > 0.1, "the values vary");
        assert_same_stats(&stats, &recomputed(&rows));

        // Ten tracks analysed again with other values, five of them failing this time.
        store(&b, 10..20, 1, &|i| i % 2 == 0);
        let rows = windows(&mut r, 16);
        assert_eq!(rows.len(), 35);
        assert_same_stats(&r.stats().unwrap(), &recomputed(&rows));

        // The same batch sent twice leaves the same sums.
        store(&b, 10..20, 1, &|i| i % 2 == 0);
        assert_same_stats(&r.stats().unwrap(), &recomputed(&rows));

        // Pruned: three tracks marked missing whose files do not exist.
        b.exec("UPDATE tracks SET missing_since = 1 WHERE id IN (SELECT track_id FROM similarity ORDER BY track_id LIMIT 3)");
        assert_eq!(trackmill_dbwriter::prune(&b.url(), false).unwrap(), 3);
        let rows = windows(&mut r, 16);
        assert_eq!(rows.len(), 32);
        assert_eq!(r.stats().unwrap().count(0), 32);
        assert_same_stats(&r.stats().unwrap(), &recomputed(&rows));
    }
);

both!(
    a_version_4_library_gets_the_same_rows_from_the_migration,
    |b: Backend| {
        store(&b, 0..30, 0, &|i| i % 7 == 3);
        let mut r = TrackReader::open(&b.url()).unwrap();
        let written = windows(&mut r, 1000);
        let stats = r.stats().unwrap();
        drop(r);
        // What version 4 looked like: no similarity tables, no index of missing tracks.
        b.exec(
            "DROP TABLE similarity; DROP TABLE similarity_stats; DROP INDEX tracks_missing; \
         DELETE FROM schema_migrations WHERE version = 5",
        );
        let mut r = TrackReader::open(&b.url()).unwrap();
        assert_eq!(
            b.scalar("SELECT MAX(version) FROM schema_migrations"),
            trackmill_dbwriter::SCHEMA_VERSION
        );
        assert_eq!(windows(&mut r, 1000), written, "byte for byte");
        assert_same_stats(&r.stats().unwrap(), &stats);
    }
);

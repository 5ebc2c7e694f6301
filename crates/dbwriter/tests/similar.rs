//! The similarity queries' read side in both sinks: every analysed track streamed once, in id
//! order, across chunk boundaries, with its first artist and only the requested embeddings;
//! failed files left out; a sample by row-id stride; one track by path.

#[macro_use]
mod common;

use common::*;
use trackmill_dbwriter::{StoredTrack, TrackReader, WriterOptions};
use trackmill_types::*;

const FINGERPRINT: &str = "trackmill-dsp-v1";

/// 70 files, one in seven of them failed, interleaved with the analysed ones.
fn library(b: &Backend) {
    let mut c = Client::start(b, WriterOptions::default());
    let run = c.start_run();
    for i in 0..70u64 {
        let path = format!("/music/{i:03}.flac");
        let k = key(path.as_bytes(), 1000 + i, 5_000);
        let record = if i % 7 == 3 {
            failed(run, k)
        } else {
            analysed(run, k, i)
        };
        c.send(&ToDb::Store {
            seq: i + 1,
            record: Box::new(record),
        });
    }
    c.flush(1);
    c.close().unwrap();
}

fn collect(r: &mut TrackReader, chunk: usize, stride: u64) -> Vec<StoredTrack> {
    let mut out = Vec::new();
    let n = r
        .for_each_every(chunk, stride, &mut |t| out.push(t.clone()))
        .unwrap();
    assert_eq!(n as usize, out.len());
    out
}

both!(analyzed_tracks_stream_in_chunks, |b: Backend| {
    library(&b);
    let analysed = b.scalar("SELECT COUNT(*) FROM tracks WHERE status = 'analyzed'") as usize;
    assert!(analysed > 40 && analysed < 70, "{analysed}");
    let mut r = TrackReader::open(&b.url(), &[FINGERPRINT]).unwrap();
    assert_eq!(r.count().unwrap() as usize, analysed);
    let whole = collect(&mut r, 10_000, 1);
    assert_eq!(whole.len(), analysed);
    for chunk in [1, 7, analysed - 1, analysed, analysed + 1] {
        let got = collect(&mut r, chunk, 1);
        assert_eq!(got, whole, "chunk {chunk}");
    }
    assert!(whole.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    for t in &whole {
        let a = &t.analysis;
        assert!(
            a.features.is_some(),
            "{:?}",
            String::from_utf8_lossy(&t.path)
        );
        let models: Vec<&str> = a.embeddings.iter().map(|e| e.model.as_str()).collect();
        assert_eq!(models, [FINGERPRINT], "only the requested embeddings");
        assert!(!a.embeddings[0].values.is_empty());
        assert!(
            t.artist
                .as_deref()
                .is_some_and(|s| s.starts_with("Artist ")),
            "first artist"
        );
        assert!(t.title.is_some() && t.album.is_some() && t.duration_s.is_some());
    }

    // A sample: only row ids that are multiples of the stride, each complete.
    let sample = collect(&mut r, 3, 4);
    assert!(!sample.is_empty());
    assert!(sample.iter().all(|t| t.id % 4 == 0));
    let expected: Vec<&StoredTrack> = whole.iter().filter(|t| t.id % 4 == 0).collect();
    assert_eq!(sample.iter().collect::<Vec<_>>(), expected);

    // One track by path; a failed file and an unknown path are not analysed tracks.
    let one = r.track(&whole[5].path).unwrap().unwrap();
    assert_eq!(one, whole[5]);
    let failed: Vec<u8> = b"/music/003.flac".to_vec();
    assert!(r.track(&failed).unwrap().is_none());
    assert!(r.track(b"/music/none.flac").unwrap().is_none());

    // No embeddings asked for, none read.
    let mut bare = TrackReader::open(&b.url(), &[]).unwrap();
    assert!(collect(&mut bare, 8, 1)
        .iter()
        .all(|t| t.analysis.embeddings.is_empty()));
});

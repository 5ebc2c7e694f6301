//! Instant mixes: a sequence of tracks that follows one or more seeds.
//!
//! One pass over the library keeps the `pool` tracks nearest to any seed (a bounded top-k by the
//! distance to the nearest seed). The mix is then built greedily: the next track is the pool
//! track with the smallest distance to the previous track plus distance to the nearest seed
//! (so it flows from track to track without drifting away from the seeds), among those that
//! keep the rules: no artist twice in a row, no album more than twice in the mix, and with
//! `harmonic`, a key compatible with the previous track's on the circle of fifths and a tempo
//! within ±8 % of it or of its double or half ([`crate::music`]). The first track follows the
//! last seed. The mix ends early when no pool track keeps the rules.

use crate::music::{keys_compatible, tempos_compatible, Key};
use crate::topk::TopK;
use crate::vector::distance;
use std::collections::HashMap;

/// What the rules need to know about a track.
#[derive(Clone, Debug, PartialEq)]
pub struct MixInfo {
    pub id: i64,
    /// Normalised artist (e.g. lower-case album artist or first artist); `None` when unknown.
    pub artist: Option<String>,
    /// Normalised album (with its artist, so two albums named "Greatest Hits" differ).
    pub album: Option<String>,
    pub key: Key,
    pub bpm: f32,
}

/// Rules and size of a mix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixOptions {
    pub length: usize,
    pub harmonic: bool,
    /// Tracks of one album in the mix at most.
    pub per_album: usize,
}

impl Default for MixOptions {
    fn default() -> Self {
        MixOptions {
            length: 50,
            harmonic: false,
            per_album: 2,
        }
    }
}

/// One entry of a mix.
#[derive(Clone, Debug, PartialEq)]
pub struct MixEntry<T> {
    pub info: MixInfo,
    /// Distance to the nearest seed.
    pub seed_distance: f32,
    pub item: T,
}

struct Pooled<T> {
    info: MixInfo,
    vector: Vec<f32>,
    item: T,
}

/// Collects a mix's pool from a stream of tracks.
pub struct MixBuilder<T> {
    seeds: Vec<(MixInfo, Vec<f32>)>,
    opts: MixOptions,
    pool: TopK<Pooled<T>>,
}

impl<T> MixBuilder<T> {
    /// `seeds` in play order (never part of the mix). The pool keeps `length × 4` tracks, or
    /// `length × 12` with `harmonic` (its rules turn most tracks away), at least 64.
    pub fn new(seeds: Vec<(MixInfo, Vec<f32>)>, opts: MixOptions) -> Self {
        let factor = if opts.harmonic { 12 } else { 4 };
        let pool = opts.length.saturating_mul(factor).max(64);
        MixBuilder {
            seeds,
            opts,
            pool: TopK::new(pool, None),
        }
    }

    fn seed_distance(&self, v: &[f32]) -> f32 {
        self.seeds
            .iter()
            .map(|(_, s)| distance(v, s))
            .fold(f32::INFINITY, f32::min)
    }

    /// Offers one track; `make` is called only when the track would enter the pool (and
    /// returns `None` to leave it out), and only then is `vector` copied.
    pub fn offer(&mut self, info: MixInfo, vector: &[f32], make: impl FnOnce() -> Option<T>) {
        if self.seeds.iter().any(|(s, _)| s.id == info.id) {
            return;
        }
        let d = self.seed_distance(vector);
        if self.pool.admits(d, info.id) {
            let Some(item) = make() else { return };
            let id = info.id;
            self.pool.push(
                d,
                id,
                None,
                Pooled {
                    info,
                    vector: vector.to_vec(),
                    item,
                },
            );
        }
    }

    /// Sequences the pool into the mix.
    pub fn finish(self) -> Vec<MixEntry<T>> {
        let Some((last_seed, last_vec)) = self.seeds.last().cloned() else {
            return Vec::new();
        };
        let mut pool: Vec<(f32, Pooled<T>)> = self
            .pool
            .into_sorted()
            .into_iter()
            .map(|h| (h.distance, h.item))
            .collect();
        let mut albums: HashMap<String, usize> = HashMap::new();
        let mut prev_info = last_seed;
        let mut prev_vec = last_vec;
        let mut out = Vec::new();
        while out.len() < self.opts.length {
            let mut best: Option<(f32, usize)> = None;
            for (i, (seed_d, p)) in pool.iter().enumerate() {
                if !allowed(&prev_info, &p.info, &albums, &self.opts) {
                    continue;
                }
                let score = distance(&p.vector, &prev_vec) + seed_d;
                if best.is_none_or(|(b, _)| score < b) {
                    best = Some((score, i));
                }
            }
            let Some((_, i)) = best else { break };
            let (seed_d, p) = pool.swap_remove(i);
            if let Some(a) = &p.info.album {
                *albums.entry(a.clone()).or_insert(0) += 1;
            }
            prev_info = p.info.clone();
            prev_vec = p.vector;
            out.push(MixEntry {
                info: p.info,
                seed_distance: seed_d,
                item: p.item,
            });
        }
        out
    }
}

fn allowed(
    prev: &MixInfo,
    next: &MixInfo,
    albums: &HashMap<String, usize>,
    opts: &MixOptions,
) -> bool {
    if next.artist.is_some() && next.artist == prev.artist {
        return false;
    }
    if let Some(a) = &next.album {
        if albums.get(a).copied().unwrap_or(0) >= opts.per_album {
            return false;
        }
    }
    !opts.harmonic || (keys_compatible(prev.key, next.key) && tempos_compatible(prev.bpm, next.bpm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn info(rng: &mut impl Rng, id: i64) -> MixInfo {
        MixInfo {
            id,
            artist: Some(format!("artist {}", rng.random_range(0..6))),
            album: Some(format!("album {}", rng.random_range(0..200))),
            key: Key {
                tonic: rng.random_range(0..12),
                minor: rng.random_bool(0.5),
            },
            bpm: [0.0, 70.0, 90.0, 120.0, 124.0, 140.0, 175.0][rng.random_range(0..7)],
        }
    }

    fn library(seed: u64) -> Vec<(MixInfo, Vec<f32>)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..3000)
            .map(|i| {
                let v = (0..6).map(|_| rng.random_range(-1.0..1.0)).collect();
                (info(&mut rng, i), v)
            })
            .collect()
    }

    fn mix(lib: &[(MixInfo, Vec<f32>)], seeds: &[usize], opts: MixOptions) -> Vec<MixEntry<()>> {
        let seeds = seeds.iter().map(|&i| lib[i].clone()).collect();
        let mut b = MixBuilder::new(seeds, opts);
        for (i, v) in lib {
            b.offer(i.clone(), v, || Some(()));
        }
        b.finish()
    }

    #[test]
    fn keeps_the_artist_and_album_rules() {
        let lib = library(5);
        let opts = MixOptions {
            length: 50,
            ..MixOptions::default()
        };
        let m = mix(&lib, &[10, 20], opts);
        assert_eq!(m.len(), 50);
        let mut prev = lib[20].0.artist.clone();
        let mut albums = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for e in &m {
            assert_ne!(e.info.artist, prev, "no artist twice in a row");
            prev = e.info.artist.clone();
            let n = albums.entry(e.info.album.clone()).or_insert(0);
            *n += 1;
            assert!(*n <= 2, "no album more than twice");
            assert!(ids.insert(e.info.id), "no track twice");
            assert!(
                e.info.id != 10 && e.info.id != 20,
                "seeds are not in the mix"
            );
        }
        // Mixes stay near their seeds: closer than the library's typical distance.
        let mean = m.iter().map(|e| e.seed_distance).sum::<f32>() / m.len() as f32;
        let typical = lib[100..200]
            .iter()
            .map(|(_, v)| distance(v, &lib[10].1))
            .sum::<f32>()
            / 100.0;
        assert!(mean < 0.7 * typical, "{mean} vs {typical}");
    }

    #[test]
    fn harmonic_mixes_only_compatible_neighbours() {
        let lib = library(9);
        let opts = MixOptions {
            length: 30,
            harmonic: true,
            ..MixOptions::default()
        };
        let m = mix(&lib, &[7], opts);
        assert!(m.len() >= 10, "{}", m.len());
        let mut prev = lib[7].0.clone();
        for e in &m {
            assert!(
                keys_compatible(prev.key, e.info.key),
                "{:?} → {:?}",
                prev.key,
                e.info.key
            );
            assert!(
                tempos_compatible(prev.bpm, e.info.bpm),
                "{} → {}",
                prev.bpm,
                e.info.bpm
            );
            prev = e.info.clone();
        }
        // Without the rule, the same seed's mix has incompatible neighbours.
        let free = mix(
            &lib,
            &[7],
            MixOptions {
                harmonic: false,
                ..opts
            },
        );
        let mut prev = lib[7].0.clone();
        let clashes = free
            .iter()
            .filter(|e| {
                let bad = !keys_compatible(prev.key, e.info.key);
                prev = e.info.clone();
                bad
            })
            .count();
        assert!(clashes > 0);
    }

    #[test]
    fn ends_early_when_the_rules_leave_nothing() {
        let one_artist: Vec<(MixInfo, Vec<f32>)> = (0..10)
            .map(|i| {
                let info = MixInfo {
                    id: i,
                    artist: Some("same".into()),
                    album: None,
                    key: Key {
                        tonic: 0,
                        minor: false,
                    },
                    bpm: 120.0,
                };
                (info, vec![i as f32])
            })
            .collect();
        assert!(mix(&one_artist, &[0], MixOptions::default()).is_empty());
        assert!(MixBuilder::<()>::new(Vec::new(), MixOptions::default())
            .finish()
            .is_empty());
    }
}

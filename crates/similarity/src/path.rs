//! Song paths: a walk from one track to another through the library, each step strictly closer
//! to the destination, no track twice.
//!
//! Method: `steps` waypoints are placed evenly on the straight line from FROM's vector to TO's
//! (at i/(steps+1) of the way, i = 1…steps). One pass over the library keeps, for every
//! waypoint, its `candidates` nearest tracks among those strictly closer to TO than FROM is
//! (a bounded top-k each, so memory is O(steps × candidates)). Then, waypoint by waypoint, the
//! step is the waypoint's nearest candidate that is not used yet and strictly closer to TO than
//! the previous step; a waypoint with no such candidate is skipped. Nearest-to-the-line keeps
//! neighbouring steps similar (smooth transitions); the strict decrease makes the path arrive.

use crate::topk::TopK;
use crate::vector::distance;

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<T> {
    pub id: i64,
    /// Distance to the step's waypoint on the line.
    pub off_line: f32,
    /// Distance to TO.
    pub to_destination: f32,
    pub item: T,
}

/// Collects the candidates of a song path from a stream of tracks.
pub struct PathFinder<T> {
    from_id: i64,
    to_id: i64,
    to: Vec<f32>,
    start: f32,
    waypoints: Vec<Vec<f32>>,
    near: Vec<TopK<(f32, T)>>,
}

impl<T: Clone> PathFinder<T> {
    /// A path of up to `steps` tracks between `from` and `to` (their ids are never steps);
    /// each waypoint keeps its `candidates` nearest tracks (at least `steps + 1` is sensible:
    /// earlier steps may take some of them).
    pub fn new(from: (i64, &[f32]), to: (i64, &[f32]), steps: usize, candidates: usize) -> Self {
        let (a, b) = (from.1, to.1);
        let waypoints = (1..=steps)
            .map(|i| {
                let t = i as f32 / (steps + 1) as f32;
                a.iter().zip(b).map(|(x, y)| x + (y - x) * t).collect()
            })
            .collect();
        PathFinder {
            from_id: from.0,
            to_id: to.0,
            to: b.to_vec(),
            start: distance(a, b),
            waypoints,
            near: (0..steps).map(|_| TopK::new(candidates, None)).collect(),
        }
    }

    /// Offers one track. `make` is called (at most once) only when the track is kept, so costly
    /// work (building the item, checking that the file still exists) is done for few tracks;
    /// it returns `None` to leave the track out.
    pub fn offer(&mut self, id: i64, v: &[f32], make: impl FnOnce() -> Option<T>) {
        if id == self.from_id || id == self.to_id {
            return;
        }
        let dto = distance(v, &self.to);
        if dto.is_nan() || dto >= self.start {
            return;
        }
        let mut make = Some(make);
        let mut item: Option<T> = None;
        for (w, top) in self.waypoints.iter().zip(&mut self.near) {
            let d = distance(v, w);
            if top.admits(d, id) {
                if let Some(f) = make.take() {
                    item = f();
                }
                match &item {
                    Some(it) => {
                        top.push(d, id, None, (dto, it.clone()));
                    }
                    None => return,
                }
            }
        }
    }

    /// The path's steps in order (FROM and TO not included).
    pub fn finish(self) -> Vec<Step<T>> {
        let mut used = std::collections::HashSet::new();
        let mut last = self.start;
        let mut out = Vec::new();
        for top in self.near {
            let pick = top
                .into_sorted()
                .into_iter()
                .find(|h| h.item.0 < last && !used.contains(&h.id));
            if let Some(h) = pick {
                used.insert(h.id);
                last = h.item.0;
                out.push(Step {
                    id: h.id,
                    off_line: h.distance,
                    to_destination: h.item.0,
                    item: h.item.1,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn steps_approach_the_destination_and_never_repeat() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let tracks: Vec<Vec<f32>> = (0..5000)
            .map(|_| (0..4).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let (from, to) = (&tracks[0], &tracks[1]);
        let mut pf = PathFinder::new((0, from), (1, to), 12, 13);
        for (i, v) in tracks.iter().enumerate() {
            pf.offer(i as i64, v, || Some(i));
        }
        let path = pf.finish();
        assert!(
            path.len() >= 8,
            "a dense library fills most waypoints: {}",
            path.len()
        );
        let mut last = distance(from, to);
        let mut seen = std::collections::HashSet::new();
        for s in &path {
            assert!(s.to_destination < last);
            assert!((distance(&tracks[s.item], to) - s.to_destination).abs() < 1e-6);
            last = s.to_destination;
            assert!(seen.insert(s.id), "no track twice");
            assert!(s.id != 0 && s.id != 1);
        }
        // Smooth: each step is near the line, much nearer than a random track is.
        let mean_off: f32 = path.iter().map(|s| s.off_line).sum::<f32>() / path.len() as f32;
        let random: f32 = tracks[2..102]
            .iter()
            .map(|t| distance(t, &tracks[3]))
            .sum::<f32>()
            / 100.0;
        assert!(mean_off < random * 0.6, "{mean_off} vs {random}");
    }

    #[test]
    fn follows_a_line_of_tracks_in_order() {
        // Tracks on a line from (0,0) to (10,0), offered in reverse order.
        let pts: Vec<[f32; 2]> = (0..=10).map(|i| [i as f32, 0.1 * (i % 2) as f32]).collect();
        let mut pf = PathFinder::new((0, &pts[0]), (10, &pts[10]), 9, 10);
        for (i, p) in pts.iter().enumerate().rev() {
            pf.offer(i as i64, p, || Some(i));
        }
        let ids: Vec<i64> = pf.finish().iter().map(|s| s.id).collect();
        assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn nothing_between_gives_an_empty_path() {
        let a = [0.0f32, 0.0];
        let b = [1.0f32, 0.0];
        let mut pf = PathFinder::new((1, &a), (2, &b), 5, 6);
        pf.offer(3, &[-5.0, 0.0], || Some(()));
        pf.offer(1, &a, || Some(()));
        pf.offer(2, &b, || Some(()));
        // A track the caller turns away (its file is gone) is never a step.
        pf.offer(4, &[0.5, 0.0], || None);
        assert!(pf.finish().is_empty());
    }
}

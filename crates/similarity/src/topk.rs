//! A bounded top-k: the `k` nearest items of a stream, fed one at a time or chunk by chunk, in
//! O(k) memory whatever the stream's length, with an optional cap per group (e.g. at most two
//! tracks per artist). The result is exactly what sorting the whole stream and taking items in
//! order, skipping those whose group is full, would give; ties are broken by id.

use std::cmp::Ordering;

/// One kept item.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit<T> {
    pub distance: f32,
    /// Identifies the item for ties and repeats (a track's row id).
    pub id: i64,
    /// The group the cap applies to (`None`: in no group, never capped).
    pub group: Option<String>,
    pub item: T,
}

fn order<T>(a: &Hit<T>, b: &Hit<T>) -> Ordering {
    a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id))
}

/// The `k` nearest items seen so far.
#[derive(Clone, Debug)]
pub struct TopK<T> {
    k: usize,
    per_group: Option<usize>,
    hits: Vec<Hit<T>>,
    /// Index of the farthest kept hit (meaningful when `hits` is not empty).
    worst: usize,
}

impl<T> TopK<T> {
    /// Keeps at most `k` items, and at most `per_group` of any one group when given (0 is
    /// read as 1).
    pub fn new(k: usize, per_group: Option<usize>) -> Self {
        TopK {
            k,
            per_group: per_group.map(|n| n.max(1)),
            hits: Vec::with_capacity(k.min(4096)),
            worst: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Whether an item this far away could still be kept: lets the caller skip costly checks
    /// (does the file still exist?) for the many items that could not.
    pub fn admits(&self, distance: f32, id: i64) -> bool {
        if self.k == 0 || distance.is_nan() {
            return false;
        }
        if self.hits.len() < self.k {
            return true;
        }
        let w = &self.hits[self.worst];
        distance.total_cmp(&w.distance).then(id.cmp(&w.id)) == Ordering::Less
    }

    /// Offers one item; returns whether it was kept (for now).
    pub fn push(&mut self, distance: f32, id: i64, group: Option<String>, item: T) -> bool {
        if !self.admits(distance, id) {
            return false;
        }
        let hit = Hit {
            distance,
            id,
            group,
            item,
        };
        if let (Some(cap), Some(g)) = (self.per_group, hit.group.as_deref()) {
            let mut count = 0;
            let mut group_worst: Option<usize> = None;
            for (i, h) in self.hits.iter().enumerate() {
                if h.group.as_deref() == Some(g) {
                    count += 1;
                    if group_worst.is_none_or(|w| order(h, &self.hits[w]) == Ordering::Greater) {
                        group_worst = Some(i);
                    }
                }
            }
            if count >= cap {
                // The group is full: the new item can only take the place of the group's worst.
                let gw = group_worst.unwrap_or(0);
                if order(&hit, &self.hits[gw]) != Ordering::Less {
                    return false;
                }
                self.hits[gw] = hit;
                self.find_worst();
                return true;
            }
        }
        if self.hits.len() < self.k {
            self.hits.push(hit);
        } else {
            self.hits[self.worst] = hit;
        }
        self.find_worst();
        true
    }

    fn find_worst(&mut self) {
        self.worst = (0..self.hits.len())
            .max_by(|&a, &b| order(&self.hits[a], &self.hits[b]))
            .unwrap_or(0);
    }

    /// The kept items, nearest first.
    pub fn into_sorted(mut self) -> Vec<Hit<T>> {
        self.hits.sort_by(order);
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The reference: sort everything, take in order while the group has room.
    fn reference(items: &[(f32, i64, Option<String>)], k: usize, cap: Option<usize>) -> Vec<i64> {
        let mut v = items.to_vec();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut out = Vec::new();
        let mut counts = std::collections::HashMap::new();
        for (_, id, g) in v {
            if out.len() == k {
                break;
            }
            if let (Some(c), Some(g)) = (cap, &g) {
                let n = counts.entry(g.clone()).or_insert(0);
                if *n >= c {
                    continue;
                }
                *n += 1;
            }
            out.push(id);
        }
        out
    }

    #[test]
    fn equals_a_full_sort_with_and_without_a_group_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..200 {
            let n = rng.random_range(0..400);
            let groups = rng.random_range(1..12);
            let items: Vec<(f32, i64, Option<String>)> = (0..n)
                .map(|i| {
                    // Few distinct distances, so ties are common.
                    let d = f32::from(rng.random_range(0u8..40)) / 4.0;
                    let g = (rng.random_range(0..10) > 0)
                        .then(|| format!("artist {}", rng.random_range(0..groups)));
                    (d, i, g)
                })
                .collect();
            let k = rng.random_range(0..30);
            let cap = (round % 2 == 0).then(|| rng.random_range(1..4));
            let mut top = TopK::new(k, cap);
            // Fed in random chunks, out of id order.
            let mut order: Vec<usize> = (0..items.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for chunk in order.chunks(rng.random_range(1..50)) {
                for &i in chunk {
                    let (d, id, g) = &items[i];
                    top.push(*d, *id, g.clone(), ());
                }
                assert!(top.len() <= k);
            }
            let got: Vec<i64> = top.into_sorted().iter().map(|h| h.id).collect();
            assert_eq!(got, reference(&items, k, cap), "round {round}");
        }
    }

    #[test]
    fn admits_only_what_could_be_kept() {
        let mut t = TopK::new(2, None);
        assert!(t.admits(100.0, 1));
        t.push(1.0, 1, None, "a");
        t.push(2.0, 2, None, "b");
        assert!(!t.admits(2.0, 3), "a tie loses to the smaller id");
        assert!(t.admits(2.0, 0));
        assert!(!t.admits(f32::NAN, 4));
        assert!(!t.push(3.0, 5, None, "c"));
        assert!(t.push(0.5, 6, None, "d"));
        let v: Vec<&str> = t.into_sorted().into_iter().map(|h| h.item).collect();
        assert_eq!(v, ["d", "a"]);
        assert!(TopK::<()>::new(0, None).into_sorted().is_empty());
    }
}

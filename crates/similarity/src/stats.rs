//! Library statistics for the z-scores: per-dimension running mean and variance (Welford), which
//! skip unknown values and merge exactly (Chan et al.), so statistics kept per chunk, per run or
//! per database can be combined without a second look at the tracks.

/// Running mean and variance of `D` dimensions; NaN values are unknown and not counted.
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats<const D: usize> {
    n: [u64; D],
    mean: [f64; D],
    m2: [f64; D],
}

impl<const D: usize> Default for RunningStats<D> {
    fn default() -> Self {
        RunningStats {
            n: [0; D],
            mean: [0.0; D],
            m2: [0.0; D],
        }
    }
}

impl<const D: usize> RunningStats<D> {
    /// Adds one observation (NaN entries are skipped dimension by dimension).
    pub fn push(&mut self, x: &[f32; D]) {
        for (i, &v) in x.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let v = f64::from(v);
            self.n[i] += 1;
            let d = v - self.mean[i];
            self.mean[i] += d / self.n[i] as f64;
            self.m2[i] += d * (v - self.mean[i]);
        }
    }

    /// Statistics from per-dimension counts, sums and sums of squares: the form the database
    /// keeps, because concurrent writers can add a track to it and take one from it without
    /// reading it first. In f64 the cancellation in `Σx² − (Σx)²/n` costs nothing that matters
    /// here: the values are O(1–20), so at 10⁷ tracks the error is about 10⁻⁸ of the variance.
    pub fn from_sums(n: &[u64; D], sum: &[f64; D], sum_sq: &[f64; D]) -> Self {
        let mut s = Self::default();
        for i in 0..D {
            if n[i] == 0 {
                continue;
            }
            let nf = n[i] as f64;
            s.n[i] = n[i];
            s.mean[i] = sum[i] / nf;
            s.m2[i] = (sum_sq[i] - sum[i] * sum[i] / nf).max(0.0);
        }
        s
    }

    /// Combines the statistics of another set of observations into these.
    pub fn merge(&mut self, other: &Self) {
        for i in 0..D {
            let (na, nb) = (self.n[i], other.n[i]);
            if nb == 0 {
                continue;
            }
            if na == 0 {
                self.n[i] = nb;
                self.mean[i] = other.mean[i];
                self.m2[i] = other.m2[i];
                continue;
            }
            let n = na + nb;
            let d = other.mean[i] - self.mean[i];
            self.mean[i] += d * nb as f64 / n as f64;
            self.m2[i] += other.m2[i] + d * d * (na as f64) * (nb as f64) / n as f64;
            self.n[i] = n;
        }
    }

    /// Observations counted in dimension `i`.
    pub fn count(&self, i: usize) -> u64 {
        self.n[i]
    }

    pub fn mean(&self, i: usize) -> f64 {
        self.mean[i]
    }

    /// Population standard deviation of dimension `i` (0 with fewer than two observations).
    pub fn std(&self, i: usize) -> f64 {
        if self.n[i] < 2 {
            0.0
        } else {
            (self.m2[i] / self.n[i] as f64).max(0.0).sqrt()
        }
    }

    /// `(x - mean) / std`, 0 when `x` is unknown or the dimension does not vary, capped at ±5 so
    /// that one outlying value cannot outweigh the rest of the vector.
    pub fn z(&self, i: usize, x: f32) -> f32 {
        let s = self.std(i);
        if !x.is_finite() || s <= 1e-9 {
            return 0.0;
        }
        (((f64::from(x) - self.mean[i]) / s) as f32).clamp(-5.0, 5.0)
    }
}

/// The z-scores of [`RunningStats`] ready for a loop over a million tracks: each dimension's
/// mean and reciprocal standard deviation, once (0 for a dimension that does not vary).
#[derive(Clone, Debug, PartialEq)]
pub struct Standard<const D: usize> {
    mean: [f32; D],
    inv_std: [f32; D],
}

impl<const D: usize> RunningStats<D> {
    pub fn standard(&self) -> Standard<D> {
        Standard {
            mean: std::array::from_fn(|i| self.mean[i] as f32),
            inv_std: std::array::from_fn(|i| {
                let s = self.std(i);
                if s <= 1e-9 {
                    0.0
                } else {
                    (1.0 / s) as f32
                }
            }),
        }
    }
}

impl<const D: usize> Standard<D> {
    /// As [`RunningStats::z`], in f32.
    #[inline]
    pub fn z(&self, i: usize, x: f32) -> f32 {
        if !x.is_finite() {
            return 0.0;
        }
        ((x - self.mean[i]) * self.inv_std[i]).clamp(-5.0, 5.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(xs: &[f32]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let v = xs.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / n;
        (m, v.sqrt())
    }

    #[test]
    fn matches_the_two_pass_formula_and_merges_exactly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let xs: Vec<f32> = (0..1000).map(|_| rng.random_range(-50.0..300.0)).collect();
        let mut all = RunningStats::<1>::default();
        let mut a = RunningStats::<1>::default();
        let mut b = RunningStats::<1>::default();
        for (i, &x) in xs.iter().enumerate() {
            all.push(&[x]);
            if i % 3 == 0 {
                a.push(&[x])
            } else {
                b.push(&[x])
            }
        }
        let (m, s) = naive(&xs);
        assert!((all.mean(0) - m).abs() < 1e-9);
        assert!((all.std(0) - s).abs() < 1e-9);
        a.merge(&b);
        assert_eq!(a.count(0), 1000);
        assert!((a.mean(0) - m).abs() < 1e-9);
        assert!((a.std(0) - s).abs() < 1e-9);
        // Merging into or from an empty set is the identity.
        let mut e = RunningStats::<1>::default();
        e.merge(&all);
        assert_eq!(e, all);
        all.merge(&RunningStats::default());
        assert_eq!(e, all);
    }

    #[test]
    fn sums_give_what_one_track_at_a_time_gives() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut pushed = RunningStats::<2>::default();
        let (mut n, mut s, mut ss) = ([0u64; 2], [0f64; 2], [0f64; 2]);
        for _ in 0..5000 {
            let x = [
                rng.random_range(9.0..14.0f32),
                rng.random_range(-1.0..1.0f32),
            ];
            pushed.push(&x);
            for i in 0..2 {
                n[i] += 1;
                s[i] += f64::from(x[i]);
                ss[i] += f64::from(x[i]) * f64::from(x[i]);
            }
        }
        let summed = RunningStats::from_sums(&n, &s, &ss);
        for i in 0..2 {
            assert_eq!(summed.count(i), pushed.count(i));
            assert!((summed.mean(i) - pushed.mean(i)).abs() < 1e-9);
            assert!((summed.std(i) - pushed.std(i)).abs() < 1e-9);
        }
        assert_eq!(
            RunningStats::<2>::from_sums(&[0; 2], &[0.0; 2], &[0.0; 2]),
            RunningStats::default()
        );
    }

    #[test]
    fn unknown_values_are_skipped_per_dimension() {
        let mut s = RunningStats::<2>::default();
        s.push(&[1.0, f32::NAN]);
        s.push(&[3.0, 10.0]);
        assert_eq!((s.count(0), s.count(1)), (2, 1));
        assert_eq!(s.mean(0), 2.0);
        assert_eq!(s.std(1), 0.0);
        assert_eq!(s.z(1, 12.0), 0.0, "a constant dimension gives no z-score");
        assert_eq!(s.z(0, f32::NAN), 0.0);
        assert_eq!(s.z(0, 3.0), 1.0);
        assert_eq!(s.z(0, 1e9), 5.0, "capped");
        let st = s.standard();
        for x in [f32::NAN, 12.0, 3.0, 1e9, -1e9, 2.5] {
            assert!((st.z(0, x) - s.z(0, x)).abs() < 1e-6, "{x}");
            assert_eq!(st.z(1, x), 0.0, "a constant dimension gives no z-score");
        }
    }
}

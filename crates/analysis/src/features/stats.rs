//! Running mean and standard deviation of a frame-wise quantity, in f64 for stable, repeatable
//! sums.

use trackmill_types::Stat;

#[derive(Clone, Copy, Debug, Default)]
pub struct RunningStat {
    n: u64,
    sum: f64,
    sum_sq: f64,
}

impl RunningStat {
    pub fn add(&mut self, x: f64) {
        if x.is_finite() {
            self.n += 1;
            self.sum += x;
            self.sum_sq += x * x;
        }
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// Population standard deviation (0 with fewer than two values).
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_sq / self.n as f64 - m * m).max(0.0).sqrt()
    }

    pub fn stat(&self) -> Stat {
        Stat {
            mean: self.mean() as f32,
            std: self.std() as f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std() {
        let mut s = RunningStat::default();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            s.add(x);
        }
        assert!((s.mean() - 5.0).abs() < 1e-12);
        assert!((s.std() - 2.0).abs() < 1e-12);
        s.add(f64::NAN);
        assert_eq!(s.count(), 8);
        assert_eq!(RunningStat::default().stat().mean, 0.0);
    }
}

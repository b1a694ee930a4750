//! The timeout in force: a fixed `--timeout`, or `--timeout N%` of the median time of the
//! tasks that succeeded so far (GNU parallel's meaning), with the fixed one as its floor.

use crate::engine::EngineConfig;
use crate::engine::config::TIMEOUT_SAMPLES;

/// Buckets per doubling of a duration: the median is known within 2^(1/32), about 2%.
const PER_DOUBLING: f64 = 32.0;
/// Buckets from 1 µs to about 2^40 µs (12 days): more than any task's run.
const BUCKETS: usize = 40 * PER_DOUBLING as usize;

/// The run times of the tasks that succeeded, as a histogram of logarithmic buckets: its
/// size is fixed (10 KiB) however many tasks run, and its median within about 2%.
#[derive(Debug, Clone)]
pub struct RunTimes {
    buckets: Vec<u64>,
    count: u64,
}

impl Default for RunTimes {
    fn default() -> Self {
        Self { buckets: vec![0; BUCKETS], count: 0 }
    }
}

impl RunTimes {
    /// Counts one success that ran `micros`.
    pub fn add(&mut self, micros: u64) {
        let i = ((micros.max(1) as f64).log2() * PER_DOUBLING) as usize;
        self.buckets[i.min(BUCKETS - 1)] += 1;
        self.count += 1;
    }

    /// Successes counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The median, in nanoseconds (the upper edge of its bucket); `None` before any success.
    pub fn median_ns(&self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let half = self.count.div_ceil(2);
        let mut seen = 0;
        let i = self.buckets.iter().position(|&n| {
            seen += n;
            seen >= half
        })?;
        Some((((i + 1) as f64 / PER_DOUBLING).exp2() * 1000.0) as u64)
    }
}

/// The limit in force now, in nanoseconds: the fixed one; or, with a percentage, that share
/// of the median once [`TIMEOUT_SAMPLES`] tasks have succeeded, never below the fixed one,
/// which alone applies before.
pub fn limit_ns(cfg: &EngineConfig, times: &RunTimes) -> Option<u64> {
    let Some(percent) = cfg.timeout_percent else { return cfg.timeout_ns };
    let relative = times
        .median_ns()
        .filter(|_| times.count() >= TIMEOUT_SAMPLES)
        .map(|m| (m as u128 * u128::from(percent) / 100).min(u128::from(u64::MAX)) as u64);
    match (relative, cfg.timeout_ns) {
        (Some(r), Some(floor)) => Some(r.max(floor)),
        (r, floor) => r.or(floor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_within_its_bucket() {
        let mut t = RunTimes::default();
        assert_eq!(t.median_ns(), None);
        for us in [100_000, 100_000, 100_000, 5_000_000, 1] {
            t.add(us);
        }
        let m = t.median_ns().unwrap() as f64;
        assert!((100e6..=103e6).contains(&m), "{m}");
    }

    #[test]
    fn a_relative_limit_waits_for_enough_successes_and_keeps_its_floor() {
        let mut cfg = EngineConfig { timeout_percent: Some(300), ..EngineConfig::default() };
        let mut t = RunTimes::default();
        for _ in 0..TIMEOUT_SAMPLES - 1 {
            t.add(100_000);
        }
        assert_eq!(limit_ns(&cfg, &t), None);
        cfg.timeout_ns = Some(10_000_000_000);
        assert_eq!(limit_ns(&cfg, &t), Some(10_000_000_000));
        t.add(100_000);
        // 3 × ~100 ms is under the 10 s floor.
        assert_eq!(limit_ns(&cfg, &t), Some(10_000_000_000));
        cfg.timeout_ns = None;
        let l = limit_ns(&cfg, &t).unwrap() as f64;
        assert!((300e6..=310e6).contains(&l), "{l}");
        // A fixed timeout without a percentage is just that.
        let fixed = EngineConfig { timeout_ns: Some(5), ..EngineConfig::default() };
        assert_eq!(limit_ns(&fixed, &t), Some(5));
    }
}

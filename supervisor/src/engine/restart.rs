//! When to replace a dead worker: a backoff that grows while workers keep dying without doing
//! any good (with jitter, so a crash-looping pool does not restart in lockstep) and resets
//! once one has been healthy, and an intensity limit in the manner of Erlang/OTP's
//! supervisors: more than N restarts within a period means something is wrong beyond any
//! one task, and the supervisor gives up rather than spin.
//!
//! Only a death that no task answers for is backed off ([`Life::Wasted`]): a worker program
//! that dies at start, before its handshake or idle, would otherwise respawn in a tight loop.
//! A death charged to the task it was running ([`Life::Charged`]) is replaced at once: that
//! task's attempts bound how often it can happen, so waiting only slows the batch down (a
//! loop of 100 such crashes took 67.4 ms a crash with the backoff and 3.41 ms without), and
//! the intensity limit still ends a run in which every task kills its worker.

use std::collections::VecDeque;

use shared::hash::mix64;

use crate::engine::ids::SlotIndex;

/// The restart limits of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts allowed within `period_ns`.
    pub max_restarts: u32,
    /// The sliding window of the intensity limit.
    pub period_ns: u64,
    /// Wasted deaths of a slot in a row ([`Life::Wasted`]) that are replaced at once, before
    /// the backoff starts.
    pub immediate_restarts: u32,
    /// Backoff after the first death past `immediate_restarts`; doubles after each further one.
    pub backoff_base_ns: u64,
    /// Ceiling of the backoff.
    pub backoff_max_ns: u64,
    /// A worker that served this long, or finished a task, was healthy.
    pub healthy_after_ns: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 100,
            period_ns: 10_000_000_000,
            // Wasted deaths only: a few failed starts in a row (a transient EAGAIN, a busy
            // machine) are retried at full speed; a program that keeps dying at start slows
            // down after that and ends at the intensity limit.
            immediate_restarts: 5,
            backoff_base_ns: 10_000_000,
            backoff_max_ns: 2_000_000_000,
            healthy_after_ns: 1_000_000_000,
        }
    }
}

/// What a dead worker's life says about its program, for the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// It did good work (finished a task, or served past `healthy_after_ns`): the count of
    /// wasted deaths starts over, and the replacement starts at once.
    Healthy,
    /// It died executing a task that is charged an attempt for it: replaced at once, the
    /// count left as it is. The task's attempts, not a backoff, bound how often that happens.
    Charged,
    /// It did no good and no task answers for it: it could not be started, died before its
    /// handshake, or died between tasks. Counted; past `immediate_restarts` in a row, backed
    /// off.
    Wasted,
}

/// The restart limit was exceeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Restarts counted in the window, this one included.
    pub restarts: u32,
    /// The limit.
    pub max: u32,
    /// The window.
    pub period_ns: u64,
}

/// Counts restarts in the sliding window and computes backoffs.
#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<u64>,
    seed: u64,
    ceiling_ns: u64,
}

impl RestartTracker {
    /// A tracker for `policy` over `workers` slots; `seed` makes the jitter reproducible.
    ///
    /// The backoff's ceiling is lowered so that `workers` slots in a crash loop, each waiting
    /// the longest backoff, still restart faster than the intensity limit allows: a backoff
    /// may slow a crash loop down, but must never keep it going forever below the limit.
    pub fn new(policy: RestartPolicy, seed: u64, workers: usize) -> Self {
        let loop_safe = (policy.period_ns as u128 * workers.max(1) as u128 * 9
            / (10 * (u128::from(policy.max_restarts) + 1))) as u64;
        let ceiling_ns = policy.backoff_max_ns.min(loop_safe).max(1_000_000);
        Self { policy, recent: VecDeque::new(), seed, ceiling_ns }
    }

    /// Counts a restart at `now_ns`; an error when it would exceed the limit.
    pub fn record(&mut self, now_ns: u64) -> Result<(), Exceeded> {
        while let Some(&t) = self.recent.front() {
            if now_ns.saturating_sub(t) >= self.policy.period_ns {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now_ns);
        let n = self.recent.len() as u32;
        if n > self.policy.max_restarts {
            return Err(Exceeded { restarts: n, max: self.policy.max_restarts, period_ns: self.policy.period_ns });
        }
        Ok(())
    }

    /// Backoff before replacing a worker of `slot` that ended as `life`; `wasted` is the
    /// slot's count of wasted deaths since its last healthy worker, brought up to date.
    pub fn backoff_after(&mut self, life: Life, wasted: &mut u32, slot: SlotIndex) -> u64 {
        match life {
            Life::Healthy => {
                *wasted = 0;
                0
            }
            Life::Charged => 0,
            Life::Wasted => {
                *wasted = wasted.saturating_add(1);
                self.backoff_ns(*wasted, slot)
            }
        }
    }

    /// Backoff before a restart after `failures` wasted deaths of one slot (1 for the first). The first `immediate_restarts` are restarted at once: a replacement
    /// in about a millisecond is the point of a process pool. After those it grows from the
    /// base, doubling, with jitter in [50%, 100%], up to the ceiling.
    fn backoff_ns(&mut self, failures: u32, slot: SlotIndex) -> u64 {
        if failures <= self.policy.immediate_restarts {
            return 0;
        }
        let exp = (failures - self.policy.immediate_restarts - 1).min(30);
        let full = self.policy.backoff_base_ns.saturating_mul(1 << exp).min(self.ceiling_ns);
        self.seed = mix64(self.seed ^ (slot.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(failures));
        let frac = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        (full as f64 * (0.5 + 0.5 * frac)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn intensity_is_a_sliding_window() {
        let policy = RestartPolicy { max_restarts: 3, period_ns: 1000 * MS, ..Default::default() };
        let mut t = RestartTracker::new(policy, 1, 1);
        assert!(t.record(0).is_ok());
        assert!(t.record(100 * MS).is_ok());
        assert!(t.record(200 * MS).is_ok());
        assert_eq!(t.record(300 * MS).unwrap_err().restarts, 4);
        // Later, the old ones have left the window.
        let mut t = RestartTracker::new(policy, 1, 1);
        for i in 0..3 {
            t.record(i * 400 * MS).unwrap();
        }
        assert!(t.record(1300 * MS).is_ok());
    }

    #[test]
    fn the_default_replaces_five_deaths_in_a_row_at_once_then_backs_off() {
        let mut t = RestartTracker::new(RestartPolicy::default(), 7, 1);
        for failures in 1..=5 {
            assert_eq!(t.backoff_ns(failures, SlotIndex(0)), 0, "death {failures}");
        }
        let b6 = t.backoff_ns(6, SlotIndex(0));
        assert!((5 * MS..=10 * MS).contains(&b6), "{b6}");
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let policy = RestartPolicy { immediate_restarts: 1, ..Default::default() };
        let mut t = RestartTracker::new(policy, 7, 64);
        assert_eq!(t.backoff_ns(1, SlotIndex(0)), 0);
        let b2 = t.backoff_ns(2, SlotIndex(0));
        assert!((5 * MS..=10 * MS).contains(&b2), "{b2}");
        let b5 = t.backoff_ns(5, SlotIndex(0));
        assert!((40 * MS..=80 * MS).contains(&b5), "{b5}");
        let b40 = t.backoff_ns(40, SlotIndex(0));
        assert!((1000 * MS..=2000 * MS).contains(&b40), "{b40}");
        // Jitter: slots dying together do not restart together.
        let same: Vec<u64> = (0..8).map(|slot| t.backoff_ns(5, SlotIndex(slot))).collect();
        let distinct: std::collections::BTreeSet<_> = same.iter().collect();
        assert!(distinct.len() >= 6, "{same:?}");
    }

    /// A death charged to a task is replaced at once and leaves the count of wasted deaths
    /// alone; a healthy worker starts it over.
    #[test]
    fn only_wasted_deaths_count_towards_the_backoff() {
        let policy = RestartPolicy { immediate_restarts: 1, ..Default::default() };
        let mut t = RestartTracker::new(policy, 7, 1);
        let mut wasted = 0;
        for _ in 0..50 {
            assert_eq!(t.backoff_after(Life::Charged, &mut wasted, SlotIndex(0)), 0);
        }
        assert_eq!(wasted, 0);
        assert_eq!(t.backoff_after(Life::Wasted, &mut wasted, SlotIndex(0)), 0, "the first is immediate");
        assert_eq!(t.backoff_after(Life::Charged, &mut wasted, SlotIndex(0)), 0);
        let b = t.backoff_after(Life::Wasted, &mut wasted, SlotIndex(0));
        assert!((5 * MS..=10 * MS).contains(&b), "charged deaths between wasted ones do not reset: {b}");
        assert_eq!(wasted, 2);
        assert_eq!(t.backoff_after(Life::Healthy, &mut wasted, SlotIndex(0)), 0);
        assert_eq!(t.backoff_after(Life::Wasted, &mut wasted, SlotIndex(0)), 0, "started over");
        assert_eq!(wasted, 1);
    }

    /// However long the backoff grows, a loop of unhealthy deaths on every slot restarts
    /// faster than the limit allows, so the limit always ends it.
    #[test]
    fn a_slow_crash_loop_still_trips_the_limit() {
        for (workers, max, period_s) in
            [(1usize, 100u32, 10u64), (2, 100, 10), (2, 10, 5), (16, 100, 10), (100, 100, 10)]
        {
            let policy = RestartPolicy { max_restarts: max, period_ns: period_s * 1000 * MS, ..Default::default() };
            let mut t = RestartTracker::new(policy, 3, workers);
            let mut now = 0;
            let mut gave_up = false;
            // Every slot dies at once, over and over, with the longest backoff.
            for round in 0..10_000u32 {
                let wait = (0..workers).map(|s| t.backoff_ns(30 + round, SlotIndex(s))).max().unwrap();
                now += wait;
                if (0..workers).any(|_| t.record(now).is_err()) {
                    gave_up = true;
                    break;
                }
            }
            assert!(gave_up, "{workers} workers at {max}/{period_s}s looped forever");
            assert!(now < 4 * period_s * 1000 * MS, "{workers} workers took {}s to give up", now / 1000 / MS);
        }
    }
}

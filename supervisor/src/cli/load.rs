//! How much CPU the rest of the machine takes while something is measured: the busy time of
//! every CPU (`/proc/stat`) less this process's and its waited-for children's. `compare` and
//! the benchmark suite both judge their figures by it, with one threshold.

use std::time::Instant;

use nix::sys::resource::{UsageWho, getrusage};

/// Other processes' CPU, in cores, above which CPU-bound and timing figures measure them as
/// much as us: a quarter of a core. `compare` warns above it; the benchmark runs a round
/// again above it.
pub const NOISY_CORES: f64 = 0.25;

/// A reading of the machine's and this process's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnap {
    /// Seconds all CPUs spent busy since boot (user, nice, system, irq, softirq).
    busy_s: f64,
    /// Seconds the hypervisor took from this machine's CPUs since boot.
    steal_s: f64,
    /// CPU seconds of this process and of its children that have been waited for.
    own_s: f64,
    at: Instant,
}

impl CpuSnap {
    /// Reads the clocks now. Where `/proc/stat` cannot be read, the machine reads as idle.
    pub fn take() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .chain(std::iter::repeat(0))
            .take(8)
            .collect();
        // SAFETY: sysconf has no preconditions and touches no memory of ours.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait,
        // and not steal (the hypervisor's, which no process of this machine took).
        let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
        Self { busy_s: busy as f64 / hz, steal_s: fields[7] as f64 / hz, own_s: own_cpu_s(), at: Instant::now() }
    }
}

/// What other processes took between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OtherLoad {
    /// CPU of other processes, in cores.
    pub other_cores: f64,
    /// CPU the hypervisor stole, in cores.
    pub steal_cores: f64,
}

impl OtherLoad {
    /// Between `a` and `b`.
    pub fn between(a: &CpuSnap, b: &CpuSnap) -> Self {
        let wall = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-3);
        let other = (b.busy_s - a.busy_s) - (b.own_s - a.own_s);
        Self { other_cores: (other / wall).max(0.0), steal_cores: ((b.steal_s - a.steal_s) / wall).max(0.0) }
    }

    /// Between `a` and now.
    pub fn since(a: &CpuSnap) -> Self {
        Self::between(a, &CpuSnap::take())
    }

    /// Whether other processes took more than [`NOISY_CORES`].
    pub fn noisy(&self) -> bool {
        self.other_cores > NOISY_CORES
    }
}

/// CPU seconds of this process and of its children that have been waited for.
fn own_cpu_s() -> f64 {
    let secs = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
    };
    secs(UsageWho::RUSAGE_SELF) + secs(UsageWho::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own CPU is not counted as other processes': a busy loop here reads well below a
    /// whole core of other load (the machine's other processes may add some, never ours).
    #[test]
    fn our_own_work_is_not_other_load() {
        let a = CpuSnap::take();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let load = OtherLoad::since(&a);
        assert!(load.other_cores >= 0.0 && load.steal_cores >= 0.0);
        let busy = OtherLoad::between(&a, &CpuSnap { own_s: a.own_s, ..CpuSnap::take() });
        assert!(busy.other_cores >= load.other_cores, "counting our CPU as theirs reads more: {busy:?} vs {load:?}");
    }
}

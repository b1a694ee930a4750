//! The process table from `/proc`: each pid's parent and state, and the tree below a pid.
//! Used by the worker to find what a task left running; the supervisor's memory watch reads
//! new pids' `stat` with [`stat`].

use std::collections::HashMap;
use std::io;

use nix::unistd::Pid;

/// What `/proc/PID/stat` says of a process, as far as the process table needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Its parent.
    pub ppid: Pid,
    /// Its state letter (`R`, `S`, `Z`, ...).
    pub state: u8,
    /// A thread that is not its process's leader (its `exit_signal`, field 38, is -1): a
    /// thread's id opens under `/proc` though `readdir` does not list it.
    pub thread: bool,
}

/// Parses `/proc/PID/stat`, after the command name's closing parenthesis (a name may itself
/// hold spaces and parentheses); `None` if it is not such a line.
pub fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let rest = stat.iter().rposition(|&b| b == b')').map(|i| &stat[i + 1..])?;
    let mut fields = std::str::from_utf8(rest).ok()?.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse::<i32>().ok()?;
    // Fields 5 to 37 lie between the parent (4) and the exit signal (38).
    let thread = fields.nth(33).is_some_and(|f| f == "-1");
    Some(Stat { ppid: Pid::from_raw(ppid), state, thread })
}

/// `/proc/PID/stat` of `pid`, read now.
pub fn stat(pid: Pid) -> io::Result<Stat> {
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unreadable /proc/{pid}/stat")))
}

/// A process's parent and its state letter (`R`, `S`, `Z`, ...), from `/proc/PID/stat`.
pub fn parent_and_state(pid: Pid) -> io::Result<(Pid, u8)> {
    stat(pid).map(|s| (s.ppid, s.state))
}

/// Every pid in `/proc` now, into `out` (cleared first).
pub fn all_pids(out: &mut Vec<i32>) -> io::Result<()> {
    out.clear();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            out.push(pid);
        }
    }
    Ok(())
}

/// Every pid's parent and state, as last read.
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<i32, (i32, u8)>,
    pids: Vec<i32>,
    seen: std::collections::HashSet<i32>,
}

impl ProcTable {
    /// A table read now.
    pub fn now() -> io::Result<Self> {
        let mut t = Self::default();
        t.refresh(true)?;
        Ok(t)
    }

    /// Brings the table up to date with `/proc`: new pids are read, gone ones dropped, and a
    /// pid whose parent is gone is read again (it was re-parented). With `all`, every pid is
    /// read again (for states).
    pub fn refresh(&mut self, all: bool) -> io::Result<()> {
        all_pids(&mut self.pids)?;
        self.seen.clear();
        self.seen.extend(self.pids.iter().copied());
        self.procs.retain(|pid, _| self.seen.contains(pid));
        for &pid in &self.pids {
            let stale = all
                || match self.procs.get(&pid) {
                    None => true,
                    Some((pp, _)) => *pp > 1 && !self.seen.contains(pp),
                };
            if stale {
                match parent_and_state(Pid::from_raw(pid)) {
                    Ok((pp, state)) => {
                        self.procs.insert(pid, (pp.as_raw(), state));
                    }
                    // Gone since the readdir.
                    Err(_) => {
                        self.procs.remove(&pid);
                    }
                }
            }
        }
        Ok(())
    }

    /// `root` and all its descendants that the table knows, `root` first.
    pub fn tree(&self, root: i32) -> Vec<i32> {
        let mut tree = vec![root];
        let mut i = 0;
        // Trees are small and the table a few hundred entries: a scan per level is cheaper
        // than building a child index every sample.
        while i < tree.len() {
            let p = tree[i];
            tree.extend(self.procs.iter().filter(|&(_, &(pp, _))| pp == p).map(|(&c, _)| c));
            i += 1;
        }
        tree
    }

    /// The state letter of `pid`, as last read.
    pub fn state(&self, pid: i32) -> Option<u8> {
        self.procs.get(&pid).map(|&(_, s)| s)
    }

    /// The parent of `pid`, as last read.
    pub fn parent(&self, pid: i32) -> Option<i32> {
        self.procs.get(&pid).map(|&(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_found_by_parents() {
        let me = nix::unistd::getpid();
        let (pp, state) = parent_and_state(me).unwrap();
        assert_eq!(pp, nix::unistd::getppid());
        assert!(state.is_ascii_uppercase(), "{state}");
        assert!(!stat(me).unwrap().thread);
        // This test's own thread (the harness runs tests on threads of their own).
        let tid = nix::unistd::gettid();
        assert_eq!(stat(tid).unwrap().thread, tid != me);
        let mut child = std::process::Command::new("/bin/sh").args(["-c", "sleep 30 & wait"]).spawn().unwrap();
        let t0 = std::time::Instant::now();
        let tree = loop {
            let tree = ProcTable::now().unwrap().tree(child.id() as i32);
            if tree.len() >= 2 {
                break tree;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{tree:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        for p in tree.iter().rev() {
            let _ = nix::sys::signal::kill(Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
        }
        child.wait().unwrap();
    }
}

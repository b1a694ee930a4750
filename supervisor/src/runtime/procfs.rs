//! Reading other processes' state from `/proc`: resident memory, by path or through a
//! descriptor kept open, and the pid the kernel handed out last (the process table is
//! `worker::procs`, which the worker shares).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use nix::unistd::Pid;

/// Bytes per page, asked once.
fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as u64)
    })
}

/// The resident memory of `pid` in bytes: field 2 of `/proc/PID/statm` (resident pages) ×
/// the page size. Shared pages (the program's text, libraries) count in full for each
/// process that maps them.
pub(crate) fn resident_bytes(pid: Pid) -> std::io::Result<u64> {
    let statm = std::fs::read(format!("/proc/{pid}/statm"))?;
    parse_statm(pid, &statm)
}

fn parse_statm(pid: impl std::fmt::Display, statm: &[u8]) -> io::Result<u64> {
    let pages = std::str::from_utf8(statm)
        .ok()
        .and_then(|s| s.split_ascii_whitespace().nth(1))
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unreadable /proc/{pid}/statm: {:?}", String::from_utf8_lossy(statm)),
            )
        })?;
    Ok(pages * page_size())
}

/// `/proc/PID/statm` of one process, kept open: each read is one `pread`, where reading by
/// path costs an open, a read and a close. The descriptor stays bound to the process it was
/// opened for: once that one is reaped a read fails (`ESRCH`), even if its pid is reused; a
/// zombie reads as 0 resident.
#[derive(Debug)]
pub(crate) struct Statm {
    pid: Pid,
    file: File,
}

impl Statm {
    pub(crate) fn open(pid: Pid) -> io::Result<Self> {
        Ok(Self { pid, file: File::open(format!("/proc/{pid}/statm"))? })
    }

    /// The process's resident bytes now, as [`resident_bytes`] counts them.
    pub(crate) fn resident(&self) -> io::Result<u64> {
        // Seven decimal fields of at most 20 digits each.
        let mut buf = [0u8; 160];
        let n = self.file.read_at(&mut buf, 0)?;
        parse_statm(self.pid, &buf[..n])
    }
}

/// `/proc/loadavg`, kept open, for the last pid the kernel handed out (its fifth field): pids
/// (threads' ids among them) are handed out in increasing order, wrapping at `pid_max`, so
/// the processes made since the last look have the pids after the one seen then.
#[derive(Debug)]
pub(crate) struct LastPid(File);

impl LastPid {
    pub(crate) fn open() -> io::Result<Self> {
        File::open("/proc/loadavg").map(Self)
    }

    pub(crate) fn read(&self) -> io::Result<i32> {
        let mut buf = [0u8; 128];
        let n = self.0.read_at(&mut buf, 0)?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_ascii_whitespace().nth(4))
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/loadavg"))
    }
}

/// The largest pid plus one (`/proc/sys/kernel/pid_max`), where pids wrap.
pub(crate) fn pid_max() -> io::Result<i32> {
    let s = std::fs::read_to_string("/proc/sys/kernel/pid_max")?;
    s.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("unreadable pid_max: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_resident_size_grows_with_touched_memory() {
        let me = Pid::this();
        let before = resident_bytes(me).unwrap();
        assert!(before > 0);
        let block = vec![1u8; 64 << 20];
        let after = resident_bytes(me).unwrap();
        assert!(after >= before + (32 << 20), "{before} -> {after}");
        drop(std::hint::black_box(block));
        assert!(resident_bytes(Pid::from_raw(i32::MAX)).is_err());
    }

    #[test]
    fn a_kept_statm_reads_again_and_fails_once_its_process_is_reaped() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let statm = Statm::open(pid).unwrap();
        assert!(statm.resident().unwrap() > 0);
        assert_eq!(statm.resident().unwrap() > 0, resident_bytes(pid).unwrap() > 0);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(statm.resident().is_err());
    }

    #[test]
    fn the_last_pid_follows_a_new_process() {
        let last = LastPid::open().unwrap();
        let before = last.read().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let after = last.read().unwrap();
        child.wait().unwrap();
        assert_ne!(before, after);
        assert!(after > 0 && after < pid_max().unwrap());
    }
}

//! Reading other processes' state from `/proc`: resident memory, parent pids, the process
//! table.

use std::io;
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
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1).and_then(|f| f.parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("unreadable /proc/{pid}/statm: {statm:?}"))
    })?;
    Ok(pages * page_size())
}

/// The parent pid of `pid`: field 4 of `/proc/PID/stat`, read after the command name's
/// closing parenthesis (a name may itself hold spaces and parentheses).
pub(crate) fn parent_pid(pid: Pid) -> io::Result<Pid> {
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    let after = stat.iter().rposition(|&b| b == b')').map(|i| &stat[i + 1..]);
    let ppid = after
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.split_ascii_whitespace().nth(1))
        .and_then(|f| f.parse::<i32>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unreadable /proc/{pid}/stat")))?;
    Ok(Pid::from_raw(ppid))
}

/// Every pid in `/proc` now, into `out` (cleared first).
pub(crate) fn all_pids(out: &mut Vec<i32>) -> io::Result<()> {
    out.clear();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            out.push(pid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_entries_read() {
        let me = nix::unistd::getpid();
        assert!(resident_bytes(me).unwrap() > 1 << 20);
        assert_eq!(parent_pid(me).unwrap(), nix::unistd::getppid());
        let mut pids = Vec::new();
        all_pids(&mut pids).unwrap();
        assert!(pids.contains(&me.as_raw()));
        assert_eq!(resident_bytes(Pid::from_raw(i32::MAX)).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}

//! Reading other processes' state from `/proc`: resident memory (the process table is
//! `worker::procs`, which the worker shares).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_entries_read() {
        let me = nix::unistd::getpid();
        assert!(resident_bytes(me).unwrap() > 1 << 20);
        assert_eq!(resident_bytes(Pid::from_raw(i32::MAX)).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}

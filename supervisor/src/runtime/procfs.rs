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
}

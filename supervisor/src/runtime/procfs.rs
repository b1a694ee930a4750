//! What the supervisor reads of a process from /proc: its resident memory.

use std::io;

use nix::unistd::Pid;

/// The resident size of process `pid` in bytes: the second field of `/proc/PID/statm`
/// (resident pages) times the page size. One read of a short file, a few microseconds.
pub(crate) fn resident_bytes(pid: Pid) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = text.split_ascii_whitespace().nth(1).and_then(|f| f.parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/statm has no resident field: {text:?}"))
    })?;
    Ok(pages * page_size())
}

/// The system's page size (4 KiB on x86-64; 16 or 64 KiB on some ARM systems).
fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
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

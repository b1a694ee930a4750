//! The private runtime directory of a run: a fresh directory (0700) under
//! `$XDG_RUNTIME_DIR` or the temp directory that holds the control socket, removed when the
//! run ends. Directories left by runs that were SIGKILLed are reclaimed by the next run.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::{Pid, geteuid};

/// The socket's file name inside a run directory.
pub const CONTROL_SOCKET: &str = "bulkhead-control.sock";

/// Where run directories live.
pub fn base_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && x.is_dir()
    {
        return x;
    }
    std::env::temp_dir()
}

fn prefix() -> String {
    format!("bulkhead-{}-", geteuid().as_raw())
}

/// A run directory; removed on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates a fresh private directory, reclaiming those of dead runs first.
    pub fn create() -> io::Result<Self> {
        let base = base_dir();
        reclaim(&base);
        let pid = std::process::id();
        let nonce = worker::clock::mono_ns();
        let path = base.join(format!("{}{pid}-{nonce:x}", prefix()));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        // Whatever the umask did, the directory is ours alone.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
        Ok(Self { path })
    }

    /// The control socket's path.
    pub fn control_socket(&self) -> PathBuf {
        self.path.join(CONTROL_SOCKET)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Run directories of our user in `base`, with the pid of the run that made each.
pub fn list(base: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let prefix = prefix();
    let uid = geteuid().as_raw();
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&prefix)?;
            let pid: u32 = rest.split('-').next()?.parse().ok()?;
            let meta = e.metadata().ok()?;
            (meta.is_dir() && meta.uid() == uid).then(|| (pid, e.path()))
        })
        .collect()
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    !matches!(kill(Pid::from_raw(pid as i32), None), Err(nix::Error::ESRCH))
}

/// Removes the directories of runs whose process is gone.
pub fn reclaim(base: &Path) {
    for (pid, path) in list(base) {
        if !alive(pid) {
            log::info!("removing {} left by a run that was killed", path.display());
            let _ = fs::remove_dir_all(path);
        }
    }
}

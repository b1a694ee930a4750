//! How a run opens and replaces its output files without destroying one it does not own: the
//! results, events, report and input must be different files; an output is never opened
//! through a symlink that the kernel's `protected_symlinks` rule would refuse to follow; the
//! report is replaced atomically.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The task input.
    Input,
    /// The results file.
    Results,
    /// The events file.
    Events,
    /// The command line's report page.
    Report,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Input => "the task input",
            Role::Results => "--results",
            Role::Events => "--events",
            Role::Report => "--report",
        })
    }
}

/// Why the outputs of a run cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Two roles name one file: one would overwrite the other.
    #[error(
        "{first} and {second} are the same file ({path}): the run would overwrite one with the other; name different files"
    )]
    Same {
        /// The first role.
        first: Role,
        /// The second.
        second: Role,
        /// The file, as the second names it.
        path: PathBuf,
    },
    /// A symlink in a sticky world-writable directory (such as /tmp) owned by someone else.
    #[error(
        "{role} {path} is a symlink in the sticky world-writable directory {dir}, owned by uid {owner}, who is neither this user nor the directory's owner: refusing to follow it (as the kernel's protected_symlinks does); name the file it points to"
    )]
    UnsafeSymlink {
        /// Its role.
        role: Role,
        /// The path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The symlink's owner.
        owner: u32,
    },
}

/// Which file a path names: an existing one by device and inode (so a hard link or a symlink
/// is the same file), a new one by its canonical directory and name.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Inode(u64, u64),
    New(PathBuf),
    /// A device or a pipe (`/dev/null`, `/dev/stdout`): shared harmlessly.
    Special,
}

fn identity(path: &Path) -> Identity {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() || m.is_dir() => Identity::Inode(m.dev(), m.ino()),
        Ok(_) => Identity::Special,
        Err(_) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            Identity::New(dir.join(path.file_name().unwrap_or_default()))
        }
    }
}

/// Checks the paths of one run before anything is opened: no two name the same file, and no
/// output is a symlink that `protected_symlinks` would refuse.
pub fn check(paths: &[(Role, &Path)]) -> Result<(), PathError> {
    for (role, path) in paths {
        if *role != Role::Input {
            check_symlink(*role, path)?;
        }
    }
    let ids: Vec<Identity> = paths.iter().map(|(_, p)| identity(p)).collect();
    for (i, a) in ids.iter().enumerate() {
        if let Some(j) = ids[..i].iter().position(|b| b == a && *a != Identity::Special) {
            return Err(PathError::Same { first: paths[j].0, second: paths[i].0, path: paths[i].1.to_path_buf() });
        }
    }
    Ok(())
}

/// The kernel's rule (`fs.protected_symlinks`): in a sticky world-writable directory, a
/// symlink is followed only by its owner, or when it belongs to the directory's owner.
/// Without the rule, anyone could plant `/tmp/events.jsonl -> /etc/passwd` for root to
/// truncate.
fn check_symlink(role: Role, path: &Path) -> Result<(), PathError> {
    let Ok(link) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !link.file_type().is_symlink() {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(d) = std::fs::metadata(dir) else { return Ok(()) };
    let sticky_world_writable = d.mode() & 0o1002 == 0o1002;
    let me = nix::unistd::geteuid().as_raw();
    if sticky_world_writable && link.uid() != me && link.uid() != d.uid() {
        return Err(PathError::UnsafeSymlink {
            role,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            owner: link.uid(),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, synced and then
/// renamed into place: a failed or interrupted write leaves the old file as it was. A path
/// that is not a regular file (`/dev/stdout`) is written directly.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::OpenOptions::new().write(true).open(path)?.write_all(bytes);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".bulkhead-").suffix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    // A report is for reading: the usual 0644 rather than the temporary file's 0600.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hard_link_and_a_new_path_are_recognised_as_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "x\n").unwrap();
        let b = dir.path().join("b.jsonl");
        std::fs::hard_link(&a, &b).unwrap();
        let err = check(&[(Role::Results, &a), (Role::Events, &b)]).unwrap_err();
        assert!(matches!(err, PathError::Same { first: Role::Results, second: Role::Events, .. }), "{err}");
        let new = dir.path().join("new.html");
        let same_new = dir.path().join(".").join("new.html");
        assert!(check(&[(Role::Events, &new), (Role::Report, &same_new)]).is_err());
        assert!(check(&[(Role::Results, &a), (Role::Report, &new)]).is_ok());
        let null = Path::new("/dev/null");
        assert!(check(&[(Role::Results, null), (Role::Events, null)]).is_ok());
    }

    #[test]
    fn an_atomic_write_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.html");
        std::fs::write(&p, "old").unwrap();
        write_atomically(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert!(write_atomically(&dir.path().join("no/such/dir/r.html"), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }
}

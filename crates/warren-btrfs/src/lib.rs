//! btrfs ioctls: subvolumes, snapshots, quota groups and the tree search, by path. These are the
//! storage operations of the jail tier (a sandbox's root filesystem is a snapshot of its image
//! with a quota limit). Each is one ioctl, where the `btrfs` tool costs a process and, for a
//! limited snapshot, a second transaction.
//!
//! The unsafe code is confined to `sys`, the raw ioctls; every function here is safe.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

#[allow(unsafe_code)]
mod sys;

/// How the filesystem accounts space to subvolumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaMode {
    /// Quotas are off: limits are not enforced.
    Off,
    /// Full qgroups: exact shared/exclusive accounting by backref walks at every transaction
    /// commit, whose cost grows with the number of snapshots sharing the image.
    Full,
    /// Simple quotas: each extent is charged to the subvolume that wrote it, so a snapshot
    /// starts at zero and its limit caps what it writes. Constant cost per commit.
    Simple,
}

/// Opens a directory without following a symlink in the last component: a sandbox controls
/// what its own `/tmp` is, and must not point the host's operations elsewhere.
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the root directory of a subvolume, refusing anything else (inode 256 is the root of
/// every btrfs subvolume).
fn open_subvolume(path: &Path) -> io::Result<OwnedFd> {
    let fd = open_dir(path)?;
    if rustix::fs::fstat(&fd)?.st_ino != 256 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a btrfs subvolume", path.display()),
        ));
    }
    Ok(fd)
}

/// Whether `path` (not followed if a symlink) is the root of a btrfs subvolume.
pub fn is_subvolume(path: &Path) -> bool {
    open_subvolume(path).is_ok_and(|fd| sys::subvolume_id(fd.as_fd()).is_ok())
}

/// The directory a new entry goes into, and its name.
fn split(path: &Path) -> io::Result<(OwnedFd, &[u8])> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((open_dir(parent)?, name.as_bytes()))
}

/// Creates `dest` as a writable snapshot of the subvolume `source`, its quota group limited to
/// `limit` bytes when given.
pub fn snapshot(source: &Path, dest: &Path, limit: Option<u64>) -> io::Result<()> {
    let src = open_dir(source)?;
    let (dir, name) = split(dest)?;
    sys::create(dir.as_fd(), name, Some(src.as_fd()), limit)
}

/// Creates `dest` as an empty subvolume, its quota group limited to `limit` bytes when given.
pub fn create_subvolume(dest: &Path, limit: Option<u64>) -> io::Result<()> {
    let (dir, name) = split(dest)?;
    sys::create(dir.as_fd(), name, None, limit)
}

/// Deletes the subvolume at `path`. Fails with ENOTEMPTY while it holds nested subvolumes.
pub fn delete_subvolume(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    sys::destroy(dir.as_fd(), name)
}

/// Opens the filesystem's top level `fs_root` and checks that `path` is on the same filesystem.
fn open_fs_of(fs_root: &Path, path: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fs = open_dir(fs_root)?;
    if sys::fsid(fs.as_fd())? != sys::fsid(path)? {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    Ok(fs)
}

/// Every subvolume nested beneath `root`, at any depth, in an order where each comes before the
/// subvolume it is nested in.
fn nested_ids(fs: BorrowedFd<'_>, root: u64) -> io::Result<Vec<u64>> {
    let mut found = vec![root];
    let mut next = 0;
    // Breadth first: each subvolume is listed after its parent, so the reverse deletes
    // children first. A child has exactly one parent, so no id is found twice.
    while let Some(&parent) = found.get(next) {
        found.extend(sys::child_subvolumes(fs, parent)?);
        next += 1;
    }
    found.remove(0);
    found.reverse();
    Ok(found)
}

/// The ids of the subvolume rooted at `path` and of every subvolume nested beneath it, wherever
/// in its directory tree (or in a nested one's) they are linked: children before their
/// parents, `path`'s own last. `fs_root` is the filesystem's top level, searched from.
pub fn subvolume_tree(fs_root: &Path, path: &Path) -> io::Result<Vec<u64>> {
    let root = open_subvolume(path)?;
    let id = sys::subvolume_id(root.as_fd())?;
    let fs = open_fs_of(fs_root, root.as_fd())?;
    let mut ids = nested_ids(fs.as_fd(), id)?;
    ids.push(id);
    Ok(ids)
}

/// Deletes the subvolume rooted at `path` with every subvolume nested beneath it, wherever they
/// were moved to inside it, deepest first. Nothing in their directory trees is walked: each
/// subvolume goes whole, whatever depth, size or file attributes its tree has. `fs_root` is the
/// filesystem's top level, which must not be an idmapped mount.
pub fn delete_subvolume_tree(fs_root: &Path, path: &Path) -> io::Result<()> {
    let root = open_subvolume(path)?;
    let id = sys::subvolume_id(root.as_fd())?;
    let fs = open_fs_of(fs_root, root.as_fd())?;
    drop(root);
    for child in nested_ids(fs.as_fd(), id)? {
        match sys::destroy_by_id(fs.as_fd(), child) {
            Ok(()) => {}
            // Gone since the search (deleted by someone else): what was wanted.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) => {}
            Err(e) => return Err(e),
        }
    }
    sys::destroy_by_id(fs.as_fd(), id)
}

/// Sets (`None`: clears) the byte limit of the subvolume with id `id` (from
/// [`subvolume_tree`]), from the filesystem's top level `fs_root`.
pub fn set_limit_by_id(fs_root: &Path, id: u64, limit: Option<u64>) -> io::Result<()> {
    sys::set_limit(open_dir(fs_root)?.as_fd(), id, limit)
}

/// Sets (`None`: clears) the byte limit of the subvolume at `path`. The change is made from
/// `fs_root` (the filesystem's top level): made from inside a subvolume at its limit, it would
/// itself fail with EDQUOT.
pub fn set_limit(fs_root: &Path, path: &Path, limit: Option<u64>) -> io::Result<()> {
    let (id, fs) = (subvolume_id(path)?, open_dir(fs_root)?);
    if sys::fsid(fs.as_fd())? != sys::fsid(open_dir(path)?.as_fd())? {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    sys::set_limit(fs.as_fd(), id, limit)
}

/// The id of the subvolume rooted at `path` (also its level-0 quota group's id).
pub fn subvolume_id(path: &Path) -> io::Result<u64> {
    sys::subvolume_id(open_subvolume(path)?.as_fd())
}

/// Makes the subvolume at `path` read-only.
pub fn set_read_only(path: &Path) -> io::Result<()> {
    sys::set_read_only(open_dir(path)?.as_fd())
}

/// The filesystem's directory under /sys/fs/btrfs.
pub fn sysfs_dir(fs: &Path) -> io::Result<PathBuf> {
    use std::fmt::Write;
    let id = sys::fsid(open_dir(fs)?.as_fd())?;
    let mut uuid = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            uuid.push('-');
        }
        let _ = write!(uuid, "{b:02x}");
    }
    Ok(Path::new("/sys/fs/btrfs").join(uuid))
}

/// The quota mode of the filesystem `fs` is on.
pub fn quota_mode(fs: &Path) -> io::Result<QuotaMode> {
    let qgroups = sysfs_dir(fs)?.join("qgroups");
    if !qgroups.is_dir() {
        return Ok(QuotaMode::Off);
    }
    // Kernels before simple quotas (6.7) have no `mode` file: their quotas are full ones.
    match std::fs::read_to_string(qgroups.join("mode")) {
        Ok(mode) if mode.trim() == "squota" => Ok(QuotaMode::Simple),
        Ok(_) => Ok(QuotaMode::Full),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(QuotaMode::Full),
        Err(e) => Err(e),
    }
}

/// Turns quotas on (in `mode`) or off for the filesystem `fs` is on. Switching between full and
/// simple quotas takes `Off` first. Simple quotas need Linux 6.7 (EINVAL before).
pub fn set_quota_mode(fs: &Path, mode: QuotaMode) -> io::Result<()> {
    let cmd = match mode {
        QuotaMode::Off => sys::QuotaCtl::Disable,
        QuotaMode::Full => sys::QuotaCtl::Enable,
        QuotaMode::Simple => sys::QuotaCtl::EnableSimple,
    };
    sys::quota_ctl(open_dir(fs)?.as_fd(), cmd)
}

//! Filesystem operations confined to the destination directory.
//!
//! Every multi-component path is resolved by the kernel with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` against an `O_PATH` fd of the destination: `..` stops at the root and
//! a symlink `x -> /etc` (or `-> ../../..`) is followed as if the destination were `/`. What
//! remains is always one final name inside an already-resolved directory fd, and that name is
//! only ever touched with `*at` calls that do not follow it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`,
//! `mkdirat`, `symlinkat`, `unlinkat`, `linkat` without `AT_SYMLINK_FOLLOW`). No step uses a
//! std path join through image-controlled names, which is what CVE-2018-15664-style escapes
//! exploit (SECURITY.md item 4).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Timestamps, mkdirat, openat, openat2,
    statat, unlinkat, utimensat,
};
use rustix::io::Errno;

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// An `O_PATH` handle on the destination directory.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens the destination. Its own path is the caller's, so it is opened normally; only paths
    /// below it come from the image.
    pub(crate) fn open(dest: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            dest,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// Opens a directory by its (already cleaned, relative) path, resolved inside the root.
    /// `readable` gives an fd that can list entries; otherwise an `O_PATH` fd.
    pub(crate) fn open_dir(&self, path: &Path, readable: bool) -> Result<OwnedFd, Errno> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let access = if readable {
            OFlags::RDONLY
        } else {
            OFlags::PATH
        };
        openat2(
            &self.fd,
            path,
            access | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        )
    }

    /// Opens a directory inside the root, creating missing ones (mode 0755, owned by root, as
    /// Docker does for parents a layer leaves out).
    pub(crate) fn mkdir_all(&self, path: &Path) -> Result<OwnedFd, Errno> {
        match self.open_dir(path, false) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Errno::NOENT);
        };
        let parent_fd = self.mkdir_all(parent)?;
        match mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
            // EEXIST: something else is there, a dangling symlink for instance; the in-root
            // open below decides whether it is usable.
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        self.open_dir(path, false)
    }
}

/// `lstat` of one name in a directory: its type, or `None` if nothing is there.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileType>, Errno> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens a subdirectory by one name for listing, refusing to follow a symlink there.
pub(crate) fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory, without `.` and `..`. Collected first so removal does not race the
/// directory stream.
pub(crate) fn list(dir: OwnedFd) -> Result<(Dir, Vec<(OsString, FileType)>), Errno> {
    let mut d = Dir::new(dir)?;
    let mut names = Vec::new();
    for entry in d.by_ref() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((OsStr::from_bytes(name).to_owned(), entry.file_type()));
        }
    }
    Ok((d, names))
}

/// Removes one name and, if it is a directory, everything below it. Never follows symlinks:
/// a symlink is unlinked, not its target. Nothing there is not an error.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // EISDIR is Linux's answer for a directory; some filesystems say EPERM.
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = open_subdir(dir, name)?;
    let (sub, children) = list(sub)?;
    for (child, _) in &children {
        remove_all(sub.fd()?, child)?;
    }
    drop(sub);
    unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Sets a name's timestamps without following it (so a symlink gets its own times).
pub(crate) fn set_times_at(dir: impl AsFd, name: &OsStr, mtime: i64) -> Result<(), Errno> {
    let ts = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
}

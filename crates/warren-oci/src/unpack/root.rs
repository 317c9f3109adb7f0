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
use std::path::{Path, PathBuf};

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
        let parts: Vec<&OsStr> = path.iter().collect();
        let prefix = |n: usize| parts[..n].iter().collect::<PathBuf>();
        // The longest prefix that exists, by bisection (a prefix of an existing directory
        // exists too). Probing upwards one level at a time re-resolves the whole path each
        // time, which an image can make quadratic with deep trees behind symlinks.
        let (mut have, mut missing) = (0, parts.len());
        let mut fd = self.open_dir(Path::new(""), false)?;
        while missing - have > 1 {
            let mid = have + (missing - have) / 2;
            match self.open_dir(&prefix(mid), false) {
                Ok(found) => (have, fd) = (mid, found),
                Err(Errno::NOENT) => missing = mid,
                Err(e) => return Err(e),
            }
        }
        for (i, name) in parts.iter().enumerate().skip(have) {
            fd = match mkdirat(&fd, *name, Mode::from_raw_mode(0o755)) {
                // Just made, so a plain directory: open it by its one name.
                Ok(()) => openat(
                    &fd,
                    *name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?,
                // Something else is there, a dangling symlink for instance; the in-root open
                // decides whether it is usable.
                Err(Errno::EXIST) => self.open_dir(&prefix(i + 1), false)?,
                Err(e) => return Err(e),
            };
        }
        Ok(fd)
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
pub(crate) fn list(dir: BorrowedFd<'_>) -> Result<Vec<(OsString, FileType)>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((OsStr::from_bytes(name).to_owned(), entry.file_type()));
        }
    }
    Ok(names)
}

/// Removes one name and, if it is a directory, everything below it. Never follows symlinks:
/// a symlink is unlinked, not its target. Nothing there is not an error.
///
/// Iterative, holding one directory fd at a time: an image can build trees far deeper than its
/// path-length limit (each entry may extend a tree through a symlinked parent), deep enough to
/// overflow a thread's stack or the process's fd limit if this recursed.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // EISDIR is Linux's answer for a directory; some filesystems say EPERM.
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let mut cur = open_subdir(dir, name)?;
    // One frame per level below `dir`: the level's own name and the children still to remove.
    let mut stack = vec![(name.to_owned(), names_only(list(cur.as_fd())?))];
    while let Some((_, pending)) = stack.last_mut() {
        if let Some(child) = pending.pop() {
            match unlinkat(&cur, &child, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR | Errno::PERM) => {
                    cur = open_subdir(cur.as_fd(), &child)?;
                    stack.push((child, names_only(list(cur.as_fd())?)));
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        let Some((done, _)) = stack.pop() else { break };
        if stack.is_empty() {
            drop(cur);
            return unlinkat(dir, &done, AtFlags::REMOVEDIR);
        }
        // `..` of a directory reached without following symlinks is the one we came from.
        cur = open_subdir(cur.as_fd(), OsStr::new(".."))?;
        unlinkat(&cur, &done, AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

fn names_only(entries: Vec<(OsString, FileType)>) -> Vec<OsString> {
    entries.into_iter().map(|(n, _)| n).collect()
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

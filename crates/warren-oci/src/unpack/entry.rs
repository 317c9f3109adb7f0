//! Applying one tar entry: whiteouts, files, directories, symlinks and hard links.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, chownat, fchmod, fchown, futimens,
    linkat, mkdirat, openat, symlinkat,
};
use rustix::io::Errno;
use tar::EntryType;

use super::root::{self, Root};
use super::{State, clean};
use crate::error::LayerError;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Owner for ids the idmapped mount cannot map (it covers 0..=65535): the usual "nobody".
const OVERFLOW_ID: u32 = 65534;

/// Ownership, permissions and time from a tar header, already made safe.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uid: u32,
    gid: u32,
    /// Permission bits without setuid/setgid: an image must not be able to ship a binary that
    /// gains privileges, even inside the sandbox's user namespace.
    mode: u32,
    mtime: i64,
}

pub(super) fn apply<R: Read>(
    state: &mut State,
    mut entry: tar::Entry<'_, R>,
) -> Result<(), LayerError> {
    let raw = entry.path_bytes().into_owned();
    check_len(state, raw.len())?;
    let path = clean(&raw);
    let kind = entry.header().entry_type();
    let Some(name) = path.file_name().map(OsStr::to_owned) else {
        // The entry names the destination itself ("./", "/", "../"). Its mode and owner are the
        // caller's to choose, so a directory entry here is ignored.
        return match kind {
            EntryType::Directory => Ok(()),
            _ => Err(LayerError::Refused("a non-directory entry names the root")),
        };
    };
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();

    if name.as_bytes().starts_with(WHITEOUT) {
        return whiteout(state, &parent, name.as_bytes());
    }
    let meta = meta(entry.header())?;
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {}
        EntryType::Directory | EntryType::Symlink | EntryType::Link => {}
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            // Device nodes would give a sandbox raw access to host devices if the mount allowed
            // it; the pool is nodev anyway, and no image needs them to run.
            tracing::debug!(entry = %path.display(), kind = ?kind, "skipping device node or fifo");
            state.stats.skipped += 1;
            return Ok(());
        }
        other => {
            tracing::debug!(entry = %path.display(), kind = ?other, "skipping tar entry type");
            state.stats.skipped += 1;
            return Ok(());
        }
    }

    let dir = state
        .root
        .mkdir_all(&parent)
        .map_err(LayerError::io("resolve parent directory"))?;
    let existing = root::kind_at(dir.as_fd(), &name).map_err(LayerError::io("lstat"))?;
    // Docker's rule: whatever is there is replaced, unless both are directories (then the
    // lower directory's content stays and only its metadata changes).
    let keep_dir = existing == Some(FileType::Directory) && kind == EntryType::Directory;
    if existing.is_some() && !keep_dir {
        if kind == EntryType::Link && link_target(state, &entry)? == path {
            return Ok(());
        }
        root::remove_all(dir.as_fd(), &name).map_err(LayerError::io("remove existing"))?;
    }
    match kind {
        EntryType::Directory => {
            if !keep_dir {
                mkdirat(&dir, &name, Mode::from_raw_mode(0o700))
                    .map_err(LayerError::io("mkdir"))?;
            }
            let fd = root::open_subdir(dir.as_fd(), &name).map_err(LayerError::io("open dir"))?;
            set_owner_mode(&fd, meta)?;
            state.dir_times.push((path.clone(), meta.mtime));
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or(LayerError::Refused("symlink without a target"))?
                .into_owned();
            check_len(state, target.len())?;
            // The target is stored verbatim: it is only ever followed inside the sandbox, or by
            // this crate's in-root resolution.
            symlinkat(OsStr::from_bytes(&target), &dir, &name)
                .map_err(LayerError::io("symlink"))?;
            let (uid, gid) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
            chownat(&dir, &name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(LayerError::io("lchown"))?;
            root::set_times_at(&dir, &name, meta.mtime).map_err(LayerError::io("set times"))?;
        }
        EntryType::Link => hard_link(state, &entry, dir.as_fd(), &name, &path)?,
        _ => write_file(state, &mut entry, dir.as_fd(), &name, meta)?,
    }
    mark_written(state, &path);
    Ok(())
}

fn write_file<R: Read>(
    state: &State,
    entry: &mut tar::Entry<'_, R>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    meta: Meta,
) -> Result<(), LayerError> {
    // O_EXCL|O_NOFOLLOW: the name was just cleared, so anything there now is refused rather
    // than followed.
    let fd = openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(LayerError::io("create file"))?;
    let mut file = File::from(fd);
    io::copy(entry, &mut file).map_err(|e| state.read_error(e))?;
    set_owner_mode(&file, meta)?;
    let ts = rustix::fs::Timespec {
        tv_sec: meta.mtime,
        tv_nsec: 0,
    };
    futimens(
        &file,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
    )
    .map_err(LayerError::io("set times"))
}

/// A hard link's target is resolved inside the destination like any path, and must already be
/// there and not be a directory. The link is made to the name itself, never through a final
/// symlink, so `/etc/shadow` or `../../x` can only ever mean a file of the image.
fn hard_link<R: Read>(
    state: &State,
    entry: &tar::Entry<'_, R>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
) -> Result<(), LayerError> {
    let target = link_target(state, entry)?;
    let shown = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned();
    let bad = |why| LayerError::BadHardLink {
        target: shown.clone(),
        why,
    };
    let (Some(tname), Some(tparent)) = (target.file_name(), target.parent()) else {
        return Err(bad("it names the root"));
    };
    if target == path {
        return Ok(());
    }
    let tdir: OwnedFd = match state.root.open_dir(tparent, false) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Err(bad("no such file in the image")),
        Err(e) => return Err(LayerError::io("resolve link target")(e)),
    };
    match root::kind_at(tdir.as_fd(), tname).map_err(LayerError::io("lstat link target"))? {
        None => return Err(bad("no such file in the image")),
        Some(FileType::Directory) => return Err(bad("it is a directory")),
        Some(_) => {}
    }
    linkat(&tdir, tname, dir, name, AtFlags::empty()).map_err(LayerError::io("link"))
}

fn link_target<R: Read>(state: &State, entry: &tar::Entry<'_, R>) -> Result<PathBuf, LayerError> {
    let raw = entry
        .link_name_bytes()
        .ok_or(LayerError::Refused("hard link without a target"))?;
    check_len(state, raw.len())?;
    Ok(clean(&raw))
}

/// `.wh.NAME` deletes NAME left by lower layers; `.wh..wh..opq` empties its directory of them.
fn whiteout(state: &mut State, parent: &Path, name: &[u8]) -> Result<(), LayerError> {
    let dir = match state.root.open_dir(parent, name == OPAQUE) {
        Ok(fd) => fd,
        // Nothing below to hide.
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(LayerError::io("resolve whiteout directory")(e)),
    };
    if name == OPAQUE {
        return clear_opaque(state, dir, parent);
    }
    let hidden = &name[WHITEOUT.len()..];
    // `.wh..wh.*` are other aufs markers (hard-link bookkeeping); `.wh.`, `.wh..`, `.wh...`
    // would name the directory itself or its parent.
    if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(WHITEOUT) {
        tracing::debug!(parent = %parent.display(), "ignoring odd whiteout");
        return Ok(());
    }
    root::remove_all(dir.as_fd(), OsStr::from_bytes(hidden)).map_err(LayerError::io("whiteout"))
}

/// Removes everything in `dir` that this layer did not itself write, recursing into directories
/// this layer wrote into so that lower content below them goes too. The recursion only follows
/// paths this layer's entries named, so its depth is bounded by `max_path_len`; what is removed
/// goes through the iterative [`root::remove_all`].
fn clear_opaque(state: &State, dir: OwnedFd, path: &Path) -> Result<(), LayerError> {
    let children = root::list(dir.as_fd()).map_err(LayerError::io("list opaque directory"))?;
    let dir_fd = dir.as_fd();
    for (child, kind) in children {
        let child_path = path.join(&child);
        if !state.written_in_layer.contains(&child_path) {
            root::remove_all(dir_fd, &child).map_err(LayerError::io("opaque whiteout"))?;
        } else if kind == FileType::Directory {
            let sub = root::open_subdir(dir_fd, &child).map_err(LayerError::io("open dir"))?;
            clear_opaque(state, sub, &child_path)?;
        }
    }
    Ok(())
}

fn mark_written(state: &mut State, path: &Path) {
    for p in path.ancestors() {
        if p.as_os_str().is_empty() || !state.written_in_layer.insert(p.to_path_buf()) {
            break;
        }
    }
}

/// Sets a directory's mtime once its layer is done. It may have been removed since.
pub(super) fn set_dir_time(root: &Root, path: &Path, mtime: i64) -> Result<(), LayerError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = match root.open_dir(parent, false) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(LayerError::io("resolve directory")(e)),
    };
    match root::set_times_at(&dir, name, mtime) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(LayerError::io("set directory times")(e)),
    }
}

/// Owner first, then mode: chown clears setuid bits, and the mode must be the last word.
/// Both go through the open fd, so no symlink is ever followed.
fn set_owner_mode(fd: impl AsFd, meta: Meta) -> Result<(), LayerError> {
    fchown(
        &fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(LayerError::io("chown"))?;
    fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(LayerError::io("chmod"))
}

fn meta(h: &tar::Header) -> Result<Meta, LayerError> {
    let id = |v: io::Result<u64>| -> Result<u32, LayerError> {
        let v = v.map_err(LayerError::io("read header"))?;
        Ok(u32::try_from(v)
            .ok()
            .filter(|&v| v <= 65535)
            .unwrap_or(OVERFLOW_ID))
    };
    let mode = h.mode().map_err(LayerError::io("read header"))?;
    let mtime = h.mtime().map_err(LayerError::io("read header"))?;
    Ok(Meta {
        uid: id(h.uid())?,
        gid: id(h.gid())?,
        mode: mode & 0o1777,
        mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
    })
}

fn check_len(state: &State, len: usize) -> Result<(), LayerError> {
    let max = state.limits.max_path_len;
    if len > max {
        return Err(LayerError::PathTooLong { len, max });
    }
    Ok(())
}

//! File operations on the sandbox's filesystem, done here so the host never resolves a path
//! that the sandbox controls. Everything in this module blocks; callers run it off the runtime.

use std::collections::BinaryHeap;
use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use warren_proto::{AgentError, ErrorKind, FileInfo, FileKind, MAX_DIR_ENTRIES, MAX_FRAME_LEN};

use crate::users;

/// Checks that a client's path is absolute and free of NUL bytes.
pub(crate) fn check_path(path: &str) -> Result<PathBuf, AgentError> {
    if path.contains('\0') {
        return Err(AgentError::new(
            ErrorKind::BadRequest,
            "path contains a NUL byte",
        ));
    }
    if !path.starts_with('/') {
        return Err(AgentError::new(
            ErrorKind::BadRequest,
            format!("path {path} is not absolute"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// The one mapping from I/O errors to protocol errors.
pub(crate) fn io_error(e: &io::Error, path: &str) -> AgentError {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::ENOTDIR) => ErrorKind::NotADirectory,
        Some(libc::EISDIR) => ErrorKind::IsADirectory,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => ErrorKind::PermissionDenied,
        Some(libc::ENOSPC | libc::EDQUOT) => ErrorKind::NoSpace,
        _ => match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        },
    };
    let message = match kind {
        ErrorKind::NotFound => format!("{path}: no such file or directory"),
        ErrorKind::NotADirectory => format!("{path}: a path component is not a directory"),
        ErrorKind::IsADirectory => format!("{path} is a directory"),
        ErrorKind::PermissionDenied => format!("{path}: permission denied"),
        ErrorKind::NoSpace => format!("{path}: no space left on device"),
        _ => format!("{path}: {e}"),
    };
    AgentError::new(kind, message)
}

fn is_a_directory(path: &str) -> AgentError {
    AgentError::new(ErrorKind::IsADirectory, format!("{path} is a directory"))
}

pub(crate) fn file_info(name: String, md: &Metadata) -> FileInfo {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileInfo {
        name,
        kind,
        size: md.size(),
        mode: md.mode() & 0o7777,
        mtime_ns: mtime_ns(md),
        uid: md.uid(),
        gid: md.gid(),
    }
}

/// Modification time in nanoseconds since the epoch.
pub(crate) fn mtime_ns(md: &Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

pub(crate) fn resolve_user(user: Option<&str>) -> Result<users::User, AgentError> {
    users::resolve(user).map_err(|e| AgentError::new(ErrorKind::BadRequest, e.to_string()))
}

/// `Stat`: metadata of the path itself (a final symlink is not followed).
pub(crate) fn stat(path: &str) -> Result<FileInfo, AgentError> {
    let p = check_path(path)?;
    let md = std::fs::symlink_metadata(&p).map_err(|e| io_error(&e, path))?;
    Ok(file_info(path.to_owned(), &md))
}

/// `ListDir`: the first [`MAX_DIR_ENTRIES`] entries by name, and whether there were more.
pub(crate) fn list_dir(path: &str) -> Result<(Vec<FileInfo>, bool), AgentError> {
    let p = check_path(path)?;
    let (names, mut truncated) = first_names(&p).map_err(|e| io_error(&e, path))?;
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        // An entry removed while listing is simply left out.
        let Ok(md) = std::fs::symlink_metadata(p.join(&name)) else {
            continue;
        };
        entries.push(file_info(name.to_string_lossy().into_owned(), &md));
    }
    // Long names can make even a bounded listing exceed a frame; cut to fit.
    let mut budget = MAX_FRAME_LEN - 64;
    let mut keep = 0;
    for e in &entries {
        let cost = e.name.len() + 64;
        if cost > budget {
            break;
        }
        budget -= cost;
        keep += 1;
    }
    if keep < entries.len() {
        entries.truncate(keep);
        truncated = true;
    }
    Ok((entries, truncated))
}

/// The first [`MAX_DIR_ENTRIES`] names in a directory in byte order, and whether it held more.
/// Only that many names are held at once, however large the directory.
pub(crate) fn first_names(dir: &Path) -> io::Result<(Vec<OsString>, bool)> {
    let mut smallest: BinaryHeap<Vec<u8>> = BinaryHeap::new();
    let mut truncated = false;
    for entry in std::fs::read_dir(dir)? {
        smallest.push(entry?.file_name().into_vec());
        if smallest.len() > MAX_DIR_ENTRIES {
            smallest.pop();
            truncated = true;
        }
    }
    let names = smallest
        .into_sorted_vec()
        .into_iter()
        .map(OsString::from_vec)
        .collect();
    Ok((names, truncated))
}

/// Whether this user namespace denies setgroups(2) (every sandbox's does).
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Runs `f` with the filesystem permissions of `user`, so the kernel decides what the user may
/// read. For root it runs here; otherwise on a short-lived thread, because filesystem
/// credentials are per thread on Linux: that thread takes the user's and ends with `f`, and the
/// rest of the agent (including pooled blocking threads) keeps its own.
pub(crate) fn as_user<T: Send>(
    user: &users::User,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    if user.uid == 0 {
        return f();
    }
    let (uid, gid, groups) = (user.uid, user.gid, &user.groups);
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // A sandbox's user namespace denies setgroups(2): the thread keeps the agent's
                // (empty) groups, which grants nothing the user's own would not.
                if !setgroups_denied() {
                    let groups: Vec<rustix::process::Gid> = groups
                        .iter()
                        .map(|g| rustix::process::Gid::from_raw(*g))
                        .collect();
                    rustix::thread::set_thread_groups(&groups)?;
                }
                nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
                nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io::Error::other(
                    "thread with the user's permissions failed",
                ))
            })
    })
}

/// Opens a file for `ReadFile`, with the permissions of `user` when that is not root.
pub(crate) fn open_for_read(
    path: &str,
    user: Option<&str>,
) -> Result<(File, FileInfo), AgentError> {
    let p = check_path(path)?;
    let user = resolve_user(user)?;
    let file = as_user(&user, || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&p)
    })
    .map_err(|e| io_error(&e, path))?;
    let md = file.metadata().map_err(|e| io_error(&e, path))?;
    if md.is_dir() {
        return Err(is_a_directory(path));
    }
    if !md.is_file() {
        return Err(AgentError::new(
            ErrorKind::BadRequest,
            format!("{path} is not a regular file"),
        ));
    }
    Ok((file, file_info(path.to_owned(), &md)))
}

/// Positions a file for a range read.
pub(crate) fn seek(file: &mut File, offset: u64, path: &str) -> Result<(), AgentError> {
    file.seek(SeekFrom::Start(offset))
        .map(|_| ())
        .map_err(|e| io_error(&e, path))
}

/// Reads the next chunk of at most `max` bytes; empty at end of file.
pub(crate) fn read_chunk(file: &mut File, max: usize, path: &str) -> Result<Vec<u8>, AgentError> {
    let mut buf = vec![0u8; max];
    loop {
        match file.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(&e, path)),
        }
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A file being written: bytes go to a temp file beside the target, which replaces the target
/// only on [`FileWriter::commit`]. Dropped uncommitted (the client went away, an error), the
/// temp file is removed and the target is untouched.
#[derive(Debug)]
pub(crate) struct FileWriter {
    path: String,
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    uid: u32,
    gid: u32,
    mode: u32,
    /// The first write error; the rest of the data is discarded and this is the answer.
    error: Option<AgentError>,
}

impl FileWriter {
    pub(crate) fn begin(
        path: &str,
        mode: Option<u32>,
        user: Option<&str>,
    ) -> Result<Self, AgentError> {
        let target = check_path(path)?;
        let user = resolve_user(user)?;
        let parent = match target.parent() {
            Some(p) if target.file_name().is_some() => p.to_path_buf(),
            _ => return Err(is_a_directory(path)),
        };
        mkdir_p(&parent, user.uid, user.gid).map_err(|e| io_error(&e, path))?;
        match std::fs::metadata(&target) {
            Ok(md) if md.is_dir() => return Err(is_a_directory(path)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&e, path)),
        }
        let (tmp, file) = loop {
            let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
            let tmp = parent.join(format!(".warren-tmp.{}.{seq}", std::process::id()));
            // Readable too: a write that must go in place reads it back through this handle,
            // never by its name, which the tenant could swap meanwhile.
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&e, path)),
            }
        };
        Ok(Self {
            path: path.to_owned(),
            target,
            tmp,
            file: Some(file),
            uid: user.uid,
            gid: user.gid,
            mode: mode.unwrap_or(0o644) & 0o7777,
            error: None,
        })
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(data)
        {
            self.error = Some(io_error(&e, &self.path));
        }
    }

    pub(crate) fn commit(mut self) -> Result<(), AgentError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let Some(file) = self.file.take() else {
            return Err(AgentError::new(ErrorKind::Io, "file already committed"));
        };
        let path = self.path.clone();
        let owner = (self.uid, self.gid, self.mode);
        set_owner(&file, owner).map_err(|e| io_error(&e, &path))?;
        match std::fs::rename(&self.tmp, &self.target) {
            Ok(()) => {
                // Renamed: nothing left for Drop to clean up.
                self.tmp = PathBuf::new();
                Ok(())
            }
            // The target is a mount point (the runtime binds a sandbox's own /etc/hosts and
            // /etc/hostname over the image's, as Docker does): it cannot be replaced, only
            // rewritten. Drop removes the temp file.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                rewrite_in_place(&file, &self.target, owner).map_err(|e| io_error(&e, &path))
            }
            Err(e) => Err(io_error(&e, &path)),
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The largest file a write replaces in place (a mount point's: `/etc/hosts`, `/etc/hostname`).
const IN_PLACE_MAX: u64 = 1 << 20;

/// Gives `file` its owner, then its mode: chown clears set-id bits that chmod then puts back.
/// Writing clears them again (for any writer but the host's root), so this comes after the
/// content.
fn set_owner(file: &File, (uid, gid, mode): (u32, u32, u32)) -> io::Result<()> {
    fchown(file, Some(uid), Some(gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

fn too_large() -> io::Error {
    io::Error::other("the file is a mount point, which a write larger than 1 MiB cannot replace")
}

/// The whole of `file`, refusing more than [`IN_PLACE_MAX`] bytes.
fn read_small(file: &File) -> io::Result<Vec<u8>> {
    crate::etc::read_capped(file, IN_PLACE_MAX)?.ok_or_else(too_large)
}

/// Copies `from` (the write's temp file, read through its handle) over the regular file
/// `target` in place, with the owner and mode `(uid, gid, mode)` a replacing write gives: how
/// a write reaches a file that is a mount point. Only a regular file of at most
/// [`IN_PLACE_MAX`] is opened (never a device or FIFO bound there, never through a link);
/// should the write fail (a full disk), what was there (content, owner and mode) is put back
/// rather than left cut short.
fn rewrite_in_place(from: &File, target: &Path, owner: (u32, u32, u32)) -> io::Result<()> {
    let busy = || io::Error::from_raw_os_error(libc::EBUSY);
    if !std::fs::symlink_metadata(target)?.is_file() {
        return Err(busy());
    }
    let new = read_small(from)?;
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(target)?;
    let meta = out.metadata()?;
    if !meta.is_file() {
        return Err(busy());
    }
    let old = read_small(&out)?;
    // Content first, then owner and mode, as a replacing write (see `set_owner`).
    crate::etc::overwrite(&out, &new, &old)?;
    set_owner(&out, owner).inspect_err(|_| {
        let _ = crate::etc::overwrite(&out, &old, &old);
        let _ = set_owner(&out, (meta.uid(), meta.gid(), meta.mode() & 0o7777));
    })
}

/// Creates `dir` and its missing parents, owned by the user.
fn mkdir_p(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let mut missing = Vec::new();
    for a in dir.ancestors() {
        match std::fs::metadata(a) {
            Ok(md) if md.is_dir() => break,
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(a),
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => std::os::unix::fs::chown(d, Some(uid), Some(gid))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp file as a write leaves it: written through its handle, whose offset is at the end.
    fn written(path: &Path, data: &[u8]) -> File {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[test]
    fn an_in_place_rewrite_keeps_the_inode_and_touches_nothing_but_a_small_regular_file() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it gives the file to another user"
        );
        let dir = tempfile::tempdir().unwrap();
        let wrote = (1234, 1234, 0o2750);
        let target = dir.path().join("target");
        std::fs::write(&target, "a much longer old text\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let ino = std::fs::metadata(&target).unwrap().ino();
        let from = written(&dir.path().join("from"), b"new\n");
        rewrite_in_place(&from, &target, wrote).unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        // The same inode (a mount point stays one), with the owner and mode (set-id bits
        // included) the write asked for.
        assert_eq!(
            (meta.ino(), meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (ino, 1234, 1234, 0o2750)
        );

        // A link, a FIFO (which must not block the agent) and a device are never written.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for refused in [&link, &fifo, Path::new("/dev/null")] {
            let e = rewrite_in_place(&from, refused, wrote).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{}", refused.display());
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");

        // Too big to hold in memory twice, new or old: refused, the target untouched.
        let big = vec![b'x'; usize::try_from(IN_PLACE_MAX).unwrap() + 1];
        let huge = written(&dir.path().join("huge"), &big);
        assert!(rewrite_in_place(&huge, &target, wrote).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        let grown = dir.path().join("grown");
        std::fs::write(&grown, &big).unwrap();
        assert!(rewrite_in_place(&from, &grown, wrote).is_err());
        assert_eq!(std::fs::read(&grown).unwrap(), big);
    }
}

//! A sandbox's own names: its `/etc/hosts` and `/etc/hostname`, written at each boot into its
//! `rw` subvolume and bound writable over the image's (see [`write_names`]).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use warren_jail::JailFile;

use super::error::{StorageError, io_err};

/// The sandbox's `/etc/hosts` and `/etc/hostname` for this boot, in its `rw` subvolume: bound
/// writable (tenants add hosts lines; Docker binds the same two), counted in its disk quota,
/// never captured. The hosts file keeps what the tenant wrote there ([`warren_proto::hosts_file`]);
/// at its first boot, what its rootfs's `/etc/hosts` holds (a snapshot's, or the tenant's from
/// before the file was bound). Each is written as [`put_file`] says. When one cannot be
/// written (a full quota), the last boot's copy is bound as it is, or, with none, the image's
/// stays visible: a sandbox whose disk is full must still boot.
pub(super) fn write_names(
    rootfs: &Path,
    rw: &Path,
    hostname: &str,
    address: std::net::IpAddr,
) -> Vec<JailFile> {
    let hosts = rw.join("hosts");
    let name = rw.join("hostname");
    // At a first boot the hosts file starts from the rootfs's.
    let hosts_now = Now::of(&hosts);
    let seed = match &hosts_now {
        Now::Read(text) => text.clone(),
        _ => open_in_root(rootfs, "etc/hosts").and_then(read_capped),
    };
    let wanted = [
        (
            hosts,
            "/etc/hosts",
            warren_proto::hosts_file(seed.as_deref(), hostname, address),
            hosts_now,
            // Its lines are the tenant's, kept from boot to boot: never left half-written.
            true,
        ),
        (
            name.clone(),
            "/etc/hostname",
            format!("{hostname}\n"),
            Now::of(&name),
            // Compared and written again at every boot.
            false,
        ),
    ];
    let mut files = Vec::new();
    for (host_path, path, text, now, whole) in wanted {
        if let Err(e) = put_file(&host_path, text.as_bytes(), now, whole) {
            tracing::warn!(error = %e, file = %host_path.display(), "failed to write a sandbox's names file; the last one stays");
            if !std::fs::symlink_metadata(&host_path).is_ok_and(|m| m.is_file()) {
                continue;
            }
        }
        files.push(JailFile {
            host_path,
            path: path.into(),
            only_over_empty: false,
            read_only: false,
        });
    }
    files
}

/// What a names file holds before a boot writes it.
enum Now {
    /// There is none yet (a first boot).
    Absent,
    /// Its text; `None` when it is no regular file of at most [`NAMES_MAX_BYTES`] (then it is
    /// written afresh).
    Read(Option<String>),
    /// It could not be opened for another reason (a link, out of descriptors, an I/O error):
    /// it is left as it is.
    Unknown(std::io::Error),
}

impl Now {
    fn of(path: &Path) -> Self {
        match open_nofollow(path) {
            Ok(file) => Self::Read(read_capped(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::Absent,
            Err(e) => Self::Unknown(e),
        }
    }
}

/// Makes the file at `path`, which holds `now`, hold `text`. Each boot costs a create's time,
/// so the cheapest safe way is taken: no write when it already does; a new file at a first boot
/// (unless `whole`) created in place, and removed should the write fail; otherwise a copy
/// written beside it and renamed over it, so a write the quota refuses, or a crash, leaves the
/// last one whole.
fn put_file(path: &Path, text: &[u8], now: Now, whole: bool) -> Result<(), StorageError> {
    let in_place = match now {
        Now::Unknown(e) => return Err(io_err("open", path)(e)),
        Now::Read(Some(now)) if now.as_bytes() == text => return Ok(()),
        Now::Absent => !whole,
        Now::Read(_) => false,
    };
    let new = if in_place {
        path.to_owned()
    } else {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".new");
        path.with_file_name(name)
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(in_place)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&new)
        .map_err(io_err("write", &new))?;
    let written = file
        .write_all(text)
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o644)));
    drop(file);
    let placed = written
        .map_err(io_err("write", &new))
        .and_then(|()| match in_place {
            true => Ok(()),
            false => std::fs::rename(&new, path).map_err(io_err("replace", path)),
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&new);
    }
    placed
}

/// Opens a file to read without following a link at its end or blocking on a FIFO.
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Opens `name` in the tenant's tree at `root` to read, following no symlink at any component
/// (its `/etc` may be one, pointing anywhere on the host) and crossing no mount.
fn open_in_root(root: &Path, name: &str) -> Option<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )
    .ok()?;
    Some(std::fs::File::from(fd))
}

/// A regular file's text, of at most [`NAMES_MAX_BYTES`] (bytes that are not UTF-8 read as
/// U+FFFD); `None` for anything else (then it is written afresh).
fn read_capped(file: std::fs::File) -> Option<String> {
    use std::io::Read;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > NAMES_MAX_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(NAMES_MAX_BYTES).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The most of a tenant's hosts file a boot keeps: past it the file starts afresh.
const NAMES_MAX_BYTES: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_start_from_the_rootfs_without_following_it_and_a_failed_write_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let (rootfs, rw) = (base.join("rootfs"), base.join("rw"));
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::write(rootfs.join("etc/hosts"), b"10.0.0.1 from-image \xff\n").unwrap();
        let addr: std::net::IpAddr = "127.0.1.1".parse().unwrap();
        let bound = |files: &[JailFile]| files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();

        // First boot: the rootfs's lines (bytes that are not UTF-8 read as U+FFFD), then its own.
        let files = write_names(&rootfs, &rw, "sb-1", addr);
        assert_eq!(bound(&files), ["/etc/hosts", "/etc/hostname"]);
        assert!(files.iter().all(|f| !f.read_only));
        let first = std::fs::read_to_string(rw.join("hosts")).unwrap();
        assert!(
            first.starts_with("10.0.0.1 from-image \u{fffd}\n127.0.1.1\tsb-1\t"),
            "{first}"
        );
        assert_eq!(
            std::fs::read_to_string(rw.join("hostname")).unwrap(),
            "sb-1\n"
        );

        // A write that fails (here a directory where its temp file goes; a full quota in life)
        // keeps the last boot's file, bound as it is.
        std::fs::create_dir(rw.join("hosts.new")).unwrap();
        let files = write_names(&rootfs, &rw, "sb-2", addr);
        assert_eq!(bound(&files), ["/etc/hosts", "/etc/hostname"]);
        assert_eq!(std::fs::read_to_string(rw.join("hosts")).unwrap(), first);
        assert_eq!(
            std::fs::read_to_string(rw.join("hostname")).unwrap(),
            "sb-2\n"
        );
        std::fs::remove_dir(rw.join("hosts.new")).unwrap();
        // Unchanged since the last boot: nothing written.
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&rw.join("hostname"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_names(&rootfs, &rw, "sb-2", addr);
        assert_eq!(before, mtime(&rw.join("hostname")));
        // With no file to keep (here a link in its place, which is never followed), nothing is
        // bound: the image's own shows.
        std::fs::remove_file(rw.join("hosts")).unwrap();
        let elsewhere = base.join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, rw.join("hosts")).unwrap();
        assert_eq!(
            bound(&write_names(&rootfs, &rw, "sb-2", addr)),
            ["/etc/hostname"]
        );
        assert!(!elsewhere.exists());
        std::fs::remove_file(rw.join("hosts")).unwrap();

        // A first boot's hosts file is written whole or not at all: its copy failing leaves no
        // file (nothing bound), and nothing half-written that a later boot would keep.
        std::fs::create_dir(rw.join("hosts.new")).unwrap();
        assert_eq!(
            bound(&write_names(&rootfs, &rw, "sb-2", addr)),
            ["/etc/hostname"]
        );
        assert!(!rw.join("hosts").exists());
        std::fs::remove_dir(rw.join("hosts.new")).unwrap();
        // A file past the size a boot keeps starts afresh.
        std::fs::write(
            rw.join("hosts"),
            vec![b'#'; usize::try_from(NAMES_MAX_BYTES + 1).unwrap()],
        )
        .unwrap();
        write_names(&rootfs, &rw, "sb-2", addr);
        assert_eq!(
            std::fs::read_to_string(rw.join("hosts")).unwrap(),
            warren_proto::hosts_file(None, "sb-2", addr)
        );

        // A rootfs whose /etc is a link to a host directory: nothing is read through it.
        let host = base.join("host-etc");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("hosts"), "10.6.6.6 host-secret\n").unwrap();
        let linked = base.join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(&host, linked.join("etc")).unwrap();
        write_names(&linked, &rw, "sb-3", addr);
        let text = std::fs::read_to_string(rw.join("hosts")).unwrap();
        assert!(!text.contains("host-secret"), "{text}");
        assert_eq!(text, warren_proto::hosts_file(None, "sb-3", addr));
    }
}

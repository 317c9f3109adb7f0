//! Volumes (step 9, after `/dev`): each idmapped volume tree the jailer sent is attached at its
//! mount path in the new root.
//!
//! The rootfs is the tenant's: any component of a mount path may be a symlink it planted
//! (`/data -> /proc/self/root/...`, `-> ../../..`, `-> /etc`) or a file. Each component is
//! opened relative to the one before with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), created with mkdirat on that fd when missing, and
//! the volume is attached with move_mount onto the last fd: no path string is resolved twice,
//! nothing is followed, and nothing outside the rootfs mount (not `/proc`, `/dev`, nor another
//! volume) can be reached. A symlink or a non-directory on the way fails the boot.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::mounts::{attach, mount_target};
use crate::error::Context;
use crate::sync::ChildEnd;
use crate::{JailError, JailFile, JailSpec, JailVolume, mount_path_components};

/// The action of the error a tenant's rootfs causes by what it put on a mount path: the line
/// reads `failed to prepare a volume mount point: /data is a symlink` and names no host path,
/// so the runtime may pass it on to the tenant.
pub const VOLUME_MOUNT_POINT: &str = "prepare a volume mount point";

/// Resolution of one mount path component: inside the directory fd's tree, no symlink of any
/// kind, no crossing into another mount.
fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Receives one detached volume mount per volume from the jailer, in the spec's order.
pub(crate) fn receive_volumes(
    sync: &ChildEnd,
    volumes: &[JailVolume],
) -> Result<Vec<OwnedFd>, JailError> {
    volumes.iter().map(|_| sync.receive_volume()).collect()
}

/// Attaches each volume tree at its mount path beneath `root` (the attached rootfs).
pub(crate) fn mount_volumes(
    root: &OwnedFd,
    volumes: &[JailVolume],
    trees: &[OwnedFd],
) -> Result<(), JailError> {
    for (volume, tree) in volumes.iter().zip(trees) {
        let target = mount_point(root.as_fd(), &volume.mount_path)?;
        attach(tree, target.as_fd()).path("mount the volume at", Path::new(&volume.mount_path))?;
    }
    Ok(())
}

/// The mounts of the sandbox's own the parent sent after the volumes: its `/tmp`, then one
/// per file of the spec.
pub(crate) struct Own {
    tmp: Option<OwnedFd>,
    files: Vec<OwnedFd>,
}

pub(crate) fn receive_own(sync: &ChildEnd, spec: &JailSpec) -> Result<Own, JailError> {
    let tmp = spec
        .tmp
        .as_ref()
        .map(|_| sync.receive_volume())
        .transpose()?;
    let files = spec
        .files
        .iter()
        .map(|_| sync.receive_volume())
        .collect::<Result<_, _>>()?;
    Ok(Own { tmp, files })
}

/// Attaches the sandbox's `/tmp` over the rootfs's (a symlink or a file there fails the boot,
/// as on `/proc`), then each file over the rootfs's regular file of the same path, where there
/// is one.
pub(crate) fn mount_own(root: &OwnedFd, spec: &JailSpec, own: Own) -> Result<(), JailError> {
    if let Some(tmp) = &own.tmp {
        let target = mount_target(root.as_fd(), "tmp", "/tmp")?;
        attach(tmp, target.as_fd()).path("mount the sandbox's /tmp at", Path::new("/tmp"))?;
    }
    for (file, mount) in spec.files.iter().zip(&own.files) {
        let kind =
            rustix::fs::fstat(mount).path("inspect the file bound over", Path::new(&file.path))?;
        if let Some(target) =
            file_target(root.as_fd(), file, FileType::from_raw_mode(kind.st_mode))?
        {
            attach(mount, target.as_fd()).path("bind a file over", Path::new(&file.path))?;
        }
    }
    Ok(())
}

/// The rootfs's file of type `kind` at `file.path`, opened without following anything, or
/// `None` when there is none to cover: a component missing, a symlink or not a directory, the
/// file a symlink or of another type, or not empty where only an empty one may be covered.
/// Then the image keeps its own (and the agent writes what it must there).
fn file_target(
    root: BorrowedFd<'_>,
    file: &JailFile,
    kind: FileType,
) -> Result<Option<OwnedFd>, JailError> {
    let parts = mount_path_components(&file.path).map_err(|problem| JailError::Check {
        action: "check the path of a bound file",
        found: format!("{:?} {problem}", file.path),
    })?;
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    let open = |dir: BorrowedFd<'_>, name: &str, flags: OFlags| {
        rustix::fs::openat2(
            dir,
            name,
            flags | OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        )
    };
    let mut dir: Option<OwnedFd> = None;
    for name in dirs {
        let parent = dir.as_ref().map_or(root, AsFd::as_fd);
        match open(parent, name, OFlags::DIRECTORY) {
            Ok(fd) => dir = Some(fd),
            Err(_) => return Ok(None),
        }
    }
    let parent = dir.as_ref().map_or(root, AsFd::as_fd);
    let Ok(target) = open(parent, last, OFlags::empty()) else {
        return Ok(None);
    };
    let st = rustix::fs::fstat(&target).path("inspect the file under", Path::new(&file.path))?;
    let same = FileType::from_raw_mode(st.st_mode) == kind;
    Ok((same && (!file.only_over_empty || st.st_size == 0)).then_some(target))
}

/// Opens (creating what is missing) the directory `mount_path` names beneath `root`, one
/// component at a time, refusing symlinks and non-directories.
pub(crate) fn mount_point(root: BorrowedFd<'_>, mount_path: &str) -> Result<OwnedFd, JailError> {
    let parts = mount_path_components(mount_path).map_err(|problem| JailError::Check {
        action: "check the volume mount path",
        found: format!("{mount_path:?} {problem}"),
    })?;
    let mut shown = String::new();
    let mut dir: Option<OwnedFd> = None;
    for name in parts {
        shown.push('/');
        shown.push_str(name);
        let parent = dir.as_ref().map_or(root, AsFd::as_fd);
        dir = Some(open_or_create(parent, name, &shown)?);
    }
    // mount_path_components never returns an empty list.
    dir.ok_or_else(|| JailError::Check {
        action: "check the volume mount path",
        found: "it is the sandbox's root".into(),
    })
}

fn open_or_create(dir: BorrowedFd<'_>, name: &str, shown: &str) -> Result<OwnedFd, JailError> {
    let open = || {
        rustix::fs::openat2(
            dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        )
    };
    let err = match open() {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
            // EEXIST: something appeared since (the sandbox is not running; a symlink that
            // dangles reads as missing to openat2 but exists for mkdirat).
            Ok(()) | Err(Errno::EXIST) => match open() {
                Ok(fd) => return Ok(fd),
                Err(e) => e,
            },
            Err(e) => return Err(e).path("create the volume mount point", Path::new(shown)),
        },
        Err(e) => e,
    };
    // Say what is in the way, for the tenant who put it there.
    let found = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => "a symlink",
        Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => "not a directory",
        _ if err == Errno::XDEV => "another mount",
        _ => return Err(err).path("open the volume mount point", Path::new(shown)),
    };
    Err(JailError::Check {
        action: VOLUME_MOUNT_POINT,
        found: format!("{shown} is {found}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("warren-vol-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn open_dir(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn missing_directories_are_made_beneath_the_root() {
        let root = tmpdir("make");
        let fd = mount_point(open_dir(&root).as_fd(), "/a/b/c").unwrap();
        assert!(root.join("a/b/c").is_dir());
        let st = rustix::fs::fstat(&fd).unwrap();
        let want = std::fs::metadata(root.join("a/b/c")).unwrap();
        assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&want));
        mount_point(open_dir(&root).as_fd(), "/a/b/c").unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn symlinks_and_files_on_the_path_fail_and_nothing_outside_is_made() {
        let root = tmpdir("links");
        let outside = tmpdir("outside");
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/proc/self/cwd", root.join("magic")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/inner")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        for (path, found) in [
            ("/abs", "/abs is a symlink"),
            ("/abs/x", "/abs is a symlink"),
            ("/up/x", "/up is a symlink"),
            ("/magic", "/magic is a symlink"),
            ("/dangling", "/dangling is a symlink"),
            ("/d/inner/x", "/d/inner is a symlink"),
            ("/file", "/file is not a directory"),
            ("/file/x", "/file is not a directory"),
        ] {
            let err = mount_point(open_dir(&root).as_fd(), path).unwrap_err();
            assert!(err.to_string().ends_with(found), "{path}: {err}");
        }
        assert!(mount_point(open_dir(&root).as_fd(), "/d/../etc").is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}

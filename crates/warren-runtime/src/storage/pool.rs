//! The pool: the loop-backed btrfs image (or the host's btrfs), its mount, and the modes that keep
//! the data dir private.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fs_err as fs;
use warren_btrfs::{self as btrfs, QuotaMode};

use super::error::{StorageError, io_err};
use crate::io_error::IoError;
use crate::tool;

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

pub(super) fn is_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 & 0xffff_ffff == BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// File name of the loop-backed pool image in the data dir.
pub const POOL_IMAGE: &str = "warren.btrfs";
/// Where a new pool image is made before it is renamed to [`POOL_IMAGE`], formatted.
const POOL_IMAGE_TMP: &str = "warren.btrfs.tmp";
/// Offset and value of the btrfs superblock magic in a formatted image (the primary superblock
/// sits at 64 KiB; the magic is at 0x40 in it). mkfs.btrfs writes it last.
const BTRFS_MAGIC_OFFSET: u64 = 0x1_0040;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";

/// Mode of the data dir and of every directory Warren makes private to root.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of the database, the pool image, keys, locks and logs.
pub const PRIVATE_FILE: u32 = 0o600;

/// The mode of what `path` names (a data dir may be a symlink to where the space is).
fn mode_of(path: &Path) -> Result<u32, StorageError> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(io_err("read the mode of", path))
}

/// Creates `dir` if needed and makes it private to root (0700). A data dir made by an older
/// version (0755) is fixed here, with a log line: every sandbox's files and the database are
/// beneath it, and nothing under it is for other host users.
pub fn make_private_dir(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(io_err("create the data dir", dir))?;
    let mode = mode_of(dir)?;
    if mode != PRIVATE_DIR {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))
            .map_err(io_err("make private", dir))?;
        tracing::info!(dir = %dir.display(), was = format!("{mode:o}"), "made the data dir private to root (0700)");
    }
    Ok(())
}

/// Makes an existing file private to root (0600) if it is not already.
pub fn make_private_file(path: &Path) -> Result<(), StorageError> {
    let mode = mode_of(path)?;
    if mode != PRIVATE_FILE {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(io_err("make private", path))?;
        tracing::info!(file = %path.display(), was = format!("{mode:o}"), "made a data dir file private to root (0600)");
    }
    Ok(())
}

/// Whether `image` holds a formatted btrfs filesystem (its superblock magic is in place).
pub fn is_formatted_pool(image: &Path) -> Result<bool, StorageError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(image).map_err(io_err("open the pool image", image))?;
    let mut magic = [0u8; 8];
    match file.read_exact_at(&mut magic, BTRFS_MAGIC_OFFSET) {
        Ok(()) => Ok(&magic == BTRFS_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err("read the superblock of", image)(e)),
    }
}

/// Makes sure `image` is a formatted pool of `pool_bytes`, private to root. A new one is made
/// under a temporary name, formatted, then renamed: a first start killed at any point leaves
/// either no image or a whole one. An image that is not a formatted btrfs filesystem (left by
/// an older version that was killed between creating and formatting it) holds nothing, and is
/// made again.
pub(super) fn ensure_pool_image(image: &Path, pool_bytes: u64) -> Result<(), StorageError> {
    let tmp = image.with_file_name(POOL_IMAGE_TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(image = %tmp.display(), "removed an unfinished pool image"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove the unfinished pool image", &tmp)(e)),
    }
    if image.exists() {
        if is_formatted_pool(image)? {
            return make_private_file(image);
        }
        tracing::warn!(image = %image.display(), "the pool image is not a formatted btrfs filesystem (an earlier first start was interrupted before it was formatted); it holds nothing, making it again");
        std::fs::remove_file(image).map_err(io_err("remove the unformatted pool image", image))?;
    }
    tracing::info!(image = %image.display(), bytes = pool_bytes, "creating the storage pool (sparse)");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(&tmp)
        .map_err(io_err("create the pool image", &tmp))?;
    f.set_len(pool_bytes)
        .map_err(io_err("size the pool image", &tmp))?;
    tool::run("mkfs.btrfs", [std::ffi::OsStr::new("-q"), tmp.as_os_str()])?;
    // What mkfs wrote is on disk before the name says it is a pool.
    f.sync_all().map_err(io_err("sync the pool image", &tmp))?;
    drop(f);
    if !is_formatted_pool(&tmp)? {
        return Err(StorageError::Io(IoError {
            action: "format the pool image",
            path: tmp,
            source: std::io::Error::other("mkfs.btrfs left no btrfs superblock"),
        }));
    }
    fs::rename(&tmp, image).map_err(io_err("publish the pool image", image))?;
    if let Some(dir) = image.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync the data dir", dir))?;
    }
    Ok(())
}

/// The loop device backing the pool image `image`, if one does (`/dev/loopN`).
pub fn loop_device_of(image: &Path) -> Option<PathBuf> {
    let image = std::fs::canonicalize(image).ok()?;
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            (name.starts_with("loop") && Path::new(backing.trim()) == image)
                .then(|| Path::new("/dev").join(name))
        })
}

/// Whether the loop device `dev` (`/dev/loopN`) does direct I/O to its backing file.
pub fn loop_direct_io(dev: &Path) -> Option<bool> {
    let name = dev.file_name()?;
    let dio = std::fs::read_to_string(Path::new("/sys/block").join(name).join("loop/dio")).ok()?;
    Some(dio.trim() == "1")
}

/// Keeps the pool's loop device on buffered I/O, switching off the direct I/O an earlier
/// version chose. A new sandbox's files are new inodes to btrfs, so its first command reads
/// its shell and libraries through the loop device: buffered, those reads are served from the
/// backing file's pages in the host's cache; direct, each goes to the disk. Measured here
/// (cold create, then `run("true")`, 60 cycles each way): the first command 8.7–9.3 ms
/// buffered against 12.6–14.2 ms direct, and create → first command 31–34 ms against
/// 36–40 ms, with the create itself no slower. The second copy of the pool's pages that
/// buffered I/O keeps is reclaimable cache, which the host gives up under memory pressure.
pub(super) fn use_buffered_io(image: &Path) {
    let Some(dev) = loop_device_of(image) else {
        return;
    };
    if loop_direct_io(&dev) != Some(true) {
        return;
    }
    if let Err(e) = crate::tool::run(
        "losetup",
        [std::ffi::OsStr::new("--direct-io=off"), dev.as_os_str()],
    ) {
        tracing::warn!(device = %dev.display(), error = %e, "the pool's loop device keeps direct I/O");
    }
}

/// Mount flags of the pool's mount at `root`: (nosuid, nodev).
pub fn pool_mount_flags(root: &Path) -> Result<(bool, bool), StorageError> {
    use nix::sys::statvfs::FsFlags;
    let st = nix::sys::statvfs::statvfs(root)
        .map_err(|e| io_err("read the mount flags of", root)(e.into()))?;
    Ok((
        st.flags().contains(FsFlags::ST_NOSUID),
        st.flags().contains(FsFlags::ST_NODEV),
    ))
}

fn mount_id(path: &Path) -> Result<u64, StorageError> {
    rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::MNT_ID,
    )
    .map(|s| s.stx_mnt_id)
    .map_err(|e| io_err("read the mount id of", path)(e.into()))
}

/// Makes the pool's mount nosuid,nodev: a sandbox's root writes files as uid 0 on disk, and a
/// setuid-root file or a device node it made must mean nothing on the host. The loop pool is
/// mounted with both; a pool mounted by an older version without them is remounted. A data dir
/// on a host btrfs filesystem gets its `fs` bind-mounted onto itself, so the flags are set on
/// Warren's own mount and the host filesystem's mount is left as it is.
pub(super) fn secure_pool_mount(root: &Path) -> Result<(), StorageError> {
    use nix::mount::MsFlags;
    use nix::sys::statvfs::FsFlags;
    let parent = root.join("..");
    if mount_id(root)? == mount_id(&parent)? {
        nix::mount::mount(
            Some(root),
            root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io_err("bind-mount onto itself", root)(e.into()))?;
        tracing::info!(pool = %root.display(), "bind-mounted the pool onto itself, to mount it nosuid,nodev");
    }
    if pool_mount_flags(root)? == (true, true) {
        return Ok(());
    }
    // A bind remount sets exactly the per-mount flags given (the atime flags are kept when none
    // is given): keep read-only and noexec as they are.
    let st = nix::sys::statvfs::statvfs(root)
        .map_err(|e| io_err("read the mount flags of", root)(e.into()))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        flags |= MsFlags::MS_RDONLY;
    }
    if st.flags().contains(FsFlags::ST_NOEXEC) {
        flags |= MsFlags::MS_NOEXEC;
    }
    nix::mount::mount(None::<&str>, root, None::<&str>, flags, None::<&str>)
        .map_err(|e| io_err("remount nosuid,nodev", root)(e.into()))?;
    if pool_mount_flags(root)? != (true, true) {
        return Err(StorageError::Io(IoError {
            action: "remount nosuid,nodev",
            path: root.to_owned(),
            source: std::io::Error::other("the flags did not take"),
        }));
    }
    tracing::info!(pool = %root.display(), "remounted the pool nosuid,nodev (it was mounted without them by an older version)");
    Ok(())
}

/// The quota mode of the pool of `data_dir` if it is mounted; mounts and changes nothing.
pub fn pool_quota_mode(data_dir: &Path) -> Option<QuotaMode> {
    let root = data_dir.join("fs");
    if !is_btrfs(&root) {
        return None;
    }
    btrfs::quota_mode(&root).ok()
}

/// Deleting a sandbox drops a snapshot that shares most of its tree with its image. Above
/// `drop_subtree_threshold` levels btrfs skips the qgroup accounting of such a drop and marks all
/// quota data inconsistent, which stops limits from being enforced until a rescan; the kernel
/// default (3) is below the height of an image's tree, so account every level (8, the maximum).
/// The knob is per mount and not persistent, hence set on every open.
pub(super) fn set_drop_subtree_threshold(root: &Path) {
    let knob = match btrfs::sysfs_dir(root) {
        Ok(dir) => dir.join("qgroups/drop_subtree_threshold"),
        Err(e) => {
            tracing::warn!(error = %e, "failed to find the pool in /sys/fs/btrfs");
            return;
        }
    };
    if let Err(e) = std::fs::write(&knob, "8") {
        tracing::warn!(error = %e, knob = %knob.display(), "failed to raise the qgroup drop threshold; deletes may mark quotas inconsistent");
    }
}

/// Deletes subvolumes, each with every subvolume nested beneath it (found by a search of the
/// pool's subvolume references from its top level `root`, not by walking directories). Paths
/// that no longer exist are skipped.
pub(super) fn delete_subvolumes(root: &Path, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        match btrfs::delete_subvolume_tree(root, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete the subvolume", path)(e)),
        }
    }
    Ok(())
}

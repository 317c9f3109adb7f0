//! Sandbox root filesystems: writable snapshots of an image, and their /tmp (see [`TmpLayout`]).

use std::path::{Path, PathBuf};

use fs_err as fs;
use warren_btrfs::{self as btrfs, QuotaMode};
use warren_types::{ImageRef, SandboxId};

use super::error::{StorageError, io_err};
use super::own::{set_mode, write_own_files};
use super::pool::delete_subvolumes;
use super::store::{BtrfsStorage, Storage, TmpLayout};

impl Storage for BtrfsStorage {
    fn has_image(&self, image: &ImageRef) -> bool {
        self.image_path(image).is_dir()
    }

    fn create_rootfs(
        &self,
        id: &SandboxId,
        image: &ImageRef,
        disk_bytes: u64,
        tmp: TmpLayout,
    ) -> Result<PathBuf, StorageError> {
        let src = self.image_path(image);
        if !src.is_dir() {
            return Err(StorageError::ImageMissing(image.clone()));
        }
        let dir = self.sandboxes_dir().join(id.as_str());
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::SandboxExists(id.clone()));
            }
            Err(e) => return Err(io_err("create the sandbox dir", &dir)(e)),
        }
        let result = self.populate_rootfs(&dir, &src, disk_bytes, tmp);
        if result.is_err() {
            let _ = self.destroy_rootfs(id);
        }
        result
    }

    fn rootfs_path(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir().join(id.as_str()).join("rootfs")
    }

    fn set_disk_limit(&self, id: &SandboxId, disk_bytes: u64) -> Result<(), StorageError> {
        let rootfs = self.rootfs_path(id);
        // In the nested layout the sandbox may have removed or replaced its /tmp subvolume:
        // then there is no /tmp limit to set, and what it put there counts against the rootfs.
        for tmp in [self.rw_path(id), rootfs.join("tmp")] {
            if btrfs::is_subvolume(&tmp) {
                btrfs::set_limit(&self.root, &tmp, Some(disk_bytes))
                    .map_err(io_err("set the disk limit of", &tmp))?;
            }
        }
        btrfs::set_limit(&self.root, &rootfs, Some(disk_bytes))
            .map_err(io_err("set the disk limit of", &rootfs))
    }

    fn destroy_rootfs(&self, id: &SandboxId) -> Result<(), StorageError> {
        let dir = self.sandboxes_dir().join(id.as_str());
        let rootfs = dir.join("rootfs");
        let rw = dir.join("rw");
        // A sandbox may have renamed a nested /tmp subvolume anywhere in its tree, or made
        // subvolumes of its own, and so may an image: the search of the pool's subvolume
        // references finds each wherever it is linked.
        self.lift_limits(&rootfs);
        self.lift_limits(&rw);
        // Whole subvolumes go at once: no directory of the sandbox's is walked, so neither the
        // depth nor the size of what it wrote matters.
        delete_subvolumes(&self.root, &[rootfs, rw])?;
        // The files dir is the runtime's: the jail binds its files read-only.
        let own = dir.join("etc");
        match std::fs::remove_dir_all(&own) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove the sandbox's files in", &own)(e)),
        }
        // Nothing else is in the sandbox's dir. rmdir neither follows a symlink nor descends
        // into anything.
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove the sandbox dir", &dir)(e)),
        }
    }

    fn list_rootfs(&self) -> Result<Vec<SandboxId>, StorageError> {
        let dir = self.sandboxes_dir();
        let entries = fs::read_dir(&dir).map_err(io_err("list the sandboxes dir", &dir))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect())
    }
}

impl BtrfsStorage {
    /// Gives the new sandbox `dst` a writable, copy-on-write copy of `src`'s root filesystem and
    /// of its `/tmp`, as they are now: two btrfs snapshots, O(1) in the data. `src` may be
    /// running; each snapshot is atomic.
    pub fn fork_rootfs(
        &self,
        src: &SandboxId,
        dst: &SandboxId,
        disk_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let from = self.rootfs_path(src);
        if !from.is_dir() {
            return Err(StorageError::NoRootfs(src.clone()));
        }
        let dir = self.sandboxes_dir().join(dst.as_str());
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::SandboxExists(dst.clone()));
            }
            Err(e) => return Err(io_err("create the sandbox dir", &dir)(e)),
        }
        let result = self.populate_fork(&from, &dir, disk_bytes);
        if result.is_err() {
            let _ = self.destroy_rootfs(dst);
        }
        result
    }

    fn populate_fork(
        &self,
        from: &Path,
        dir: &Path,
        disk_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let rootfs = dir.join("rootfs");
        self.snapshot_limited(from, &rootfs, disk_bytes)?;
        // The fork's /tmp is a snapshot of the parent's, in the parent's layout.
        let parent_dir = from.parent().unwrap_or(from);
        let rw = parent_dir.join("rw");
        if btrfs::is_subvolume(&rw) {
            self.snapshot_limited(&rw, &dir.join("rw"), disk_bytes)?;
            // A fork is a clone of the machine: it keeps the parent's id.
            let id = std::fs::read(parent_dir.join("etc/machine-id")).ok();
            write_own_files(dir, id.as_deref())?;
            return Ok(rootfs);
        }
        // Nested: the snapshot shows the parent's /tmp subvolume as an empty directory; replace
        // it with a snapshot of its own. A parent that replaced its /tmp with a plain directory
        // (whose content the first snapshot already holds) leaves nothing to do.
        let parent_tmp = from.join("tmp");
        let tmp = rootfs.join("tmp");
        if btrfs::is_subvolume(&parent_tmp) {
            match std::fs::remove_dir(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("clear the fork's /tmp in", &tmp)(e)),
            }
            self.snapshot_limited(&parent_tmp, &tmp, disk_bytes)?;
        }
        Ok(rootfs)
    }

    /// A writable snapshot of `src` at `dest`, limited to `disk_bytes` from its first moment.
    pub(super) fn snapshot_limited(
        &self,
        src: &Path,
        dest: &Path,
        disk_bytes: u64,
    ) -> Result<(), StorageError> {
        btrfs::snapshot(src, dest, Some(disk_bytes))
            .map_err(io_err("snapshot a subvolume into", dest))?;
        if self.quota != QuotaMode::Simple {
            // Full qgroups copy the source's (absent) limit over the inherited one.
            btrfs::set_limit(&self.root, dest, Some(disk_bytes))
                .map_err(io_err("set the disk limit of", dest))?;
        }
        Ok(())
    }

    fn populate_rootfs(
        &self,
        dir: &Path,
        src: &Path,
        disk_bytes: u64,
        layout: TmpLayout,
    ) -> Result<PathBuf, StorageError> {
        let rootfs = dir.join("rootfs");
        // The limit is set in the snapshot's own transaction: there is no moment when the
        // sandbox's rootfs exists unlimited.
        self.snapshot_limited(src, &rootfs, disk_bytes)?;
        // /tmp is in a subvolume of its own: it persists with the sandbox but a capture (a
        // snapshot of the rootfs subvolume) does not hold it. It has its own limit of the disk
        // size, like LangSmith's /tmp, which is not part of fs_capacity_bytes.
        // An image whose /tmp is not a real directory (a snapshot of a sandbox that replaced
        // its own) has no mount point for one beside: its /tmp is made in the rootfs.
        let beside = std::fs::symlink_metadata(src.join("tmp")).is_ok_and(|m| m.is_dir());
        match layout {
            TmpLayout::Beside if beside => self.populate_rw(dir, src, disk_bytes)?,
            TmpLayout::Beside | TmpLayout::Nested => {
                let tmp = rootfs.join("tmp");
                // Neither removal follows a link.
                let cleared = match std::fs::symlink_metadata(&tmp) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&tmp),
                    Ok(_) => std::fs::remove_file(&tmp),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                cleared.map_err(io_err("clear the image's /tmp in", &tmp))?;
                btrfs::create_subvolume(&tmp, Some(disk_bytes))
                    .map_err(io_err("create the subvolume", &tmp))?;
                set_mode(&tmp, 0o1777)?;
            }
        }
        Ok(rootfs)
    }
}

/// Reads `files` (paths in the sandbox) of a new rootfs into the page cache, resolved inside the
/// rootfs as the sandbox would (absolute links stay in it, nothing is followed out, no magic
/// links): a sandbox's files are inodes of its own, so nothing of its image's cache serves its
/// first command. Missing files and errors are skipped: this only saves time.
pub(crate) fn read_ahead(rootfs: &Path, files: &[&str]) {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(root) = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    for path in files {
        let opened = rustix::fs::openat2(
            &root,
            path.trim_start_matches('/'),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
        );
        let Ok(fd) = opened else { continue };
        let mut file = std::fs::File::from(fd);
        if file.metadata().is_ok_and(|m| m.is_file()) {
            let _ = std::io::copy(&mut file, &mut std::io::sink());
        }
    }
}

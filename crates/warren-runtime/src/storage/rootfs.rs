//! Sandbox root filesystems: writable snapshots of an image, with a nested /tmp subvolume.

use std::path::{Path, PathBuf};

use fs_err as fs;
use warren_btrfs::{self as btrfs, QuotaMode};
use warren_types::{ImageRef, SandboxId};

use super::error::{StorageError, io_err};
use super::pool::delete_subvolumes;
use super::store::{BtrfsStorage, Storage};

impl Storage for BtrfsStorage {
    fn has_image(&self, image: &ImageRef) -> bool {
        self.image_path(image).is_dir()
    }

    fn create_rootfs(
        &self,
        id: &SandboxId,
        image: &ImageRef,
        disk_bytes: u64,
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
        let result = self.populate_rootfs(&dir, &src, id, disk_bytes);
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
        // The sandbox may have removed or replaced its /tmp subvolume: then there is no /tmp
        // limit to set, and what it put there counts against the rootfs.
        let tmp = rootfs.join("tmp");
        if btrfs::is_subvolume(&tmp) {
            btrfs::set_limit(&self.root, &tmp, Some(disk_bytes))
                .map_err(io_err("set the disk limit of", &tmp))?;
        }
        btrfs::set_limit(&self.root, &rootfs, Some(disk_bytes))
            .map_err(io_err("set the disk limit of", &rootfs))
    }

    fn destroy_rootfs(&self, id: &SandboxId) -> Result<(), StorageError> {
        let dir = self.sandboxes_dir().join(id.as_str());
        let rootfs = dir.join("rootfs");
        // The sandbox may have renamed its /tmp subvolume anywhere in its tree, and an image or
        // an older sandbox may hold nested subvolumes of its own: the search of the pool's
        // subvolume references finds each wherever it is linked.
        self.lift_limits(&rootfs);
        // Whole subvolumes go at once: no directory of the sandbox's is walked, so neither the
        // depth nor the size of what it wrote matters.
        delete_subvolumes(&self.root, &[rootfs])?;
        // The sandbox's dir holds nothing but the rootfs. rmdir neither follows a symlink nor
        // descends into anything.
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
        btrfs::snapshot(from, &rootfs, Some(disk_bytes))
            .map_err(io_err("snapshot the sandbox into", &rootfs))?;
        if self.quota != QuotaMode::Simple {
            btrfs::set_limit(&self.root, &rootfs, Some(disk_bytes))
                .map_err(io_err("set the disk limit of", &rootfs))?;
        }
        // The snapshot shows the parent's /tmp subvolume as an empty directory: replace it with
        // a snapshot of its own. A parent that replaced its /tmp with a plain directory (whose
        // content the first snapshot already holds) leaves nothing to do.
        let parent_tmp = from.join("tmp");
        let tmp = rootfs.join("tmp");
        if btrfs::is_subvolume(&parent_tmp) {
            match std::fs::remove_dir(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("clear the fork's /tmp in", &tmp)(e)),
            }
            btrfs::snapshot(&parent_tmp, &tmp, Some(disk_bytes))
                .map_err(io_err("snapshot the sandbox's /tmp into", &tmp))?;
            if self.quota != QuotaMode::Simple {
                btrfs::set_limit(&self.root, &tmp, Some(disk_bytes))
                    .map_err(io_err("set the disk limit of", &tmp))?;
            }
        }
        Ok(rootfs)
    }

    fn populate_rootfs(
        &self,
        dir: &Path,
        src: &Path,
        _id: &SandboxId,
        disk_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let rootfs = dir.join("rootfs");
        // The limit is set in the snapshot's own transaction: there is no moment when the
        // sandbox's rootfs exists unlimited.
        btrfs::snapshot(src, &rootfs, Some(disk_bytes))
            .map_err(io_err("snapshot the image into", &rootfs))?;
        if self.quota != QuotaMode::Simple {
            // Full qgroups copy the source's (absent) limit over the inherited one.
            btrfs::set_limit(&self.root, &rootfs, Some(disk_bytes))
                .map_err(io_err("set the disk limit of", &rootfs))?;
        }
        // /tmp becomes its own subvolume: it persists with the sandbox but a capture (a snapshot
        // of the rootfs subvolume) does not descend into nested subvolumes. It has its own limit
        // of the disk size, like LangSmith's /tmp, which is not part of fs_capacity_bytes.
        let tmp = rootfs.join("tmp");
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("clear the image's /tmp in", &tmp)(e)),
        }
        btrfs::create_subvolume(&tmp, Some(disk_bytes))
            .map_err(io_err("create the subvolume", &tmp))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
                .map_err(io_err("set the mode of", &tmp))?;
        }
        Ok(rootfs)
    }
}

//! Sandbox root filesystems: writable snapshots of an image, with a nested /tmp subvolume.

use std::path::{Path, PathBuf};

use fs_err as fs;
use warren_btrfs::{self as btrfs, QuotaMode};
use warren_jail::JailFile;
use warren_types::{ImageRef, SandboxId};

use super::error::{StorageError, io_err};
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
        for tmp in [self.tmp_path(id), rootfs.join("tmp")] {
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
        let tmp = dir.join("tmp");
        // A sandbox may have renamed a nested /tmp subvolume anywhere in its tree, or made
        // subvolumes of its own, and so may an image: the search of the pool's subvolume
        // references finds each wherever it is linked.
        self.lift_limits(&rootfs);
        self.lift_limits(&tmp);
        // Whole subvolumes go at once: no directory of the sandbox's is walked, so neither the
        // depth nor the size of what it wrote matters.
        delete_subvolumes(&self.root, &[rootfs, tmp])?;
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
        let beside = parent_dir.join("tmp");
        if btrfs::is_subvolume(&beside) {
            self.snapshot_limited(&beside, &dir.join("tmp"), disk_bytes)?;
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
    fn snapshot_limited(
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
        // /tmp is a subvolume of its own: it persists with the sandbox but a capture (a snapshot
        // of the rootfs subvolume) does not hold it. It has its own limit of the disk size, like
        // LangSmith's /tmp, which is not part of fs_capacity_bytes.
        let tmp = match layout {
            TmpLayout::Beside => {
                write_own_files(dir, None)?;
                dir.join("tmp")
            }
            TmpLayout::Nested => {
                let tmp = rootfs.join("tmp");
                match std::fs::remove_dir_all(&tmp) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("clear the image's /tmp in", &tmp)(e)),
                }
                tmp
            }
        };
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

impl BtrfsStorage {
    /// What the jail mounts of the sandbox's own over its rootfs: its `/tmp` and its files,
    /// with the resolver (when the sandbox is linked to the host) written for this boot. A
    /// sandbox in the nested layout has neither: its /tmp and files are in its rootfs.
    pub(crate) fn jail_mounts(
        &self,
        id: &SandboxId,
        nameserver: Option<std::net::Ipv4Addr>,
    ) -> Result<(Option<PathBuf>, Vec<JailFile>), StorageError> {
        let tmp = self.tmp_path(id);
        if !btrfs::is_subvolume(&tmp) {
            return Ok((None, Vec::new()));
        }
        let own = self.own_files_dir(id);
        let mut files = vec![JailFile {
            host_path: own.join("machine-id"),
            path: "/etc/machine-id".into(),
            only_over_empty: true,
        }];
        if let Some(nameserver) = nameserver {
            let resolv = own.join("resolv.conf");
            std::fs::write(&resolv, warren_proto::resolv_conf(nameserver))
                .map_err(io_err("write", &resolv))?;
            files.push(JailFile {
                host_path: resolv,
                path: "/etc/resolv.conf".into(),
                only_over_empty: false,
            });
        }
        Ok((Some(tmp), files))
    }
}

/// The sandbox's own files in `<dir>/etc`, which the jail binds read-only over the rootfs's:
/// its machine id (`id`, or a new one), and an empty resolv.conf the driver fills at each boot.
fn write_own_files(dir: &Path, id: Option<&[u8]>) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt;
    let own = dir.join("etc");
    std::fs::create_dir(&own).map_err(io_err("create the sandbox's files dir", &own))?;
    let fresh;
    let id = match id {
        Some(id) if id.iter().any(|b| !b.is_ascii_whitespace()) => id,
        _ => {
            fresh = format!("{}\n", uuid::Uuid::new_v4().simple());
            fresh.as_bytes()
        }
    };
    for (name, text, mode) in [("machine-id", id, 0o444), ("resolv.conf", &b""[..], 0o644)] {
        let path = own.join(name);
        std::fs::write(&path, text).map_err(io_err("write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("set the mode of", &path))?;
    }
    Ok(())
}

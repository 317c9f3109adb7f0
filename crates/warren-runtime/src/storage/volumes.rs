//! Volumes: persistent directories, each a btrfs subvolume `volumes/<id>` with its own quota
//! group limit, mounted into sandboxes by the jail (idmapped like the rootfs). A clone is a
//! writable snapshot: O(1) in the data. Ids come from the control plane and are checked
//! ([`warren_driver::is_volume_id`]) before they become part of a path.
//!
//! With simple quotas an extent is charged to the subvolume that wrote it: a fresh clone uses
//! nothing, and the source keeps what it shares. Subvolumes a tenant nests inside a volume
//! are not part of a clone (they show as empty directories there, like a fork's /tmp) and are
//! deleted with the volume.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use warren_btrfs::{self as btrfs, QuotaMode};

use super::error::{StorageError, io_err};
use super::pool::delete_subvolumes;
use super::store::BtrfsStorage;

/// Mode of a new volume's root directory (owned by raw uid/gid 0: the sandbox's root through
/// the idmapped mount).
const VOLUME_MODE: u32 = 0o755;

impl BtrfsStorage {
    pub(super) fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Host path of the volume `id`, once the id is checked.
    pub fn volume_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        if !warren_driver::is_volume_id(id) {
            return Err(StorageError::InvalidVolumeId(id.to_owned()));
        }
        Ok(self.volumes_dir().join(id))
    }

    /// Host path of an existing volume.
    pub fn existing_volume(&self, id: &str) -> Result<PathBuf, StorageError> {
        let path = self.volume_path(id)?;
        if !btrfs::is_subvolume(&path) {
            return Err(StorageError::NoVolume(id.to_owned()));
        }
        Ok(path)
    }

    /// Creates the empty volume `id`, limited to `size_bytes`. Fails if it exists.
    pub fn create_volume(&self, id: &str, size_bytes: u64) -> Result<(), StorageError> {
        let path = self.volume_path(id)?;
        // The limit is set in the create's own transaction.
        match btrfs::create_subvolume(&path, Some(size_bytes)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::VolumeExists(id.to_owned()));
            }
            Err(e) => return Err(io_err("create the volume subvolume", &path)(e)),
        }
        let result = self.finish_volume(&path, size_bytes, true);
        if result.is_err() {
            let _ = self.delete_volume(id);
        }
        result
    }

    /// Creates the volume `dst` as a writable snapshot of `src`, limited to `size_bytes`.
    pub fn clone_volume(&self, src: &str, dst: &str, size_bytes: u64) -> Result<(), StorageError> {
        let from = self.existing_volume(src)?;
        let path = self.volume_path(dst)?;
        match btrfs::snapshot(&from, &path, Some(size_bytes)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::VolumeExists(dst.to_owned()));
            }
            Err(e) => return Err(io_err("snapshot the volume into", &path)(e)),
        }
        let result = self.finish_volume(&path, size_bytes, false);
        if result.is_err() {
            let _ = self.delete_volume(dst);
        }
        result
    }

    fn finish_volume(&self, path: &Path, size_bytes: u64, fresh: bool) -> Result<(), StorageError> {
        if self.quota != QuotaMode::Simple {
            // Full qgroups copy the source's limit over the inherited one.
            btrfs::set_limit(&self.root, path, Some(size_bytes))
                .map_err(io_err("set the limit of the volume", path))?;
        }
        if fresh {
            std::os::unix::fs::lchown(path, Some(0), Some(0))
                .map_err(io_err("chown the volume", path))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(VOLUME_MODE))
                .map_err(io_err("set the mode of the volume", path))?;
        }
        Ok(())
    }

    /// Sets the limit of the volume `id`.
    pub fn resize_volume(&self, id: &str, size_bytes: u64) -> Result<(), StorageError> {
        let path = self.existing_volume(id)?;
        btrfs::set_limit(&self.root, &path, Some(size_bytes))
            .map_err(io_err("set the limit of the volume", &path))
    }

    /// Deletes the volume `id` with every subvolume nested in it. A missing one is no error.
    pub fn delete_volume(&self, id: &str) -> Result<(), StorageError> {
        let path = self.volume_path(id)?;
        self.lift_limits(&path);
        delete_subvolumes(&self.root, &[path])
    }

    /// Bytes the volume's quota group counts against its limit, from /sys/fs/btrfs.
    pub fn volume_used_bytes(&self, id: &str) -> Option<u64> {
        let path = self.existing_volume(id).ok()?;
        let qgroup = btrfs::subvolume_id(&path).ok()?;
        let sysfs = btrfs::sysfs_dir(&self.root).ok()?;
        std::fs::read_to_string(sysfs.join(format!("qgroups/0_{qgroup}/referenced")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Clears the limits of the subvolume at `path` and of every one nested in it, before a
    /// delete: btrfs needs to reserve space to delete a subvolume and refuses with EDQUOT when
    /// it is at its limit (full qgroups only; simple quotas delete at the limit, and this is
    /// cheap). Failures are logged: the delete reports what matters.
    pub(super) fn lift_limits(&self, path: &Path) {
        if self.quota == QuotaMode::Off {
            return;
        }
        match btrfs::subvolume_tree(&self.root, path) {
            Ok(ids) => {
                for qgroup in ids {
                    if let Err(e) = btrfs::set_limit_by_id(&self.root, qgroup, None) {
                        tracing::warn!(error = %e, path = %path.display(), qgroup, "failed to lift a disk limit before delete");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "failed to list the subvolumes before delete");
            }
        }
    }
}

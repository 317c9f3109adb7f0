//! Image subvolumes: building, publishing and removing them.

use std::path::{Path, PathBuf};

use fs_err as fs;
use warren_btrfs as btrfs;
use warren_types::{ImageRef, SandboxId};

use super::error::{StorageError, io_err};
use super::pool::delete_subvolumes;
use super::store::{BtrfsStorage, Storage};

impl BtrfsStorage {
    /// Creates an empty writable subvolume for building an image into.
    pub fn begin_image_build(&self) -> Result<PathBuf, StorageError> {
        let path = self
            .images_dir()
            .join(format!(".build-{}", std::process::id()));
        if path.exists() {
            delete_subvolumes(&self.root, std::slice::from_ref(&path))?;
        }
        btrfs::create_subvolume(&path, None).map_err(io_err("create the subvolume", &path))?;
        Ok(path)
    }

    /// Creates an empty writable subvolume for one of several builds this process may run at
    /// once (images from registries).
    pub fn begin_named_build(&self) -> Result<PathBuf, StorageError> {
        let path = self.images_dir().join(format!(
            ".build-{}.{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        btrfs::create_subvolume(&path, None).map_err(io_err("create the subvolume", &path))?;
        Ok(path)
    }

    /// Makes a finished build read-only and publishes it under the image's name, replacing an
    /// image of that name. Atomic: the name holds the old image or the new one, never nothing,
    /// so creates from it keep working during a rebuild. Sandboxes made from the old image keep
    /// their data (they are snapshots, independent of it).
    pub fn commit_image_build(&self, build: &Path, image: &ImageRef) -> Result<(), StorageError> {
        btrfs::set_read_only(build).map_err(io_err("make the image read-only", build))?;
        let dest = self.image_path(image);
        if !dest.exists() {
            return fs::rename(build, &dest).map_err(io_err("publish the image", &dest));
        }
        // A plain rename cannot replace a non-empty directory; exchanging the two names can,
        // in one step. The old image then sits at the build's name and is deleted like an
        // aborted build (at the next open if this process dies first).
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            build,
            rustix::fs::CWD,
            &dest,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| io_err("replace the image", &dest)(e.into()))?;
        delete_subvolumes(&self.root, &[build.to_owned()])
    }

    /// Publishes a read-only copy of a sandbox's root filesystem as `image`. One btrfs snapshot:
    /// atomic and copy-on-write even while the sandbox writes. What is not in the rootfs is
    /// left out: the `rw` subvolume beside it (its `/tmp`, its trust store with its own proxy
    /// CA) and the runtime's files, so a sandbox made from the image gets its own; a nested
    /// `/tmp` subvolume appears as an empty directory. Fails if the image exists.
    pub fn capture_rootfs(&self, id: &SandboxId, image: &ImageRef) -> Result<(), StorageError> {
        let src = self.rootfs_path(id);
        if !src.is_dir() {
            return Err(StorageError::NoRootfs(id.clone()));
        }
        let dest = self.image_path(image);
        if dest.exists() {
            return Err(StorageError::ImageExists(image.clone()));
        }
        let build = self.images_dir().join(format!(
            ".build-{}.{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        btrfs::snapshot(&src, &build, None).map_err(io_err("snapshot the sandbox into", &build))?;
        let published = btrfs::set_read_only(&build)
            .map_err(io_err("make the image read-only", &build))
            .and_then(|()| fs::rename(&build, &dest).map_err(io_err("publish the image", &dest)));
        if published.is_err() {
            let _ = delete_subvolumes(&self.root, std::slice::from_ref(&build));
        }
        published
    }

    /// The snapshot images present (`snapshot/<id>:latest`), read from their directory names.
    pub fn snapshot_images(&self) -> Result<Vec<ImageRef>, StorageError> {
        let dir = self.images_dir();
        let entries = fs::read_dir(&dir).map_err(io_err("list the images dir", &dir))?;
        Ok(entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name
                    .to_str()?
                    .strip_prefix("snapshot+")?
                    .strip_suffix("@latest")?;
                format!("snapshot/{id}").parse().ok()
            })
            .collect())
    }

    /// Deletes an unfinished build.
    pub fn abort_image_build(&self, build: &Path) -> Result<(), StorageError> {
        delete_subvolumes(&self.root, &[build.to_owned()])
    }

    /// Deletes an image. Sandboxes made from it keep their data (they are snapshots).
    pub fn remove_image(&self, image: &ImageRef) -> Result<(), StorageError> {
        let path = self.image_path(image);
        if !path.exists() {
            return Err(StorageError::ImageMissing(image.clone()));
        }
        delete_subvolumes(&self.root, &[path])?;
        let _held = self
            .rw_templates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.remove_rw_templates(&image.storage_name(), None)
    }

    /// Deletes what builds of images, captures and `rw` templates killed midway left.
    pub(super) fn remove_partial_builds(&self) -> Result<(), StorageError> {
        for dir in [self.images_dir(), self.templates_dir()] {
            self.remove_partial_builds_in(&dir)?;
        }
        Ok(())
    }

    fn remove_partial_builds_in(&self, dir: &Path) -> Result<(), StorageError> {
        let entries = fs::read_dir(dir).map_err(io_err("list the builds in", dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(".build-") else {
                continue;
            };
            // `.build-PID` (an image build) or `.build-PID.ID` (a capture).
            let pid = rest.split('.').next().unwrap_or(rest);
            // A build whose process still runs is someone else's, in progress.
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                delete_subvolumes(&self.root, &[entry.path()])?;
            }
        }
        Ok(())
    }
}

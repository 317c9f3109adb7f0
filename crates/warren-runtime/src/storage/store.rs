//! The storage seam and the btrfs store's layout.

use std::path::{Path, PathBuf};

use warren_btrfs::QuotaMode;
use warren_types::{ImageRef, SandboxId};

use super::error::StorageError;

/// Where root filesystems come from. The jail driver uses btrfs; a microVM driver will want
/// block devices (qcow2 or raw images) behind the same operations.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Whether the image is present.
    fn has_image(&self, image: &ImageRef) -> bool;
    /// Creates a sandbox's writable root filesystem from an image, limited to `disk_bytes`,
    /// with its `/tmp` where `tmp` says.
    fn create_rootfs(
        &self,
        id: &SandboxId,
        image: &ImageRef,
        disk_bytes: u64,
        tmp: TmpLayout,
    ) -> Result<PathBuf, StorageError>;
    /// Path of a sandbox's root filesystem.
    fn rootfs_path(&self, id: &SandboxId) -> PathBuf;
    /// Sets the disk limit of an existing root filesystem (and its /tmp).
    fn set_disk_limit(&self, id: &SandboxId, disk_bytes: u64) -> Result<(), StorageError>;
    /// Deletes a sandbox's root filesystem, /tmp and quota group. Missing parts are not an error.
    fn destroy_rootfs(&self, id: &SandboxId) -> Result<(), StorageError>;
    /// Ids of every sandbox that has storage, for garbage collection.
    fn list_rootfs(&self) -> Result<Vec<SandboxId>, StorageError>;
}

/// Where a sandbox's `/tmp` lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmpLayout {
    /// Beside the rootfs: a subvolume `sandboxes/<id>/rw` holds `tmp/` (mounted at /tmp) and
    /// `certs/` (a copy of the image's `/etc/ssl/certs`, mounted over it, where the egress
    /// proxy's CA is added), and `sandboxes/<id>/etc` the runtime's files bound read-only over
    /// the image's (machine id, resolver). Making and booting the sandbox then writes nothing
    /// into its rootfs, which keeps sharing every block of the image's tree: the first write
    /// copies the path to the block it changes, and each copy adds a back-reference to every
    /// child block shared with the image's other sandboxes that wrote there too, so at 1,000
    /// sandboxes of one image each such write cost the next btrfs commit 30 to 40 ms.
    Beside,
    /// Nested in the rootfs (`rootfs/tmp`, a subvolume): what a VM's guest sees through the
    /// one virtiofs share of its rootfs, and the layout of sandboxes made before /tmp moved.
    Nested,
}

/// This process's build of the default image, as creates see it.
#[derive(Debug, Default)]
pub(crate) enum BuildState {
    /// No build, or the last one succeeded.
    #[default]
    Idle,
    /// A build runs.
    Building,
    /// The last build failed, for this reason (fit for API clients).
    Failed(String),
}

/// btrfs-backed [`Storage`].
#[derive(Debug)]
pub struct BtrfsStorage {
    pub(super) root: PathBuf,
    /// The pool's quota mode, settled at open.
    pub(super) quota: QuotaMode,
    /// This process's build of the default image, for creates that come while it runs.
    pub(crate) default_build: std::sync::Mutex<BuildState>,
    /// Held while an image's `rw` template is made (see `own.rs`).
    pub(super) rw_templates: std::sync::Mutex<()>,
    /// The generation last read of each image (see [`BtrfsStorage::image_generation`]).
    pub(crate) generations: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl BtrfsStorage {
    /// The btrfs filesystem's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub(super) fn templates_dir(&self) -> PathBuf {
        self.root.join("templates")
    }

    pub(super) fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// Path of a sandbox's writable subvolume beside its rootfs ([`TmpLayout::Beside`]).
    pub fn rw_path(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir().join(id.as_str()).join("rw")
    }

    /// Path of a sandbox's `/tmp` in the [`TmpLayout::Beside`] layout.
    pub fn tmp_path(&self, id: &SandboxId) -> PathBuf {
        self.rw_path(id).join("tmp")
    }

    /// Directory of the files the jail binds over a sandbox's rootfs ones (its machine id, its
    /// resolver), in the [`TmpLayout::Beside`] layout.
    pub fn own_files_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir().join(id.as_str()).join("etc")
    }

    /// Path of an image's read-only subvolume.
    pub fn image_path(&self, image: &ImageRef) -> PathBuf {
        self.images_dir().join(image.storage_name())
    }
}

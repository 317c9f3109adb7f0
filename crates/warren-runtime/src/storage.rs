//! Copy-on-write storage: images, snapshots and sandbox root filesystems as btrfs subvolumes.
//!
//! Layout under the data dir:
//! ```text
//! <data>/warren.btrfs             sparse loop image, only when <data> is not on btrfs
//! <data>/fs/                      the btrfs filesystem (loop mount, or a plain dir on a btrfs host)
//!   images/<name@tag>/            read-only subvolume per image
//!   images/.build-*/              an image being built (deleted at open if a build was killed)
//!   sandboxes/<id>/rootfs/        writable snapshot of the image: O(1), own inodes per sandbox
//!   sandboxes/<id>/rootfs/tmp/    nested subvolume: persistent, but not part of captures
//! ```
//! The rootfs and /tmp subvolumes each carry a qgroup limit of the sandbox's disk size: writing
//! past it fails with EDQUOT inside, and nothing outside is affected.
//!
//! Quotas are btrfs simple quotas (Linux 6.7+): an extent is charged to the subvolume that wrote
//! it, so a fresh snapshot uses nothing and its limit caps what the sandbox itself writes (the
//! image it shares is charged to the image). Full qgroups would walk the backrefs of every
//! shared extent at each transaction commit: with many snapshots of one image that made each
//! create and delete cost 50 ms to seconds. On older kernels, or a host filesystem that already
//! runs full qgroups, those are used instead.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fs_err as fs;
use nix::fcntl::{Flock, FlockArg};
use warren_jail::btrfs::{self, QuotaMode};
use warren_types::{ImageRef, SandboxId};

use crate::io_error::IoError;
use crate::tool::{self, ToolError};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem operation on the data dir failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A btrfs or mount tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The image is not in the store.
    #[error("image {0} is not present; build it with `warren image build`")]
    ImageMissing(ImageRef),
    /// A sandbox's rootfs already exists.
    #[error("a root filesystem for sandbox {0} already exists")]
    SandboxExists(SandboxId),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_owned();
    move |source| {
        StorageError::Io(IoError {
            action,
            path,
            source,
        })
    }
}

/// Where root filesystems come from. The jail driver uses btrfs; a microVM driver will want
/// block devices (qcow2 or raw images) behind the same operations.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Whether the image is present.
    fn has_image(&self, image: &ImageRef) -> bool;
    /// Creates a sandbox's writable root filesystem from an image, limited to `disk_bytes`.
    fn create_rootfs(
        &self,
        id: &SandboxId,
        image: &ImageRef,
        disk_bytes: u64,
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

/// btrfs-backed [`Storage`].
#[derive(Debug)]
pub struct BtrfsStorage {
    root: PathBuf,
    /// The pool's quota mode, settled at open.
    quota: QuotaMode,
    /// This process's build of the default image, for creates that come while it runs.
    pub(crate) default_build: std::sync::Mutex<crate::image::BuildState>,
}

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;

fn is_btrfs(path: &Path) -> bool {
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
        .map_err(io_err("inspect", path))
}

/// Creates `dir` if needed and makes it private to root (0700). A data dir made by an older
/// version (0755) is fixed here, with a log line: every sandbox's files and the database are
/// beneath it, and nothing under it is for other host users.
pub fn make_private_dir(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(|e| {
        StorageError::Io(IoError {
            action: "create data dir",
            path: dir.to_owned(),
            source: e,
        })
    })?;
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
    let file = std::fs::File::open(image).map_err(io_err("open", image))?;
    let mut magic = [0u8; 8];
    match file.read_exact_at(&mut magic, BTRFS_MAGIC_OFFSET) {
        Ok(()) => Ok(&magic == BTRFS_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err("read", image)(e)),
    }
}

/// Makes sure `image` is a formatted pool of `pool_bytes`, private to root. A new one is made
/// under a temporary name, formatted, then renamed: a first start killed at any point leaves
/// either no image or a whole one. An image that is not a formatted btrfs filesystem (left by
/// an older version that was killed between creating and formatting it) holds nothing, and is
/// made again.
fn ensure_pool_image(image: &Path, pool_bytes: u64) -> Result<(), StorageError> {
    let tmp = image.with_file_name(POOL_IMAGE_TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(image = %tmp.display(), "removed an unfinished pool image"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp)(e)),
    }
    if image.exists() {
        if is_formatted_pool(image)? {
            return make_private_file(image);
        }
        tracing::warn!(image = %image.display(), "the pool image is not a formatted btrfs filesystem (an earlier first start was interrupted before it was formatted); it holds nothing, making it again");
        std::fs::remove_file(image).map_err(io_err("remove", image))?;
    }
    tracing::info!(image = %image.display(), bytes = pool_bytes, "creating the storage pool (sparse)");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.set_len(pool_bytes).map_err(io_err("size", &tmp))?;
    tool::run("mkfs.btrfs", [std::ffi::OsStr::new("-q"), tmp.as_os_str()])?;
    // What mkfs wrote is on disk before the name says it is a pool.
    f.sync_all().map_err(io_err("sync", &tmp))?;
    drop(f);
    if !is_formatted_pool(&tmp)? {
        return Err(StorageError::Io(IoError {
            action: "format",
            path: tmp,
            source: std::io::Error::other("mkfs.btrfs left no btrfs superblock"),
        }));
    }
    fs::rename(&tmp, image).map_err(|e| {
        StorageError::Io(IoError {
            action: "publish the pool image",
            path: image.to_owned(),
            source: e,
        })
    })?;
    if let Some(dir) = image.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", dir))?;
    }
    Ok(())
}

/// Mount flags of the pool's mount at `root`: (nosuid, nodev).
pub fn pool_mount_flags(root: &Path) -> Result<(bool, bool), StorageError> {
    use nix::sys::statvfs::FsFlags;
    let st = nix::sys::statvfs::statvfs(root).map_err(|e| {
        StorageError::Io(IoError {
            action: "statvfs",
            path: root.to_owned(),
            source: e.into(),
        })
    })?;
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
    .map_err(|e| io_err("statx", path)(e.into()))
}

/// Makes the pool's mount nosuid,nodev: a sandbox's root writes files as uid 0 on disk, and a
/// setuid-root file or a device node it made must mean nothing on the host. The loop pool is
/// mounted with both; a pool mounted by an older version without them is remounted. A data dir
/// on a host btrfs filesystem gets its `fs` bind-mounted onto itself, so the flags are set on
/// Warren's own mount and the host filesystem's mount is left as it is.
fn secure_pool_mount(root: &Path) -> Result<(), StorageError> {
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
    let st = nix::sys::statvfs::statvfs(root).map_err(|e| io_err("statvfs", root)(e.into()))?;
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

impl BtrfsStorage {
    /// Opens (and on first use creates) the btrfs store under `data_dir`: when the data dir is
    /// not on btrfs, a sparse loop-backed image of `pool_bytes` is created and mounted.
    pub fn open(data_dir: &Path, pool_bytes: u64) -> Result<Self, StorageError> {
        make_private_dir(data_dir)?;
        let root = data_dir.join("fs");
        // Several `warren` processes may open the same data dir at once (parallel `warren run`):
        // the first mounts, the others wait here and then find it mounted.
        let lock_path = data_dir.join(".storage.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_FILE)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        make_private_file(&lock_path)?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| {
            StorageError::Io(IoError {
                action: "lock",
                path: lock_path.clone(),
                source: e.into(),
            })
        })?;
        fs::create_dir_all(&root).map_err(|e| {
            StorageError::Io(IoError {
                action: "create",
                path: root.clone(),
                source: e,
            })
        })?;
        let image = data_dir.join(POOL_IMAGE);
        let mut mounted_now = false;
        if !is_btrfs(&root) {
            mounted_now = true;
            ensure_pool_image(&image, pool_bytes)?;
            tool::run(
                "mount",
                [
                    std::ffi::OsStr::new("-o"),
                    std::ffi::OsStr::new("loop,noatime,nosuid,nodev"),
                    image.as_os_str(),
                    root.as_os_str(),
                ],
            )?;
        }
        secure_pool_mount(&root)?;
        // An image made by an older version was world-readable (0644): the sandboxes' files.
        if image.exists() {
            make_private_file(&image)?;
        }
        let own_pool = image.exists();
        let mut store = Self {
            root,
            quota: QuotaMode::Off,
            default_build: std::sync::Mutex::default(),
        };
        store.quota = store.ensure_quotas(own_pool)?;
        if store.quota == QuotaMode::Full && mounted_now {
            store.check_quotas()?;
        }
        for dir in [store.images_dir(), store.sandboxes_dir()] {
            fs::create_dir_all(&dir).map_err(|e| {
                StorageError::Io(IoError {
                    action: "create",
                    path: dir.clone(),
                    source: e,
                })
            })?;
        }
        store.remove_partial_builds()?;
        Ok(store)
    }

    /// Turns quotas on, in simple mode where the kernel has it. Full qgroups already running on a
    /// pool of our own (a data dir from before simple quotas) are switched to simple ones; on a
    /// host filesystem they are left as they are. Returns the mode in force.
    fn ensure_quotas(&self, own_pool: bool) -> Result<QuotaMode, StorageError> {
        let mode = self.quota_mode()?;
        let kernel_has_simple = Path::new("/sys/fs/btrfs/features/simple_quota").exists();
        let mut kept = Vec::new();
        match mode {
            QuotaMode::Simple => return Ok(mode),
            QuotaMode::Full if !own_pool || !kernel_has_simple => return Ok(mode),
            QuotaMode::Full => {
                // Turning quotas off drops every quota group with its limit: note the sandboxes'
                // limits first and set them again under simple quotas.
                kept = self.current_limits();
                tracing::info!(pool = %self.root.display(), sandboxes = kept.len(), "switching the pool from full qgroups to simple quotas");
                btrfs::set_quota_mode(&self.root, QuotaMode::Off)
                    .map_err(io_err("turn off quotas on", &self.root))?;
            }
            QuotaMode::Off => {}
        }
        let mode = match btrfs::set_quota_mode(&self.root, QuotaMode::Simple) {
            Ok(()) => QuotaMode::Simple,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(pool = %self.root.display(), "the kernel has no simple quotas (Linux 6.7+); using full qgroups, which slow creates as sandboxes accumulate");
                btrfs::set_quota_mode(&self.root, QuotaMode::Full)
                    .map_err(io_err("enable quotas on", &self.root))?;
                QuotaMode::Full
            }
            Err(e) => return Err(io_err("enable simple quotas on", &self.root)(e)),
        };
        for (path, bytes) in kept {
            if let Err(e) = btrfs::set_limit(&self.root, &path, Some(bytes)) {
                tracing::warn!(error = %e, path = %path.display(), "failed to restore a disk limit");
            }
        }
        Ok(mode)
    }

    /// The byte limits the sandboxes' subvolumes carry now, from /sys/fs/btrfs.
    fn current_limits(&self) -> Vec<(PathBuf, u64)> {
        let Ok(sysfs) = btrfs::sysfs_dir(&self.root) else {
            return Vec::new();
        };
        let mut limits = Vec::new();
        for id in self.list_rootfs().unwrap_or_default() {
            let rootfs = self.rootfs_path(&id);
            for sub in [rootfs.join("tmp"), rootfs] {
                let Ok(qgroup) = btrfs::subvolume_id(&sub) else {
                    continue;
                };
                let max = std::fs::read_to_string(
                    sysfs.join(format!("qgroups/0_{qgroup}/max_referenced")),
                );
                if let Some(bytes) = max
                    .ok()
                    .and_then(|m| m.trim().parse::<u64>().ok())
                    .filter(|b| *b > 0)
                {
                    limits.push((sub, bytes));
                }
            }
        }
        limits
    }

    /// With full qgroups, makes limits dependable: raises the per-mount drop threshold (see
    /// [`set_drop_subtree_threshold`]) and rescans quota numbers a crash left inconsistent. Done
    /// when this process mounts the pool, and by the daemon at start. Simple quotas need neither.
    pub fn check_quotas(&self) -> Result<(), StorageError> {
        if self.quota_mode()? != QuotaMode::Full {
            return Ok(());
        }
        set_drop_subtree_threshold(&self.root);
        // Quota numbers that a crash or an old layout left inconsistent would make limits
        // unreliable: rescan once at open (rare, and only then).
        let show = std::process::Command::new("btrfs")
            .args(["qgroup", "show"])
            .arg(&self.root)
            .output();
        let inconsistent = show.is_ok_and(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text).contains("inconsistent")
        });
        if inconsistent {
            tool::run(
                "btrfs",
                [
                    std::ffi::OsStr::new("quota"),
                    "rescan".as_ref(),
                    "-w".as_ref(),
                    self.root.as_os_str(),
                ],
            )?;
        }
        Ok(())
    }

    /// How the pool accounts disk use to sandboxes.
    pub fn quota_mode(&self) -> Result<QuotaMode, StorageError> {
        btrfs::quota_mode(&self.root).map_err(io_err("read the quota mode of", &self.root))
    }

    /// The btrfs filesystem's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// Path of an image's read-only subvolume.
    pub fn image_path(&self, image: &ImageRef) -> PathBuf {
        self.images_dir().join(image.storage_name())
    }

    /// Creates an empty writable subvolume for building an image into.
    pub fn begin_image_build(&self) -> Result<PathBuf, StorageError> {
        let path = self
            .images_dir()
            .join(format!(".build-{}", std::process::id()));
        if path.exists() {
            delete_subvolumes(&self.root, std::slice::from_ref(&path))?;
        }
        btrfs::create_subvolume(&path, None).map_err(io_err("create subvolume", &path))?;
        Ok(path)
    }

    /// Makes a finished build read-only and publishes it under the image's name. Atomic: the
    /// image is either absent or complete.
    pub fn commit_image_build(&self, build: &Path, image: &ImageRef) -> Result<(), StorageError> {
        btrfs::set_read_only(build).map_err(io_err("make read-only", build))?;
        let dest = self.image_path(image);
        fs::rename(build, &dest).map_err(|e| {
            StorageError::Io(IoError {
                action: "publish image",
                path: dest.clone(),
                source: e,
            })
        })
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
        delete_subvolumes(&self.root, &[path])
    }

    fn remove_partial_builds(&self) -> Result<(), StorageError> {
        let dir = self.images_dir();
        let entries = fs::read_dir(&dir).map_err(|e| {
            StorageError::Io(IoError {
                action: "list",
                path: dir.clone(),
                source: e,
            })
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(pid) = name.strip_prefix(".build-") else {
                continue;
            };
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

/// Deleting a sandbox drops a snapshot that shares most of its tree with its image. Above
/// `drop_subtree_threshold` levels btrfs skips the qgroup accounting of such a drop and marks all
/// quota data inconsistent, which stops limits from being enforced until a rescan; the kernel
/// default (3) is below the height of an image's tree, so account every level (8, the maximum).
/// The knob is per mount and not persistent, hence set on every open.
fn set_drop_subtree_threshold(root: &Path) {
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
fn delete_subvolumes(root: &Path, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        match btrfs::delete_subvolume_tree(root, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete subvolume", path)(e)),
        }
    }
    Ok(())
}

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
            Err(e) => return Err(io_err("create", &dir)(e)),
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
        // btrfs needs to reserve space to delete a subvolume, and refuses with EDQUOT when the
        // subvolume is at its limit (a sandbox that filled its disk): lift the limits first.
        // (Full qgroups only; simple quotas delete at the limit, and this is cheap.)
        if self.quota != QuotaMode::Off {
            match btrfs::subvolume_tree(&self.root, &rootfs) {
                Ok(ids) => {
                    for qgroup in ids {
                        if let Err(e) = btrfs::set_limit_by_id(&self.root, qgroup, None) {
                            tracing::warn!(error = %e, sandbox = %id, qgroup, "failed to lift a disk limit before delete");
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, sandbox = %id, "failed to list the subvolumes of a sandbox before delete");
                }
            }
        }
        // Whole subvolumes go at once: no directory of the sandbox's is walked, so neither the
        // depth nor the size of what it wrote matters.
        delete_subvolumes(&self.root, &[rootfs])?;
        // The sandbox's dir holds nothing but the rootfs. rmdir neither follows a symlink nor
        // descends into anything.
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    fn list_rootfs(&self) -> Result<Vec<SandboxId>, StorageError> {
        let dir = self.sandboxes_dir();
        let entries = fs::read_dir(&dir).map_err(|e| {
            StorageError::Io(IoError {
                action: "list",
                path: dir.clone(),
                source: e,
            })
        })?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect())
    }
}

impl BtrfsStorage {
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
        btrfs::snapshot(src, &rootfs, Some(disk_bytes)).map_err(io_err("snapshot", &rootfs))?;
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
            Err(e) => return Err(io_err("clear", &tmp)(e)),
        }
        btrfs::create_subvolume(&tmp, Some(disk_bytes))
            .map_err(io_err("create subvolume", &tmp))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
                .map_err(io_err("chmod", &tmp))?;
        }
        Ok(rootfs)
    }
}

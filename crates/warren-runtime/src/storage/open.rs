//! Opening the store: mounting the pool, settling its quota mode, cleaning up after crashes.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fs_err as fs;
use nix::fcntl::{Flock, FlockArg};
use warren_btrfs::{self as btrfs, QuotaMode};

use super::error::{StorageError, io_err};
use super::pool::{
    POOL_IMAGE, PRIVATE_FILE, ensure_pool_image, is_btrfs, make_private_dir, make_private_file,
    secure_pool_mount, set_drop_subtree_threshold,
};
use super::store::{BtrfsStorage, Storage};
use crate::io_error::IoError;
use crate::tool;

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
            .map_err(io_err("open the storage lock", &lock_path))?;
        make_private_file(&lock_path)?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| {
            StorageError::Io(IoError {
                action: "take the storage lock",
                path: lock_path.clone(),
                source: e.into(),
            })
        })?;
        fs::create_dir_all(&root).map_err(io_err("create the pool mount point", &root))?;
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
        if image.exists() {
            super::pool::use_buffered_io(&image);
        }
        // An image made by an older version was world-readable (0644): the sandboxes' files.
        if image.exists() {
            make_private_file(&image)?;
        }
        let own_pool = image.exists();
        let mut store = Self {
            root,
            quota: QuotaMode::Off,
            default_build: std::sync::Mutex::default(),
            generations: std::sync::Mutex::default(),
            rw_templates: std::sync::Mutex::default(),
        };
        store.quota = store.ensure_quotas(own_pool)?;
        if store.quota == QuotaMode::Full && mounted_now {
            store.check_quotas()?;
        }
        for dir in [
            store.images_dir(),
            store.sandboxes_dir(),
            store.volumes_dir(),
            store.templates_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create the store dir", &dir))?;
        }
        store.remove_partial_builds()?;
        store.prune_rw_templates();
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
            for sub in [self.rw_path(&id), rootfs.join("tmp"), rootfs] {
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
    /// `set_drop_subtree_threshold`) and rescans quota numbers a crash left inconsistent. Done
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
}

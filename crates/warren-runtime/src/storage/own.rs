//! What a sandbox has beside its rootfs in the [`crate::storage::TmpLayout::Beside`] layout: the
//! `rw` subvolume (its `/tmp`, and its copy of the image's `/etc/ssl/certs`), and the runtime's
//! files the jail binds read-only over the image's (its machine id and resolver).
//!
//! Each `rw` is a snapshot of its image's template (`templates/<image>.<subvolume id>`, made
//! at the image's first create): one O(1) snapshot instead of copying the ~300 entries of a
//! certs directory per create. The template is tiny, so a sandbox's writes to its `rw` copy
//! only a couple of shared blocks however many sandboxes share it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use warren_btrfs as btrfs;
use warren_jail::JailFile;
use warren_types::SandboxId;

use super::error::{StorageError, io_err};
use super::pool::delete_subvolumes;
use super::store::BtrfsStorage;

/// The trust store directory every TLS stack of a Debian-like image reads, and where the
/// runtime adds the egress proxy's CA (through the agent, as the sandbox's root).
const CERTS: &str = "etc/ssl/certs";

/// Most entries and bytes of an image's certs directory copied for a sandbox; past them the
/// image keeps its own directory, and the CA goes into the rootfs as it would without a copy.
const CERTS_MAX_ENTRIES: usize = 10_000;
const CERTS_MAX_BYTES: u64 = 64 << 20;

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), StorageError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", path))
}

impl BtrfsStorage {
    /// The `rw` subvolume of a new sandbox in `dir` (limited to `disk_bytes` from its first
    /// moment), from its image at `image`, and the runtime's files.
    pub(super) fn populate_rw(
        &self,
        dir: &Path,
        image: &Path,
        disk_bytes: u64,
    ) -> Result<(), StorageError> {
        let template = self.rw_template(image)?;
        self.snapshot_limited(&template, &dir.join("rw"), disk_bytes)?;
        write_own_files(dir, None)
    }

    /// The image's `rw` template, made now if it has none: an empty `tmp/` (mode 1777) and a
    /// copy of its certs directory, read-only. Named by the image subvolume's id, which a
    /// rebuild of the image changes; a template of an earlier build is deleted here.
    fn rw_template(&self, image: &Path) -> Result<PathBuf, StorageError> {
        let name = image.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            io_err("name the template of", image)(std::io::ErrorKind::InvalidInput.into())
        })?;
        let id = btrfs::subvolume_id(image).map_err(io_err("read the subvolume id of", image))?;
        let path = self.templates_dir().join(format!("{name}.{id}"));
        if path.is_dir() {
            return Ok(path);
        }
        let _held = self
            .rw_templates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if path.is_dir() {
            return Ok(path);
        }
        self.remove_rw_templates(name, Some(&path))?;
        let build = self.templates_dir().join(format!(
            ".build-{}.{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let made = (|| {
            btrfs::create_subvolume(&build, None)
                .map_err(io_err("create the subvolume", &build))?;
            let tmp = build.join("tmp");
            std::fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
            set_mode(&tmp, 0o1777)?;
            copy_certs(image, &build.join("certs"))?;
            btrfs::set_read_only(&build).map_err(io_err("make read-only", &build))?;
            std::fs::rename(&build, &path).map_err(io_err("publish the template", &path))
        })();
        if made.is_err() {
            let _ = delete_subvolumes(&self.root, std::slice::from_ref(&build));
        }
        made.map(|()| path)
    }

    /// Deletes the `rw` templates of the image stored as `name`, but `keep`.
    pub(super) fn remove_rw_templates(
        &self,
        name: &str,
        keep: Option<&Path>,
    ) -> Result<(), StorageError> {
        let dir = self.templates_dir();
        let entries = std::fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        let prefix = format!("{name}.");
        let stale: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.file_name().to_str().is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .map(|e| e.path())
            .filter(|p| Some(p.as_path()) != keep)
            .collect();
        delete_subvolumes(&self.root, &stale)
    }

    /// What the jail mounts of the sandbox's own over its rootfs: its `/tmp`, its files, with
    /// the resolver (when the sandbox is linked to the host) written for this boot, and its
    /// certs directory. A sandbox in the nested layout has none of them.
    pub(crate) fn jail_mounts(
        &self,
        id: &SandboxId,
        nameserver: Option<std::net::Ipv4Addr>,
    ) -> Result<(Option<PathBuf>, Vec<JailFile>), StorageError> {
        let rw = self.rw_path(id);
        if !btrfs::is_subvolume(&rw) {
            return Ok((None, Vec::new()));
        }
        let own = self.own_files_dir(id);
        let mut files = vec![JailFile {
            host_path: own.join("machine-id"),
            path: "/etc/machine-id".into(),
            only_over_empty: true,
            read_only: true,
        }];
        if let Some(nameserver) = nameserver {
            let resolv = own.join("resolv.conf");
            std::fs::write(&resolv, warren_proto::resolv_conf(nameserver))
                .map_err(io_err("write", &resolv))?;
            files.push(JailFile {
                host_path: resolv,
                path: "/etc/resolv.conf".into(),
                only_over_empty: false,
                read_only: true,
            });
        }
        // `rw` holds only what the runtime made in it: the sandbox reaches its `tmp` and
        // `certs` subtrees, never their names.
        let certs = rw.join("certs");
        if certs.is_dir() {
            files.push(JailFile {
                host_path: certs,
                path: format!("/{CERTS}"),
                only_over_empty: false,
                read_only: false,
            });
        }
        Ok((Some(rw.join("tmp")), files))
    }
}

/// Copies the image's certs directory (its symlinks as symlinks, its regular files; nothing
/// else) to `dest`, where the sandbox's trust store then lives: adding the proxy's CA, and
/// `update-ca-certificates` (which renames its new bundle into the directory), write there
/// instead of into the rootfs. Images are read-only subvolumes, so what is checked here stays
/// so; no link of the image's is followed on the host.
fn copy_certs(image: &Path, dest: &Path) -> Result<(), StorageError> {
    let mut src = image.to_owned();
    for part in CERTS.split('/') {
        src.push(part);
        match std::fs::symlink_metadata(&src) {
            Ok(m) if m.file_type().is_dir() => {}
            // No certs directory of its own (or a link there): nothing to copy.
            _ => return Ok(()),
        }
    }
    let entries = std::fs::read_dir(&src).map_err(io_err("list", &src))?;
    let mut plan = Vec::new();
    let mut bytes = 0u64;
    for entry in entries {
        let entry = entry.map_err(io_err("list", &src))?;
        let meta = entry.metadata().map_err(io_err("inspect", &entry.path()))?;
        if meta.file_type().is_file() {
            bytes = bytes.saturating_add(meta.len());
        } else if !meta.file_type().is_symlink() {
            continue;
        }
        plan.push((entry.file_name(), meta));
        if plan.len() > CERTS_MAX_ENTRIES || bytes > CERTS_MAX_BYTES {
            return Ok(());
        }
    }
    std::fs::create_dir(dest).map_err(io_err("create", dest))?;
    set_mode(
        dest,
        std::fs::symlink_metadata(&src).map_or(0o755, |m| m.permissions().mode()),
    )?;
    for (name, meta) in plan {
        let (from, to) = (src.join(&name), dest.join(&name));
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from).map_err(io_err("read the link", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("create the link", &to))?;
        } else {
            // A reflink on btrfs: the copy shares the image's extents.
            std::fs::copy(&from, &to).map_err(io_err("copy to", &to))?;
            set_mode(&to, meta.permissions().mode() & 0o7777 & !0o6000)?;
        }
    }
    Ok(())
}

/// The sandbox's own files in `<dir>/etc`, which the jail binds read-only over the rootfs's:
/// its machine id (`id`, or a new one), and an empty resolv.conf the driver fills at each boot.
pub(super) fn write_own_files(dir: &Path, id: Option<&[u8]>) -> Result<(), StorageError> {
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
        set_mode(&path, mode)?;
    }
    Ok(())
}

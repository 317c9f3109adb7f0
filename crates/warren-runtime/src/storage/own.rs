//! What a sandbox has beside its rootfs in the [`crate::storage::TmpLayout::Beside`] layout: the
//! `rw` subvolume (its `/tmp`, its copy of the image's `/etc/ssl/certs`, and its `/etc/hosts`
//! and `/etc/hostname`), and the runtime's files the jail binds read-only over the image's (its
//! machine id and resolver).
//!
//! Each `rw` is a snapshot of its image's template (`templates/<image>.<subvolume id>`, made
//! at the image's first create): one O(1) snapshot instead of copying the ~300 entries of a
//! certs directory per create. The template is tiny, so a sandbox's writes to its `rw` copy
//! only a couple of shared blocks however many sandboxes share it.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use warren_btrfs as btrfs;
use warren_jail::JailFile;
use warren_types::{ImageRef, SandboxId};

use super::error::{StorageError, io_err};
use super::pool::delete_subvolumes;
use super::store::{BtrfsStorage, Storage, TmpLayout};

/// The trust store directory every TLS stack of a Debian-like image reads, and where the
/// runtime adds the egress proxy's CA.
const CERTS: &str = "etc/ssl/certs";

/// The trust store's file in the certs directory: `network::TRUST_STORE` in the sandbox.
const BUNDLE: &str = "ca-certificates.crt";

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
        let rw = dir.join("rw");
        // A rebuild of the image may delete the template found a moment ago: find it again.
        let mut template = self.rw_template(image)?;
        let mut retried = false;
        loop {
            match self.snapshot_limited(&template, &rw, disk_bytes) {
                Err(StorageError::Io(e)) if e.source.kind() == ErrorKind::NotFound && !retried => {
                    retried = true;
                    template = self.rw_template(image)?;
                }
                other => break other?,
            }
        }
        write_own_files(dir, None)
    }

    /// [`Storage::create_rootfs`], then `cas` (PEM: the CAs a linked sandbox trusts) added to
    /// the new sandbox's trust store, its copy of the image's bundle, before anything of the
    /// tenant's has run. Returns whether they were added: a sandbox without a copy (the nested
    /// layout, an image without a certs directory or bundle) gets them through its agent at
    /// boot, as a restarted sandbox does.
    pub(crate) fn create_trusting(
        &self,
        id: &SandboxId,
        image: &ImageRef,
        disk_bytes: u64,
        layout: TmpLayout,
        cas: Option<&[u8]>,
    ) -> Result<(PathBuf, bool), StorageError> {
        let rootfs = self.create_rootfs(id, image, disk_bytes, layout)?;
        let Some(cas) = cas.filter(|c| !c.is_empty()) else {
            return Ok((rootfs, cas.is_some()));
        };
        let bundle = self.rw_path(id).join("certs").join(BUNDLE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&bundle);
        let mut file = match file {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
            Ok(_) => return Ok((rootfs, false)),
            // Missing, or a link: the image's own, left to the agent.
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                return Ok((rootfs, false));
            }
            Err(e) => return Err(io_err("open the trust store", &bundle)(e)),
        };
        // Appending keeps the image's part of the bundle shared with the template.
        let mut last = [0u8; 1];
        let len = file.metadata().map_err(io_err("inspect", &bundle))?.len();
        if len > 0 {
            file.read_exact_at(&mut last, len - 1)
                .map_err(io_err("read", &bundle))?;
        }
        let sep: &[u8] = if len > 0 && last[0] != b'\n' {
            b"\n"
        } else {
            b""
        };
        file.write_all(&[sep, cas].concat())
            .map_err(io_err("add the sandbox's CAs to", &bundle))?;
        Ok((rootfs, true))
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

    /// Deletes the templates of images that are gone or were rebuilt since (at open, before
    /// any create: a failure is only logged).
    pub(super) fn prune_rw_templates(&self) {
        let dir = self.templates_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((image, id)) = name.to_str().and_then(|n| n.rsplit_once('.')) else {
                continue;
            };
            if image.starts_with(".build-") {
                continue;
            }
            let current = btrfs::subvolume_id(&self.images_dir().join(image)).ok();
            if current.map(|c| c.to_string()).as_deref() != Some(id)
                && let Err(e) = delete_subvolumes(&self.root, &[entry.path()])
            {
                tracing::warn!(error = %e, template = %entry.path().display(), "failed to delete a stale template");
            }
        }
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
    /// the resolver (when the sandbox is linked to the host) written for this boot, its certs
    /// directory, and its `/etc/hosts` and `/etc/hostname` naming it `hostname` at `address`
    /// for this boot. A sandbox in the nested layout has none of them.
    pub(crate) fn jail_mounts(
        &self,
        id: &SandboxId,
        nameserver: Option<std::net::Ipv4Addr>,
        hostname: &str,
        address: std::net::IpAddr,
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
            set_mode(&resolv, 0o644)?;
            files.push(JailFile {
                host_path: resolv,
                path: "/etc/resolv.conf".into(),
                only_over_empty: false,
                read_only: true,
            });
        }
        // `rw` holds only what the runtime made in it: the sandbox reaches its `tmp` and
        // `certs` subtrees and its names files, never their names.
        files.extend(super::names::write_names(
            &self.rootfs_path(id),
            &rw,
            hostname,
            address,
        ));
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

/// Copies the image's certs directory (directories, symlinks as symlinks and regular files,
/// nothing else; at most [`CERTS_MAX_ENTRIES`] entries and [`CERTS_MAX_BYTES`]) to `dest`,
/// where the sandbox's trust store then lives: adding the proxy's CA, and
/// `update-ca-certificates` (which renames its new bundle into the directory), write there
/// instead of into the rootfs. No link of the image's is followed on the host: an image is
/// untrusted. A directory over the limits is not copied, and the image keeps its own.
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
    let mut plan = Vec::new();
    if !plan_copy(&src, Path::new(""), &mut plan, &mut 0)? {
        return Ok(());
    }
    std::fs::create_dir(dest).map_err(io_err("create", dest))?;
    for (rel, meta) in plan {
        let (from, to) = (src.join(&rel), dest.join(&rel));
        let mode = meta.permissions().mode() & 0o1777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from).map_err(io_err("read the link", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("create the link", &to))?;
        } else if meta.file_type().is_dir() {
            std::fs::create_dir(&to).map_err(io_err("create", &to))?;
            set_mode(&to, mode)?;
        } else {
            let mut input = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&from)
                .map_err(io_err("open", &from))?;
            let mut output = std::fs::File::create_new(&to).map_err(io_err("create", &to))?;
            // copy_file_range: on btrfs a reflink, sharing the image's extents.
            std::io::copy(&mut input, &mut output).map_err(io_err("copy to", &to))?;
            set_mode(&to, mode)?;
        }
    }
    Ok(())
}

/// Lists what [`copy_certs`] copies under `dir` (`rel` below the certs directory), parents
/// first; `false` once past the limits.
fn plan_copy(
    root: &Path,
    rel: &Path,
    plan: &mut Vec<(PathBuf, std::fs::Metadata)>,
    bytes: &mut u64,
) -> Result<bool, StorageError> {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(io_err("list", &dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", &dir))?;
        let meta = entry.metadata().map_err(io_err("inspect", &entry.path()))?;
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        if kind.is_file() {
            *bytes = bytes.saturating_add(meta.len());
        }
        let child = rel.join(entry.file_name());
        plan.push((child.clone(), meta));
        if plan.len() > CERTS_MAX_ENTRIES || *bytes > CERTS_MAX_BYTES {
            return Ok(false);
        }
        if kind.is_dir() && !plan_copy(root, &child, plan, bytes)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The sandbox's own files in `<dir>/etc`, which the jail binds read-only over the rootfs's:
/// its machine id (`id`, or a new one). Its resolver is written at each boot of a linked sandbox
/// (see `jail_mounts`).
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
    let path = own.join("machine-id");
    std::fs::write(&path, id).map_err(io_err("write", &path))?;
    set_mode(&path, 0o444)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certs_copy_keeps_files_links_and_subdirectories_and_follows_nothing() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = |tag: &str| {
            let d = scratch.path().join(tag);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let image = dir("image");
        let certs = image.join(CERTS);
        std::fs::create_dir_all(certs.join("java")).unwrap();
        std::fs::write(certs.join(BUNDLE), "bundle\n").unwrap();
        std::fs::write(certs.join("java/cacerts"), "keystore").unwrap();
        std::os::unix::fs::symlink("/usr/share/ca-certificates/a.crt", certs.join("a.pem"))
            .unwrap();
        // A link to a host file is copied as a link, never read.
        std::os::unix::fs::symlink("/etc/shadow", certs.join("shadow.pem")).unwrap();
        nix::unistd::mkfifo(&certs.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let dest = dir("dest").join("certs");
        copy_certs(&image, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join(BUNDLE)).unwrap(),
            "bundle\n"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("java/cacerts")).unwrap(),
            "keystore"
        );
        assert_eq!(
            std::fs::read_link(dest.join("shadow.pem")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert!(std::fs::read_link(dest.join("a.pem")).is_ok());
        assert!(!dest.join("fifo").exists(), "no special files");

        // An image whose certs directory is a link has no copy made.
        let linked = dir("linked");
        std::fs::create_dir_all(linked.join("etc/ssl")).unwrap();
        std::os::unix::fs::symlink(&certs, linked.join(CERTS)).unwrap();
        let none = dir("none").join("certs");
        copy_certs(&linked, &none).unwrap();
        assert!(!none.exists());
    }
}

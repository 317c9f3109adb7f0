//! Volumes in the jail spec, and the rules for where in a sandbox one may be mounted.
//!
//! A mount path names a place in the tenant's rootfs: the jail resolves it one component at a
//! time beneath the new root, never following a symlink (see `inside::volumes`). What is
//! checked here is what no rootfs can make safe: relative paths, `..`, and the places the jail
//! mounts itself or that must stay as the jail made them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Most volumes one sandbox may mount (each is one fd passed to the jailed child).
pub const MAX_VOLUMES: usize = 16;

/// Longest mount path, in bytes (PATH_MAX less the NUL).
const MAX_MOUNT_PATH: usize = 4095;

/// Longest path component, in bytes (NAME_MAX).
const MAX_NAME: usize = 255;

/// Top-level directories a volume may not be mounted on or beneath: the jail's own `/proc`,
/// `/dev` and `/sys` (LXCFS's view), and `/tmp`, the sandbox's own subvolume.
const RESERVED: [&str; 4] = ["proc", "sys", "dev", "tmp"];

/// Where the runtime binds a sandbox's own copy of its trust store: a volume may not be mounted
/// on or beneath it (its mount point would lie on that bind).
const TRUST_STORE: [&str; 3] = ["etc", "ssl", "certs"];

/// A volume the jail mounts into the sandbox: a host directory (a btrfs subvolume whose files
/// are owned by the image's ids, like the rootfs), idmapped like the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailVolume {
    /// Host path of the volume's directory (trusted: from the runtime).
    pub host_path: PathBuf,
    /// Absolute path in the sandbox (tenant-chosen: see [`mount_path_components`]).
    pub mount_path: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// Most files the jail binds over the rootfs's own ([`JailFile`]).
pub const MAX_FILES: usize = 8;

/// A host file or directory the jail binds over the rootfs's own at `path`, idmapped like the
/// rootfs: how a sandbox gets its resolver, machine id, names and trust store without a write
/// to its rootfs. Every sandbox of an image shares the image's tree blocks, and the first write
/// to any of them
/// copies the path to it, each copy adding a back-reference per shared child block: at 1,000
/// sandboxes of one image, a create that wrote `/etc` cost 40 ms of btrfs commit instead of 7.
/// It is bound only where the rootfs has the same kind of thing at `path` (a regular file, a
/// directory; never followed, never created): an image without one, or with a symlink there,
/// keeps its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailFile {
    /// Host path of the file (trusted: from the runtime).
    pub host_path: PathBuf,
    /// Absolute path in the sandbox (checked like a volume's mount path).
    pub path: String,
    /// Bind only over an empty file (an image's blank `/etc/machine-id`): a file with content
    /// is the image's own and stays.
    pub only_over_empty: bool,
    /// Bind read-only (the runtime's files); otherwise the sandbox may write there.
    pub read_only: bool,
}

/// Checks a spec's files: at most [`MAX_FILES`], host paths absolute, paths valid mount paths.
pub fn check_files(files: &[JailFile]) -> Result<(), &'static str> {
    if files.len() > MAX_FILES {
        return Err("holds more than 8 files");
    }
    for f in files {
        if !f.host_path.is_absolute() || f.host_path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err("holds a host path that is not absolute without NUL bytes");
        }
        mount_path_components(&f.path)?;
    }
    Ok(())
}

/// The components of a volume's mount path, or why it is refused: it must be absolute, at most
/// 4095 bytes with components of at most 255, hold no NUL, no `.` or `..` component, and not be
/// `/` or on or beneath `/proc`, `/sys`, `/dev` or `/tmp`. Repeated and trailing slashes are
/// ignored.
pub fn mount_path_components(path: &str) -> Result<Vec<&str>, &'static str> {
    if !path.starts_with('/') {
        return Err("is not an absolute path");
    }
    if path.len() > MAX_MOUNT_PATH {
        return Err("is longer than 4095 bytes");
    }
    if path.contains('\0') {
        return Err("holds a NUL byte");
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err("holds a . or .. component");
    }
    if parts.iter().any(|c| c.len() > MAX_NAME) {
        return Err("has a component longer than 255 bytes");
    }
    match parts.first() {
        None => Err("is the sandbox's root"),
        Some(top) if RESERVED.contains(top) => Err("is on or beneath /proc, /sys, /dev or /tmp"),
        Some(_) => Ok(parts),
    }
}

/// Checks a spec's volumes together: each mount path valid, at most [`MAX_VOLUMES`], and no
/// mount path equal to or beneath another's (a mount point is never made inside a volume).
pub fn check_volumes(volumes: &[JailVolume]) -> Result<(), &'static str> {
    if volumes.len() > MAX_VOLUMES {
        return Err("holds more than 16 volumes");
    }
    let mut all = Vec::with_capacity(volumes.len());
    for v in volumes {
        if !v.host_path.is_absolute() || v.host_path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err("holds a host path that is not absolute without NUL bytes");
        }
        let parts = mount_path_components(&v.mount_path)?;
        if parts.starts_with(&TRUST_STORE) {
            return Err(
                "holds a mount path on or beneath /etc/ssl/certs, the sandbox's trust store",
            );
        }
        all.push(parts);
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err("holds a mount path on or beneath another");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_mount_paths_are_split_into_components() {
        assert_eq!(mount_path_components("/data"), Ok(vec!["data"]));
        assert_eq!(
            mount_path_components("//home/user//work/"),
            Ok(vec!["home", "user", "work"])
        );
        assert_eq!(mount_path_components("/mnt/..x"), Ok(vec!["mnt", "..x"]));
        assert_eq!(mount_path_components("/temp"), Ok(vec!["temp"]));
        assert_eq!(mount_path_components("/var/tmp"), Ok(vec!["var", "tmp"]));
    }

    #[test]
    fn relative_dotted_and_reserved_mount_paths_are_refused() {
        for bad in [
            "",
            "data",
            "./data",
            "/",
            "///",
            "/data/../etc",
            "/..",
            "/data/./x",
            "/proc",
            "/proc/self",
            "/sys/fs",
            "/dev",
            "/dev/shm",
            "/tmp",
            "/tmp/x",
            "//tmp/",
            "/a\0b",
        ] {
            assert!(mount_path_components(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(mount_path_components(&format!("/{}", "x".repeat(256))).is_err());
        assert!(mount_path_components(&"/x".repeat(2100)).is_err());
    }

    fn vol(path: &str) -> JailVolume {
        JailVolume {
            host_path: "/var/lib/warren/fs/volumes/v".into(),
            mount_path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn volumes_stay_off_the_trust_store() {
        for path in ["/etc/ssl/certs", "/etc/ssl/certs/x"] {
            assert!(check_volumes(&[vol(path)]).is_err(), "{path}");
        }
        for path in ["/etc/ssl", "/etc/ssl/private", "/etc"] {
            assert!(check_volumes(&[vol(path)]).is_ok(), "{path}");
        }
    }

    #[test]
    fn volumes_may_not_nest_or_repeat() {
        assert!(check_volumes(&[vol("/data"), vol("/data2")]).is_ok());
        assert!(check_volumes(&[vol("/data"), vol("/data/")]).is_err());
        assert!(check_volumes(&[vol("/data/sub"), vol("/data")]).is_err());
        assert!(check_volumes(&[vol("/a"), vol("/b"), vol("/a/b/c")]).is_err());
        let many: Vec<_> = (0..17).map(|i| vol(&format!("/v{i}"))).collect();
        assert!(check_volumes(&many).is_err());
        let mut relative = vol("/data");
        relative.host_path = "volumes/v".into();
        assert!(check_volumes(&[relative]).is_err());
    }
}

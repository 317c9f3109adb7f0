//! Images from OCI registries and archives: pulled or read into the layer cache shared by all
//! builds (`<pool>/oci`), unpacked by `warren-oci` (no path escapes, no device nodes, no setuid
//! bits) into a fresh build subvolume, made ready to be a sandbox root, and published
//! read-only.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use warren_driver::{BuildProgress, BuiltImage, ImageSource};
use warren_oci::{BlobCache, Credentials, Phase, Progress, UnpackLimits};
use warren_types::ImageRef;

use crate::driver::DriverError;
use crate::io_error::IoError;
use crate::storage::BtrfsStorage;

fn oci(e: warren_oci::OciError) -> DriverError {
    match e {
        // Host paths stay in the daemon's log.
        warren_oci::OciError::Io { .. } => {
            tracing::warn!(error = %e, "image build failed on the host");
            DriverError::Image("the server failed to store the image's files".into())
        }
        other => DriverError::Image(other.to_string()),
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let at = IoError::at(action, path);
    move |e| DriverError::Io(at(e))
}

fn describe(p: &Progress) -> String {
    let short = p.digest.strip_prefix("sha256:").unwrap_or(&p.digest);
    let short = &short[..short.len().min(12)];
    match p.phase {
        Phase::Manifest => "fetching the manifest".into(),
        Phase::Config => "fetching the config".into(),
        Phase::Layer => format!(
            "pulling layer {short}: {} of {} MiB",
            p.done >> 20,
            p.total >> 20
        ),
        Phase::Cached => format!("layer {short} is cached"),
        Phase::Done => format!("layer {short} done"),
    }
}

/// Builds `image` from `source` (see [`warren_driver::Driver::build_image`]).
pub(crate) async fn build(
    storage: &BtrfsStorage,
    image: &ImageRef,
    source: &ImageSource,
    max_bytes: u64,
    progress: &BuildProgress,
) -> Result<BuiltImage, DriverError> {
    let cache_dir = storage.root().join("oci");
    let cache = BlobCache::open(&cache_dir).map_err(oci)?;
    let pulled = match source {
        ImageSource::Registry {
            reference,
            credentials,
        } => {
            let creds = credentials.as_ref().map(|(u, p)| Credentials {
                username: u.clone(),
                password: p.clone(),
            });
            warren_oci::pull(reference, creds.as_ref(), &cache, &[], &|p| {
                progress(describe(&p));
            })
            .await
            .map_err(oci)?
        }
        ImageSource::Archive(path) => {
            progress(format!("reading {}", path.display()));
            let (path, cache) = (path.clone(), cache.clone());
            tokio::task::spawn_blocking(move || warren_oci::import(&path, &cache))
                .await
                .map_err(|e| DriverError::Image(e.to_string()))?
                .map_err(oci)?
        }
    };
    progress(format!("unpacking {} layers", pulled.layers.len()));
    let build = storage.begin_named_build()?;
    let limits = UnpackLimits {
        max_bytes,
        ..UnpackLimits::default()
    };
    let unpacked = {
        let (img, cache, dir) = (pulled.clone(), cache.clone(), build.clone());
        tokio::task::spawn_blocking(move || -> Result<u64, DriverError> {
            let stats = warren_oci::unpack(&img, &cache, &dir, &limits).map_err(oci)?;
            make_sandbox_root(&dir)?;
            Ok(stats.bytes)
        })
        .await
        .map_err(|e| DriverError::Image(e.to_string()))
        .and_then(|r| r)
    };
    let bytes = match unpacked {
        Ok(b) => b,
        Err(e) => {
            let _ = storage.abort_image_build(&build);
            return Err(e);
        }
    };
    if let Err(e) = storage.commit_image_build(&build, image) {
        let _ = storage.abort_image_build(&build);
        return Err(e.into());
    }
    let c = pulled.config;
    Ok(BuiltImage {
        digest: pulled.manifest_digest.as_str().to_owned(),
        user: c.user,
        workdir: c.workdir,
        env: c.env,
        entrypoint: c.entrypoint,
        cmd: c.cmd,
        unpacked_bytes: bytes,
    })
}

/// What the jail needs of an image it did not make: mount points, and a hosts file, a
/// hostname, and an empty resolv.conf and machine-id it binds each sandbox's own over. The tree came from an image, so any of
/// these may be a symlink (pointing anywhere on the host) or a file: nothing here follows a
/// link. `etc` itself must be a real directory; an image whose `etc` is a link is refused.
fn make_sandbox_root(root: &Path) -> Result<(), DriverError> {
    for (dir, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("etc", 0o755),
    ] {
        let p = root.join(dir);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if dir == "etc" && m.file_type().is_symlink() => {
                return Err(DriverError::Image(
                    "the image's /etc is a symbolic link; Warren needs a real /etc".into(),
                ));
            }
            Ok(m) if dir != "etc" || !m.file_type().is_dir() => {
                // A link or a file where a mount point goes: replaced, never followed.
                std::fs::remove_file(&p).map_err(io("replace the mount point", &p))?;
                std::fs::create_dir(&p).map_err(io("create the mount point", &p))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).map_err(io("create the mount point", &p))?;
            }
            Err(e) => return Err(io("inspect the mount point", &p)(e)),
        }
        if dir != "etc" {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io("set the mode of the mount point", &p))?;
        }
    }
    for (file, text) in [
        ("etc/hosts", warren_proto::HOSTS_BASE),
        ("etc/hostname", "sandbox\n"),
        ("etc/resolv.conf", ""),
        ("etc/machine-id", ""),
    ] {
        let p = root.join(file);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {
                std::fs::remove_dir_all(&p).map_err(io("replace", &p))?;
            }
            Ok(_) => std::fs::remove_file(&p).map_err(io("replace", &p))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspect", &p)(e)),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(io("write", &p))?;
        f.write_all(text.as_bytes()).map_err(io("write", &p))?;
    }
    Ok(())
}

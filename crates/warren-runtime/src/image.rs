//! Images: the default image, built locally from Debian's packages so a fresh machine needs no
//! container registry. (Pulling any OCI image from a registry plugs in beside this later.)
//!
//! The default image is what a Python or Node user expects of a general-purpose image: python3
//! with pip usable as root (no PEP 668 marker, as in the official `python` images), `uv`, `node`
//! and `npm`, and apt with Debian's sources. Everything comes from Debian's archive except `uv`,
//! which Debian bookworm does not package: it comes from its PyPI wheel, pinned by version and
//! sha256. The image records the recipe it was built from, and a data dir whose default image
//! came from another recipe rebuilds it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use warren_types::ImageRef;

use crate::io_error::IoError;
use crate::jail_driver::JailDriver;
use crate::storage::{BtrfsStorage, BuildState, Storage, StorageError};

pub(crate) mod oci;
mod uv;

pub use uv::UV_VERSION;
use uv::UvFiles;

/// Image build failures.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The bootstrap tool could not be started.
    #[error("failed to build an image with mmdebstrap (install it: apt-get install mmdebstrap)")]
    Spawn(#[source] IoError),
    /// The bootstrap failed.
    #[error("failed to build image {image}: mmdebstrap exited with {status}; last output: {tail}")]
    Bootstrap {
        /// The image.
        image: ImageRef,
        /// Exit status.
        status: std::process::ExitStatus,
        /// The last lines it printed.
        tail: String,
    },
    /// Finishing the root filesystem failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// python3 could not be started to fetch or unpack uv.
    #[error("failed to fetch uv with python3 -m pip (install it: apt-get install python3-pip)")]
    PythonSpawn(#[source] IoError),
    /// pip failed to fetch the uv wheel.
    #[error(
        "failed to fetch uv {version} from PyPI: pip exited with {status}; last output: {tail}"
    )]
    Fetch {
        /// The pinned uv version.
        version: &'static str,
        /// Exit status.
        status: ExitStatus,
        /// The last lines it printed.
        tail: String,
    },
    /// pip saved no wheel, or more than one.
    #[error("failed to fetch uv {version} from PyPI: pip saved {count} wheels, expected one")]
    WheelCount {
        /// The pinned uv version.
        version: &'static str,
        /// How many it saved.
        count: usize,
    },
    /// The fetched wheel is not the pinned one: the registry's answer is not trusted.
    #[error("failed to verify the uv wheel {wheel}: its sha256 is {actual}, expected {expected}")]
    Checksum {
        /// The wheel's file name.
        wheel: String,
        /// The pinned sha256.
        expected: &'static str,
        /// The sha256 of what was fetched.
        actual: String,
    },
    /// Unpacking the verified wheel failed.
    #[error("failed to unpack the uv wheel: python3 exited with {status}; last output: {tail}")]
    Unpack {
        /// Exit status.
        status: ExitStatus,
        /// The last lines it printed.
        tail: String,
    },
    /// No uv wheel is pinned for the host's architecture.
    #[error("failed to fetch uv: no wheel is pinned for the {0} architecture")]
    UnsupportedArch(&'static str),
    /// Only the default image can be built locally for now.
    #[error("image {0} cannot be built locally; only {default} can", default = ImageRef::default_image())]
    NotBuildable(ImageRef),
}

/// Debian suite of the default image.
pub const DEFAULT_SUITE: &str = "bookworm";

/// Packages of the default image on top of Debian's minimal base.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "bash",
    "ca-certificates",
    "coreutils",
    "curl",
    "findutils",
    "git",
    "grep",
    "nodejs",
    "npm",
    "procps",
    "python-is-python3",
    "python3",
    "python3-pip",
    "python3-venv",
    "tar",
    "util-linux",
];

/// Bump when the build changes in a way [`default_image_recipe`] does not show (a step, a dpkg
/// option), so data dirs with the old default image rebuild it.
const IMAGE_REVISION: u32 = 4;

/// Where a built image records its recipe (`/etc/warren-image` inside a sandbox).
const RECIPE_FILE: &str = "etc/warren-image";

/// What the default image is built from. The image keeps a copy; when it differs from this, the
/// image is outdated and [`ensure_default_image`] rebuilds it.
pub fn default_image_recipe() -> String {
    format!(
        "# The recipe Warren built this image from.\n\
         revision {IMAGE_REVISION}\n\
         suite {DEFAULT_SUITE}\n\
         packages {}\n\
         uv {UV_VERSION}\n",
        DEFAULT_PACKAGES.join(" ")
    )
}

/// Whether the default image is present and built from the current recipe. An image from an
/// older recipe (or from before images recorded one) still serves creates until its rebuild
/// replaces it.
pub fn default_image_is_current(storage: &BtrfsStorage) -> bool {
    let recipe = storage
        .image_path(&ImageRef::default_image())
        .join(RECIPE_FILE);
    std::fs::read_to_string(recipe).is_ok_and(|r| r == default_image_recipe())
}

pub use warren_driver::ImageStatus;

impl BtrfsStorage {
    /// Whether sandboxes can be made from `image` now, and if not, why.
    pub fn image_status(&self, image: &ImageRef) -> ImageStatus {
        if self.has_image(image) {
            return ImageStatus::Present;
        }
        if *image != ImageRef::default_image() {
            return ImageStatus::Missing;
        }
        match &*self.build_state() {
            BuildState::Idle => ImageStatus::Missing,
            BuildState::Building => ImageStatus::Building,
            BuildState::Failed(reason) => ImageStatus::Failed(reason.clone()),
        }
    }

    /// Which copy of `image` its name holds now: the id of the subvolume published under it.
    /// Read from the disk, not counted in memory, so a default image rebuilt by another process
    /// (`warren image build` beside a running daemon) is noticed like one this process built;
    /// btrfs never hands a new subvolume an id in use, and the new image is made before the
    /// old one goes. 0 while the name holds no image. A read that fails for another reason
    /// (no descriptor left, say) says nothing about the image: the id read last stands, so a
    /// warm pool does not drop its sandboxes over it.
    pub fn image_generation(&self, image: &ImageRef) -> u64 {
        let read = warren_btrfs::subvolume_id(&self.image_path(image));
        let mut known = self
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = image.storage_name();
        match read {
            Ok(id) => {
                known.insert(name, id);
                id
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                known.remove(&name);
                0
            }
            Err(_) => known.get(&name).copied().unwrap_or(0),
        }
    }

    fn build_state(&self) -> std::sync::MutexGuard<'_, BuildState> {
        // The state is a plain value: a panic while it was held left nothing half-written.
        self.default_build
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_build_state(&self, state: BuildState) {
        *self.build_state() = state;
    }
}

impl ImageError {
    /// What an API client may be told about this failure: the cause without host paths or the
    /// tool's output, which go to the log.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Spawn(_) => "mmdebstrap is not installed on the server".into(),
            Self::Bootstrap { status, .. } => {
                format!("the Debian bootstrap failed ({status}); the server log has its output")
            }
            Self::Storage(_) | Self::Io(_) => {
                "the image store failed; the server log has the cause".into()
            }
            Self::PythonSpawn(_) => "python3 with pip is not installed on the server".into(),
            Self::Fetch { .. } | Self::WheelCount { .. } | Self::Unpack { .. } => {
                "fetching uv from PyPI failed; the server log has the cause".into()
            }
            Self::Checksum { .. } => {
                "the uv wheel from PyPI does not match its pinned sha256".into()
            }
            Self::UnsupportedArch(arch) => format!("no uv wheel is pinned for {arch}"),
            Self::NotBuildable(image) => format!("image {image} cannot be built locally"),
        }
    }
}

/// The first retry of a failed background build waits this long; each next one twice as long,
/// up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(15);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Builds the default image on a thread of its own unless it is present and current, and
/// retries a failed build (15 s, then doubling up to 10 min) until one succeeds. Returns at
/// once; until a missing image is published, [`BtrfsStorage::image_status`] says `Building` or
/// `Failed`, so a daemon can serve everything else and refuse creates from the default image
/// with a reason. An outdated image keeps serving creates until its rebuild replaces it.
/// Progress goes to the log (`info`, field `step`). Returns whether a build was started.
pub fn build_default_image_in_background(driver: JailDriver) -> bool {
    let image = ImageRef::default_image();
    if default_image_is_current(driver.storage()) {
        return false;
    }
    let outdated = driver.storage().has_image(&image);
    // Set before the thread starts: no create may see the image as simply missing.
    driver.storage().set_build_state(BuildState::Building);
    let builder = driver.clone();
    let spawned = std::thread::Builder::new()
        .name("default-image".into())
        .spawn(move || {
            let mut delay = FIRST_RETRY_DELAY;
            loop {
                if outdated {
                    tracing::warn!(%image, "the default image is from an older recipe: rebuilding it; creates use the old one until the new one is ready");
                } else {
                    tracing::warn!(%image, "the default image is missing: building it; creates from it answer 503 until it is ready");
                }
                let began = Instant::now();
                let mut progress = |line: &str| tracing::info!(%image, step = line, "building the default image");
                match ensure_default_image(builder.storage(), &mut progress) {
                    Ok(_) => {
                        tracing::info!(%image, secs = began.elapsed().as_secs(), "default image built");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(%image, error = %error_chain(&e), retry_in_secs = delay.as_secs(), "failed to build the default image");
                    }
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "failed to start the default image build");
        driver.storage().set_build_state(BuildState::Failed(
            "the server could not start the build".into(),
        ));
        return false;
    }
    true
}

/// An error with its causes on one line, for the log (host paths in it stay in the log, never
/// in an API answer).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    warren_jail::one_line(e)
}

/// Builds the default image unless it is present and current (an outdated one is replaced).
/// `progress` gets one line per build step. Returns whether it built.
pub fn ensure_default_image(
    storage: &BtrfsStorage,
    progress: &mut dyn FnMut(&str),
) -> Result<bool, ImageError> {
    let image = ImageRef::default_image();
    if default_image_is_current(storage) {
        return Ok(false);
    }
    if storage.has_image(&image) {
        progress("the image is from an older recipe: rebuilding it");
    }
    build_image(storage, &image, progress)?;
    Ok(true)
}

/// Builds an image from Debian's packages into a fresh subvolume and publishes it atomically.
pub fn build_image(
    storage: &BtrfsStorage,
    image: &ImageRef,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    if *image != ImageRef::default_image() {
        return Err(ImageError::NotBuildable(image.clone()));
    }
    storage.set_build_state(BuildState::Building);
    let result = build_into_store(storage, image, progress);
    storage.set_build_state(match &result {
        Ok(()) => BuildState::Idle,
        Err(e) => BuildState::Failed(e.public_reason()),
    });
    result
}

fn build_into_store(
    storage: &BtrfsStorage,
    image: &ImageRef,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let build = storage.begin_image_build()?;
    let result = build_rootfs(&build, image, progress);
    match result {
        Ok(()) => {
            storage.commit_image_build(&build, image)?;
            Ok(())
        }
        Err(e) => {
            let _ = storage.abort_image_build(&build);
            Err(e)
        }
    }
}

fn build_rootfs(
    root: &Path,
    image: &ImageRef,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    bootstrap(root, image, progress)?;
    finish_rootfs(root)?;
    // Fetched into the build's own /tmp, not the host's: a build killed midway leaves its
    // downloads only inside the build, which the next open of the store deletes.
    UvFiles::fetch(&root.join("tmp"), progress)?.install(root, progress)?;
    let recipe = root.join(RECIPE_FILE);
    std::fs::write(&recipe, default_image_recipe())
        .map_err(IoError::at("write the image's recipe", &recipe))?;
    Ok(())
}

fn bootstrap(
    target: &Path,
    image: &ImageRef,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", DEFAULT_PACKAGES.join(",")))
        // Inside a sandbox every capability is gone, so apt cannot drop to its `_apt` user.
        .arg("--aptopt=APT::Sandbox::User \"root\"")
        // Documentation and translations are a third of a minimal image and no agent reads them.
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--dpkgopt=path-exclude=/usr/share/info/*")
        // dpkg's fsync of every unpacked file is most of the build's time on btrfs, and buys
        // nothing here: an interrupted build is thrown away, and an interrupted install in a
        // sandbox is redone. (Debian's official container images set it too.)
        .arg("--dpkgopt=force-unsafe-io")
        // PEP 668: Debian's marker makes `pip install` refuse outside a venv. A sandbox is a
        // throwaway machine, so pip installs as root like in the official `python` images.
        // Excluded from unpacking rather than deleted, so it stays away when a sandbox
        // upgrades python3 (the option stays in the image's dpkg config).
        .arg("--dpkgopt=path-exclude=/usr/lib/python3*/EXTERNALLY-MANAGED")
        .arg(DEFAULT_SUITE)
        .arg(target);
    if let Ok(mirror) = std::env::var("WARREN_DEBIAN_MIRROR") {
        cmd.arg(mirror);
    }
    let (status, tail) = run_reporting(&mut cmd, progress)
        .map_err(|e| ImageError::Spawn(IoError::at("run", Path::new("mmdebstrap"))(e)))?;
    if !status.success() {
        return Err(ImageError::Bootstrap {
            image: image.clone(),
            status,
            tail,
        });
    }
    Ok(())
}

/// Runs `cmd` with its stderr lines going to `progress` (mmdebstrap's `I: ` prefix dropped).
/// Returns its exit status and its last lines, for the error if it failed.
fn run_reporting(
    cmd: &mut Command,
    progress: &mut dyn FnMut(&str),
) -> std::io::Result<(ExitStatus, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = line.trim().to_owned();
            if line.is_empty() {
                continue;
            }
            progress(line.trim_start_matches("I: "));
            tail.push(line);
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait()?;
    Ok((status, tail.join(" | ")))
}

/// Makes the tree ready to be a sandbox root: mount points the jail needs, a hosts file, and no
/// leftovers of the build host.
fn finish_rootfs(root: &Path) -> Result<(), ImageError> {
    for (dir, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        let p = root.join(dir);
        std::fs::create_dir_all(&p).map_err(IoError::at("create the mount point", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(IoError::at("set the mode of the mount point", &p))?;
    }
    let hosts = root.join("etc/hosts");
    std::fs::write(&hosts, warren_proto::HOSTS_BASE)
        .map_err(IoError::at("write the image's hosts file", &hosts))?;
    let hostname = root.join("etc/hostname");
    std::fs::write(&hostname, "sandbox\n")
        .map_err(IoError::at("write the image's hostname", &hostname))?;
    // A sandbox has no init system: a package's postinst must not try to start its service
    // (invoke-rc.d would run the init script, which switches users the sandbox's root cannot
    // switch to). 101 is "action forbidden by policy", as in Debian's container images; the
    // user starts services themselves.
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(
        &policy,
        "#!/bin/sh\n# Written by Warren: no init system in a sandbox; start services yourself.\nexit 101\n",
    )
    .map_err(IoError::at("write the image's policy-rc.d", &policy))?;
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
        .map_err(IoError::at("set the mode of", &policy))?;
    // Empty files for the jail to bind each sandbox's own over (see `warren_jail::JailFile`).
    for file in ["etc/resolv.conf", "etc/machine-id"] {
        let path = root.join(file);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "").map_err(IoError::at("empty the image's", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_names_every_package_and_the_uv_version() {
        let recipe = default_image_recipe();
        for p in DEFAULT_PACKAGES {
            assert!(recipe.contains(&format!(" {p} ")) || recipe.contains(&format!(" {p}\n")));
        }
        assert!(recipe.contains(&format!("uv {UV_VERSION}\n")));
    }
}

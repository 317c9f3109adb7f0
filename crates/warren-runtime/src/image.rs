//! Images: the default image, built locally from Debian's packages so a fresh machine needs no
//! container registry. (Pulling any OCI image from a registry plugs in beside this later.)

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warren_types::ImageRef;

use crate::io_error::IoError;
use crate::jail_driver::JailDriver;
use crate::storage::{BtrfsStorage, BuildState, Storage, StorageError};

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
    "procps",
    "python-is-python3",
    "python3",
    "python3-pip",
    "python3-venv",
    "tar",
    "util-linux",
];

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
            Self::NotBuildable(image) => format!("image {image} cannot be built locally"),
        }
    }
}

/// The first retry of a failed background build waits this long; each next one twice as long,
/// up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(15);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Builds the default image on a thread of its own unless it is present, and retries a failed
/// build (15 s, then doubling up to 10 min) until one succeeds. Returns at once; until the image
/// is published, [`BtrfsStorage::image_status`] says `Building` or `Failed`, so a daemon can
/// serve everything else and refuse creates from the default image with a reason. Progress goes
/// to the log (`info`, field `step`). Returns whether a build was started.
pub fn build_default_image_in_background(driver: JailDriver) -> bool {
    let image = ImageRef::default_image();
    if driver.storage().has_image(&image) {
        return false;
    }
    // Set before the thread starts: no create may see the image as simply missing.
    driver.storage().set_build_state(BuildState::Building);
    let builder = driver.clone();
    let spawned = std::thread::Builder::new()
        .name("default-image".into())
        .spawn(move || {
            let mut delay = FIRST_RETRY_DELAY;
            loop {
                tracing::warn!(%image, "the default image is missing: building it; creates from it answer 503 until it is ready");
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

/// Builds the default image unless it is present. `progress` gets one line per build step.
pub fn ensure_default_image(
    storage: &BtrfsStorage,
    progress: &mut dyn FnMut(&str),
) -> Result<bool, ImageError> {
    let image = ImageRef::default_image();
    if storage.has_image(&image) {
        return Ok(false);
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
    let result = bootstrap(&build, image, progress).and_then(|()| finish_rootfs(&build));
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
        .arg(DEFAULT_SUITE)
        .arg(target);
    if let Ok(mirror) = std::env::var("WARREN_DEBIAN_MIRROR") {
        cmd.arg(mirror);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Spawn(IoError::at("run", Path::new("mmdebstrap"))(e)))?;
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
    let status = child
        .wait()
        .map_err(|e| ImageError::Spawn(IoError::at("wait for", Path::new("mmdebstrap"))(e)))?;
    if !status.success() {
        return Err(ImageError::Bootstrap {
            image: image.clone(),
            status,
            tail: tail.join(" | "),
        });
    }
    Ok(())
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
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(IoError::at("write the image's hosts file", &hosts))?;
    let hostname = root.join("etc/hostname");
    std::fs::write(&hostname, "sandbox\n")
        .map_err(IoError::at("write the image's hostname", &hostname))?;
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    std::fs::write(&resolv, "").map_err(IoError::at("empty the image's resolv.conf", &resolv))?;
    Ok(())
}

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
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
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

/// The uv release the default image ships in /usr/local/bin.
pub const UV_VERSION: &str = "0.13.9";

/// A pinned uv wheel on PyPI.
struct UvWheel {
    /// The architecture it is for, as `std::env::consts::ARCH` names it.
    arch: &'static str,
    /// The platform tag pip is asked for: the host's own tags could pick another file (musl, a
    /// newer manylinux), whose hash is not pinned.
    platform: &'static str,
    /// sha256 of the wheel file.
    sha256: &'static str,
}

/// The uv wheels of [`UV_VERSION`]. The images are built for the host's architecture, as
/// mmdebstrap does by default.
const UV_WHEELS: &[UvWheel] = &[
    UvWheel {
        arch: "x86_64",
        platform: "manylinux_2_17_x86_64",
        sha256: "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    },
    UvWheel {
        arch: "aarch64",
        platform: "manylinux_2_17_aarch64",
        sha256: "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    },
];

/// Bump when the build changes in a way [`default_image_recipe`] does not show (a step, a dpkg
/// option), so data dirs with the old default image rebuild it.
const IMAGE_REVISION: u32 = 2;

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
    // Fetched first: an unreachable registry or a wrong wheel fails the build before the long
    // bootstrap.
    let uv = UvFiles::fetch(progress)?;
    bootstrap(root, image, progress)?;
    finish_rootfs(root)?;
    uv.install(root, progress)?;
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

/// Writes the named members of a zip file into a directory, each under its base name. Python's
/// zipfile, since python3 and pip are needed to fetch the wheel anyway.
const UNZIP_MEMBERS: &str = "\
import sys, zipfile
wheel, dest, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with open(dest + '/' + name.rsplit('/', 1)[1], 'wb') as f:
            f.write(z.read(name))
";

/// The uv binaries and licences, fetched from PyPI and verified, waiting in a temporary dir.
struct UvFiles {
    dir: tempfile::TempDir,
}

impl UvFiles {
    /// The executables the wheel ships as data scripts, installed into /usr/local/bin.
    const BINARIES: [&str; 2] = ["uv", "uvx"];
    /// Its licence files, installed into /usr/local/share/doc/uv as Debian does for packages.
    const LICENSES: [&str; 2] = ["LICENSE-APACHE", "LICENSE-MIT"];

    fn fetch(progress: &mut dyn FnMut(&str)) -> Result<Self, ImageError> {
        let arch = std::env::consts::ARCH;
        let pinned = UV_WHEELS
            .iter()
            .find(|w| w.arch == arch)
            .ok_or(ImageError::UnsupportedArch(arch))?;
        let tmp = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("warren-uv-")
            .tempdir()
            .map_err(IoError::at("create a temporary dir in", &tmp))?;
        let download = dir.path().join("download");
        std::fs::create_dir(&download).map_err(IoError::at("create the dir", &download))?;

        progress(&format!("fetching uv {UV_VERSION} from PyPI"));
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--platform", pinned.platform])
            .args([
                "--no-input",
                "--disable-pip-version-check",
                "--progress-bar=off",
            ])
            .arg("--dest")
            .arg(&download)
            .arg(format!("uv=={UV_VERSION}"));
        let (status, tail) = run_reporting(&mut pip, progress).map_err(|e| {
            ImageError::PythonSpawn(IoError::at("run", Path::new("python3 -m pip"))(e))
        })?;
        if !status.success() {
            return Err(ImageError::Fetch {
                version: UV_VERSION,
                status,
                tail,
            });
        }
        let wheels: Vec<PathBuf> = std::fs::read_dir(&download)
            .map_err(IoError::at("list the dir", &download))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        let [wheel] = wheels.as_slice() else {
            return Err(ImageError::WheelCount {
                version: UV_VERSION,
                count: wheels.len(),
            });
        };

        progress("verifying the uv wheel's sha256");
        verify_sha256(wheel, pinned.sha256)?;

        progress("unpacking the uv wheel");
        let members = Self::BINARIES
            .iter()
            .map(|b| format!("uv-{UV_VERSION}.data/scripts/{b}"))
            .chain(
                Self::LICENSES
                    .iter()
                    .map(|l| format!("uv-{UV_VERSION}.dist-info/licenses/{l}")),
            );
        let mut unzip = Command::new("python3");
        unzip
            .args(["-c", UNZIP_MEMBERS])
            .arg(wheel)
            .arg(dir.path())
            .args(members);
        let (status, tail) = run_reporting(&mut unzip, progress)
            .map_err(|e| ImageError::PythonSpawn(IoError::at("run", Path::new("python3"))(e)))?;
        if !status.success() {
            return Err(ImageError::Unpack { status, tail });
        }
        Ok(Self { dir })
    }

    /// Copies the files into the image, owned by root: executables 0755, licences 0644.
    fn install(&self, root: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), ImageError> {
        progress("installing uv into /usr/local/bin");
        let bin = root.join("usr/local/bin");
        let doc = root.join("usr/local/share/doc/uv");
        for (names, dest, mode) in [
            (&Self::BINARIES, &bin, 0o755),
            (&Self::LICENSES, &doc, 0o644),
        ] {
            std::fs::create_dir_all(dest).map_err(IoError::at("create the dir", dest))?;
            for name in names {
                let to = dest.join(name);
                std::fs::copy(self.dir.path().join(name), &to)
                    .map_err(IoError::at("copy uv into the image at", &to))?;
                std::os::unix::fs::chown(&to, Some(0), Some(0))
                    .map_err(IoError::at("set the owner of", &to))?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                    .map_err(IoError::at("set the mode of", &to))?;
            }
        }
        Ok(())
    }
}

/// Refuses a fetched file whose sha256 is not `expected` (lowercase hex).
fn verify_sha256(path: &Path, expected: &'static str) -> Result<(), ImageError> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(IoError::at("open", path))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(IoError::at("read", path))?;
    let actual = format!("{:x}", hasher.finalize());
    if actual != expected {
        return Err(ImageError::Checksum {
            wheel: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            expected,
            actual,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_accepted_only_with_its_pinned_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("uv.whl");
        std::fs::write(&wheel, b"abc").unwrap();
        // sha256("abc"), FIPS 180-2 appendix B.1.
        verify_sha256(
            &wheel,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        std::fs::write(&wheel, b"abd").unwrap();
        let err = verify_sha256(
            &wheel,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::Checksum { .. }), "{err}");
    }

    #[test]
    fn pinned_hashes_are_lowercase_sha256_hex() {
        for w in UV_WHEELS {
            assert_eq!(w.sha256.len(), 64, "{}", w.arch);
            assert!(
                w.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{}",
                w.arch
            );
        }
    }

    #[test]
    fn the_recipe_names_every_package_and_the_uv_version() {
        let recipe = default_image_recipe();
        for p in DEFAULT_PACKAGES {
            assert!(recipe.contains(&format!(" {p} ")) || recipe.contains(&format!(" {p}\n")));
        }
        assert!(recipe.contains(&format!("uv {UV_VERSION}\n")));
    }
}

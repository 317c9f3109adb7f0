//! uv in the default image: Debian bookworm does not package it, so it comes from its PyPI
//! wheel, which ships the `uv` and `uvx` binaries as data scripts. The wheel is fetched with the
//! host's pip, pinned by version and sha256: a registry's answer is untrusted input, and a wheel
//! that does not match is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ImageError, run_reporting};
use crate::io_error::IoError;

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

/// The uv binaries and licences, fetched from PyPI and verified, waiting in a scratch dir.
pub(super) struct UvFiles {
    dir: tempfile::TempDir,
}

impl UvFiles {
    /// The executables the wheel ships as data scripts, installed into /usr/local/bin.
    const BINARIES: [&str; 2] = ["uv", "uvx"];
    /// Its licence files, installed into /usr/local/share/doc/uv as Debian does for packages.
    const LICENSES: [&str; 2] = ["LICENSE-APACHE", "LICENSE-MIT"];

    /// Fetches, verifies and unpacks the wheel into a new dir in `scratch`.
    pub(super) fn fetch(
        scratch: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Self, ImageError> {
        let arch = std::env::consts::ARCH;
        let pinned = UV_WHEELS
            .iter()
            .find(|w| w.arch == arch)
            .ok_or(ImageError::UnsupportedArch(arch))?;
        let dir = tempfile::Builder::new()
            .prefix("warren-uv-")
            .tempdir_in(scratch)
            .map_err(IoError::at("create a scratch dir in", scratch))?;
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

    /// Copies the files into the image, owned by root: executables 0755, licences 0644, and
    /// deletes the scratch dir.
    pub(super) fn install(
        self,
        root: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), ImageError> {
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
        let scratch = self.dir.path().to_owned();
        self.dir
            .close()
            .map_err(IoError::at("delete the scratch dir", &scratch))?;
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
}

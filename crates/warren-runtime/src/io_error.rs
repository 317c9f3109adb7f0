//! The one shape of an I/O failure in this crate: what was being done, and to which path. Every
//! module's error enum carries it (`Io(IoError)`), so logs read the same everywhere and the
//! tenant-facing reasons can name the action and the OS error without the path.

use std::path::{Path, PathBuf};

/// An I/O operation on a host path failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {path}")]
pub struct IoError {
    /// What was being done, lowercase with no final period ("create the cgroup").
    pub action: &'static str,
    /// The host path (or program) it was done to. Never shown to tenants.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// A `map_err` adapter: `.map_err(IoError::at("read", &path))?` converts into any error
    /// enum with an `Io(#[from] IoError)` variant.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self {
            action,
            path,
            source,
        }
    }

    /// The OS error alone, as a tenant may see it: `strerror` text, never the path.
    pub fn os_reason(&self) -> String {
        self.source
            .raw_os_error()
            .map(|n| std::io::Error::from_raw_os_error(n).to_string())
            .unwrap_or_else(|| self.source.kind().to_string())
    }
}

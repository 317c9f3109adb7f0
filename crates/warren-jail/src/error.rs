//! The jail's error type. Every message reads `failed to <verb> <object>`, and the cause sits in
//! the source chain, so `{:#}` in the binary prints one line: "failed to X: cause".

use std::io;
use std::path::{Path, PathBuf};

/// A step of the jail failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The spec the runtime sent is unusable.
    #[error("failed to validate the jail spec: {field} {problem}")]
    InvalidSpec {
        /// The offending field of [`crate::JailSpec`].
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A system call on a path failed.
    #[error("failed to {action} {}", path.display())]
    Path {
        /// What the jail was doing, as `<verb> <object>`.
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("failed to {action}")]
    Sys {
        /// What the jail was doing, as `<verb> <object>`.
        action: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A check after a step found the jail not as built.
    #[error("failed to {action}: {found}")]
    Check {
        /// What the jail was verifying.
        action: &'static str,
        /// What it found instead.
        found: String,
    },
    /// Changing the capability sets failed.
    #[error("failed to {action}")]
    Caps {
        /// What the jail was doing.
        action: &'static str,
        /// The caps crate's error.
        #[source]
        source: caps::errors::CapsError,
    },
    /// Building or enforcing the Landlock ruleset failed.
    #[error("failed to enforce the landlock ruleset")]
    Landlock(#[source] landlock::RulesetError),
    /// Opening a path for a Landlock rule failed.
    #[error("failed to open a landlock rule path")]
    LandlockPath(#[source] landlock::PathFdError),
    /// Installing a seccomp filter failed.
    #[error("failed to install the {filter} seccomp filter")]
    Seccomp {
        /// Which of the policy's filters.
        filter: &'static str,
        /// seccompiler's error.
        #[source]
        source: seccompiler::Error,
    },
    /// The jailed child (which cannot print) reported this error over the sync socket; the
    /// message is its full "failed to ...: cause" line.
    #[error("{message}")]
    InJail {
        /// The child's error line.
        message: String,
    },
}

/// Attaches `<verb> <object>` context to a failed system call.
pub(crate) trait Context<T> {
    /// A failure of a system call on no particular path.
    fn sys(self, action: &'static str) -> Result<T, JailError>;
    /// A failure of a system call on `path`.
    fn path(self, action: &'static str, path: &Path) -> Result<T, JailError>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn sys(self, action: &'static str) -> Result<T, JailError> {
        self.map_err(|e| JailError::Sys {
            action,
            source: e.into(),
        })
    }

    fn path(self, action: &'static str, path: &Path) -> Result<T, JailError> {
        self.map_err(|e| JailError::Path {
            action,
            path: path.to_owned(),
            source: e.into(),
        })
    }
}

/// One line: the error and its causes joined by ": " (what anyhow's `{:#}` prints).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_as_one_failed_to_line() {
        let err: Result<(), io::Error> = Err(io::Error::from_raw_os_error(libc::EPERM));
        let err = err.path("bind", Path::new("/run/x.sock")).unwrap_err();
        let line = one_line(&err);
        assert!(line.starts_with("failed to bind /run/x.sock: "), "{line}");
        assert!(line.contains("Operation not permitted"), "{line}");
        assert!(!line.contains('\n'));
    }
}

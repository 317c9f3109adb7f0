//! Running host tools (`btrfs`, `mount`, `mkfs.btrfs`, `mmdebstrap`) with errors that say what ran.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::io_error::IoError;

/// A host tool failed or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started (usually: not installed). The path is the program.
    #[error("failed to start a host tool (is it installed? `warren doctor` checks)")]
    Spawn(#[source] IoError),
    /// The program ran and failed.
    #[error("{command} failed with {status}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Last lines of its stderr.
        stderr: String,
    },
}

/// Runs `program args...` to completion and returns its stdout.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ToolError::Spawn(IoError::at("run", Path::new(program))(e)))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(ToolError::Failed {
        command: std::iter::once(program.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" "),
        status: out.status,
        stderr: tail.join(" | "),
    })
}

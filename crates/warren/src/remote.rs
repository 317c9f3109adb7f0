//! Commands that manage a Warren server through its API: `warren sandbox` (`sandbox.rs`),
//! `warren cp` (`cp.rs`) and `warren keys` (`keys.rs`), with the tables they print
//! (`format.rs`). `warren exec` and `warren shell` are in `exec.rs`.

mod cp;
mod format;
mod keys;
mod sandbox;

pub(crate) use cp::{CpArgs, cp};
pub(crate) use keys::{KeysArgs, keys};
pub(crate) use sandbox::{SandboxArgs, sandbox};

//! Commands that manage a Warren server through its API: `warren sandbox` (`sandbox.rs`),
//! `warren snapshot` (`snapshot.rs`), `warren cp` (`cp.rs`), `warren keys` (`keys.rs`),
//! `warren secret` (`secret.rs`), `warren template` and `warren pool` (`template.rs`),
//! `warren service` (`service.rs`) and `warren tunnel` (`tunnel.rs`), with
//! the tables they print (`format.rs`). `warren exec` and `warren shell` are in `exec.rs`.

mod cp;
mod format;
mod keys;
mod sandbox;
mod secret;
mod service;
pub(crate) mod snapshot;
mod template;
mod tunnel;

pub(crate) use cp::{CpArgs, cp};
pub(crate) use keys::{KeysArgs, keys};
pub(crate) use sandbox::{SandboxArgs, sandbox};
pub(crate) use secret::{SecretArgs, secret};
pub(crate) use service::{ServiceArgs, service};
pub(crate) use snapshot::{SnapshotArgs, snapshot};
pub(crate) use template::{PoolArgs, TemplateArgs, pool, template};
pub(crate) use tunnel::{TunnelArgs, tunnel};

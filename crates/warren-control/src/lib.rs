//! The control plane: sandbox lifecycle (create, start, stop, delete, auto-wake), the TTL
//! sweeper, recovery after a restart, the state store, API keys and tenancy, the audit log and
//! metrics. No HTTP: `warren-api` translates requests into calls on [`Control`].
//!
//! Request path: `warren-api` → [`Control`] → `warren-runtime` driver → jailer → agent.

pub mod admission;
pub mod auth;
pub mod config;
pub mod error;
pub mod manager;
pub mod metrics;
pub mod store;

pub use admission::ResourceLimits;
pub use config::{CreateSandbox, RunConfig, SandboxConfig, UpdateSandbox};
pub use error::ControlError;
pub use manager::{ActivityGuard, Control, ControlConfig, Running};
pub use store::{AuditEntry, KeyInfo, Principal, SandboxRecord, SqliteStore, Store, StoreError};
/// Runtime types the API layer needs to talk to agents (it never drives the runtime itself).
pub use warren_runtime::{AgentConn, AgentConnError, AgentReader, AgentWriter};

//! The control plane: every operation on a sandbox, owned in one place. Lifecycle (create,
//! start, stop, delete, update, auto-wake), commands (exec, attach, SSE park and resume), files
//! (read, write, glob, grep), the TTL sweeper, recovery after a restart, the state store, API
//! keys and tenancy, workspace secrets, the audit log and metrics. No HTTP, and no agent
//! protocol: `warren-api` and the CLI translate requests into calls on [`Control`], which
//! reaches sandboxes through the [`warren_driver::Driver`] it was given.
//!
//! One file per verb (`create.rs`, `start.rs`, `stop.rs`, `delete.rs`, `update.rs`, `exec.rs`,
//! `files.rs`, `tunnel.rs`, `service.rs`, `keys.rs`, `secrets.rs`, `audit.rs`, `recover.rs`, `sweep.rs`), each lifecycle
//! verb opening with its status guard through [`warren_types::SandboxStatus::can_become`].

pub mod admission;
mod audit;
mod audit_log;
pub mod auth;
pub mod carry;
mod command;
pub mod config;
mod control;
mod create;
mod delete;
mod egress;
pub mod error;
mod exec;
mod files;
mod fork;
mod keys;
pub mod listing;
pub mod metrics;
mod parked;
pub mod pool;
mod pool_fill;
mod proxy_values;
mod recover;
mod registries;
mod running;
mod secrets;
mod service;
mod service_login;
mod signing;
mod snapshot;
mod snapshot_build;
mod snapshot_import;
mod start;
mod state;
mod stop;
pub mod store;
mod sweep;
mod template;
mod tunnel;
mod update;
mod usage;
mod volumes;

pub use admission::ResourceLimits;
pub use command::{
    CommandInputs, CommandStream, DEFAULT_IDLE_TIMEOUT_SECONDS, DEFAULT_SHELL,
    DEFAULT_TIMEOUT_SECONDS, DEFAULT_TTL_SECONDS, ExecEvent, ExecFailure, ExecRequest,
    MAX_LIMIT_SECONDS,
};
pub use config::{
    ConfigError, CreateSandbox, Egress, RunConfig, SandboxConfig, TokenSigner, UpdateSandbox,
};
pub use config::{VolumeAttachment, VolumeRequest};
pub use control::{Control, ControlConfig, StatusCounts};
pub use egress::{EgressRecord, EgressTarget};
pub use error::{ControlError, FileOp};
pub use files::{
    FileBody, GLOB_DEFAULT_LIMIT, GREP_DEFAULT_LIMIT, Glob, Grep, MAX_MATCHES, OpenFile, Upload,
};
pub use fork::{ForkSandbox, MAX_FORKS};
pub use listing::{ListQuery, Page};
pub use proxy_values::{carry_over_opaque, redact_credentials, rule_env_vars};
pub use registries::{MAX_REGISTRY_PASSWORD_BYTES, PutRegistry, reference_host, registry_host};
pub use secrets::{
    MAX_SECRET_HOSTS, MAX_SECRET_VALUE_BYTES, PutSecret, SecretConfig, SecretHost,
    SecretHostRequest, SecretInfo, SecretSource, SecretValue,
};
pub use service::{
    DEFAULT_SERVICE_TTL, DownloadAccess, MAX_DOWNLOAD_TTL, MAX_SERVICE_TTL, MintedDownload,
    MintedService, ServiceAccess,
};
pub use service_login::{LoginGrant, LoginSession};
pub use signing::TokenError;
pub use snapshot::{
    CaptureSnapshot, DEFAULT_SNAPSHOT_NAME, SnapshotView, default_snapshot_id, snapshot_image,
    validate_snapshot_name, validate_tag,
};
pub use snapshot_build::{BuildSnapshot, BuildSource};
pub use snapshot_import::ImageUpload;
pub use state::{ActivityGuard, Running};
pub use store::{
    AuditEntry, GrantMode, GrantRecord, KeyInfo, Principal, RegistryRecord, SandboxRecord,
    SecretHostRecord, SecretRecord, SnapshotRecord, SnapshotStatus, SqliteStore, Store, StoreError,
    TemplateRecord, VolumeRecord,
};
pub use template::CreateTemplate;
pub use tunnel::{TunnelError, TunnelStream};
pub use usage::{BatchDeleted, MAX_BATCH_DELETE, Usage};
pub use volumes::{
    CreateVolume, MAX_VOLUME_BYTES, MAX_VOLUMES_PER_SANDBOX, UpdateVolume, VolumeView,
    validate_mount_path,
};
/// The data types of commands and files, as the control plane hands them out.
pub use warren_driver::{
    CommandSummary, ErrorKind, FileInfo, FileKind, PtySize, SearchHit, SearchResult, Stream, Tier,
};

#[cfg(test)]
mod tests;

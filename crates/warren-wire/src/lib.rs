//! The HTTP API's JSON, as types: what the server sends and accepts, and what the CLI sends and
//! reads, in one place (LANGSMITH-API.md). Request bodies refuse unknown fields where the spec
//! allows, so a typo is an error rather than a silently ignored setting; responses accept
//! unknown fields, so an older CLI can read a newer server.

pub mod error;
pub mod exec;
pub mod files;
pub mod ops;
pub mod registries;
pub mod sandbox;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod templates;
pub mod utf8;
pub mod volumes;

pub use error::{ErrorBody, ErrorDetail};
pub use utf8::Utf8Splitter;

//! Integration tests with real sandboxes: isolation seen from inside, resource limits, and the
//! command session features (streaming, stdin, PTY, kill, timeout, reattach, floods).

// An integration-test crate is test code throughout.
#![allow(
    unreachable_pub,
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

mod deletion;
mod exec;
mod exhaustion;
mod host;
mod image;
mod isolation;
mod limits;
mod lxcfs;
mod network;
mod ownership;
mod rootfs;
mod support;
mod tunnel;
mod volumes;

//! Integration tests: the real agent binary, driven over its socket by a small sync client.

// An integration-test crate is test code throughout.
#![allow(
    unreachable_pub,
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::cast_possible_truncation
)]

mod commands;
mod files;
mod flood;
mod launch;
mod net;
mod support;

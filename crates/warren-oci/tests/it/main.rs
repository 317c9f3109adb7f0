//! Integration tests for warren-oci. They build their layers with the `tar` crate (hostile ones
//! included), unpack into a temporary directory, and check that nothing next to it changed.
//! They chown files, so they run as root. `registry` starts Debian's `docker-registry`.

// An integration-test crate is test code throughout.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

mod common;
mod import;
mod registry;
mod unpack_hostile;
mod unpack_layers;

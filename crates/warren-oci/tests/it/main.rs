//! Integration tests for warren-oci. They build their layers with the `tar` crate (hostile ones
//! included), unpack into a temporary directory, and check that nothing next to it changed.
//! They chown files, so they run as root. `registry` starts Debian's `docker-registry`.

mod common;
mod import;
mod registry;
mod unpack_hostile;
mod unpack_layers;

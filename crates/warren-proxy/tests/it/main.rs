//! End-to-end tests of the proxy listeners and the DNS server, on loopback only.
//!
//! Sandboxes are told apart by source address and these tests may only use loopback, so the
//! sandbox table maps 127.0.0.1 to the policy under test. Upstreams are local servers on
//! 127.0.0.1, reached through names (`upstream.test`) that a static resolver maps to
//! 127.0.0.1; the policy's loopback check is lifted for exactly the upstreams' ports with
//! `PolicyConfig::allow_loopback_for_tests`, except in the tests of that very check.

// An integration-test crate is test code throughout.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

mod callback;
mod dns;
mod harness;
mod inject;
mod proxy;

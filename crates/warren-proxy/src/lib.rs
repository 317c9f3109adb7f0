//! The egress proxy: policy, DNS and the proxy listeners; no knowledge of namespaces.
pub mod events;
pub mod policy;
pub mod resolve;
pub mod sandbox;

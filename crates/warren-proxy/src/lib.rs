//! The egress proxy: policy, DNS and the proxy listeners; no knowledge of namespaces.
pub mod dns;
pub mod events;
pub mod policy;
pub mod proxy;
pub mod resolve;
pub mod sandbox;

//! The egress proxy: policy, DNS and the proxy listeners; no knowledge of namespaces.
pub mod policy;

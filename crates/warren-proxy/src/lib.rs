//! The egress proxy: policy, DNS and the proxy listeners; no knowledge of namespaces.
//!
//! In `proxied` network mode a sandbox's traffic can reach only this proxy and its DNS
//! server on the host side of its link (the host's firewall sees to that); this crate decides
//! what goes further:
//! - [`policy`]: a sandbox's `proxy_config.access_control` (allow/deny lists) plus the
//!   addresses no sandbox may ever reach, and the decision for one destination;
//! - [`resolve`]: host-side resolution that only ever yields permitted addresses;
//! - [`dns`]: the sandboxes' DNS server (A answers filtered by policy);
//! - [`proxy`]: the explicit HTTP/CONNECT proxy port and the transparent HTTP and TLS ports;
//! - [`sandbox`]: which sandbox a source address belongs to, and its current policy;
//! - [`inject`]: credential rules, which add headers to requests to the hosts they cover;
//! - [`ca`]: per-sandbox CAs, to intercept TLS to those hosts;
//! - [`events`]: one report per connection, for the audit log and metrics.
//!
//! The daemon starts each listener once for all sandboxes and keeps the sandbox table up to
//! date as sandboxes come and go or their `proxy_config` changes:
//!
//! ```no_run
//! use std::sync::Arc;
//! use warren_proxy::dns::{DnsConfig, DnsServer};
//! use warren_proxy::events::ConnectionEvent;
//! use warren_proxy::policy::{Policy, PolicyConfig};
//! use warren_proxy::proxy::{Proxy, ProxyConfig};
//! use warren_proxy::resolve::SystemResolver;
//! use warren_proxy::sandbox::{SandboxPolicy, SandboxTable};
//!
//! # async fn run(proxy_config: serde_json::Value) -> std::io::Result<()> {
//! let host = Arc::new(PolicyConfig::new().with_host_addresses(["203.0.113.7".parse().unwrap()]));
//! let table = Arc::new(SandboxTable::new());
//! let policy = Policy::from_proxy_config(Some(&proxy_config), host.clone()).expect("checked at create");
//! table.insert("100.64.0.2".parse().unwrap(), SandboxPolicy::new("sb-1", policy));
//!
//! let events = Arc::new(|event: ConnectionEvent| tracing::info!(?event, "egress"));
//! let proxy = Proxy::new(ProxyConfig::default(), table.clone(), Arc::new(SystemResolver), events);
//! let host_side = "100.64.0.1";
//! tokio::spawn(proxy.clone().serve_explicit(tokio::net::TcpListener::bind((host_side, 3128)).await?));
//! tokio::spawn(proxy.clone().serve_transparent_http(tokio::net::TcpListener::bind((host_side, 3080)).await?));
//! tokio::spawn(proxy.serve_transparent_tls(tokio::net::TcpListener::bind((host_side, 3443)).await?));
//!
//! let dns = DnsServer::new(DnsConfig::default(), table, Arc::new(SystemResolver));
//! tokio::spawn(dns.clone().serve_udp(tokio::net::UdpSocket::bind((host_side, 53)).await?));
//! tokio::spawn(dns.serve_tcp(tokio::net::TcpListener::bind((host_side, 53)).await?));
//! # Ok(())
//! # }
//! ```

pub mod ca;
pub mod dns;
pub mod events;
pub mod inject;
pub mod policy;
pub mod proxy;
pub mod resolve;
pub mod sandbox;

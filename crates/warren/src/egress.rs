//! `warren serve`'s sandbox network: the links and the firewall (`warren-net`) and the egress
//! proxy (`warren-proxy`), wired to the control plane, which says which sandbox a link belongs
//! to and under which `proxy_config`, and records every connection.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UdpSocket};
use warren_control::{Control, EgressCheck, EgressRecord};
use warren_net::{HostNet, ProxyPorts};
use warren_proxy::dns::{DnsConfig, DnsServer};
use warren_proxy::events::ConnectionEvent;
use warren_proxy::policy::{Decision, Policy, PolicyConfig};
use warren_proxy::proxy::{Proxy, ProxyConfig};
use warren_proxy::resolve::SystemResolver;
use warren_proxy::sandbox::SandboxPolicy;
use warren_runtime::JailDriver;

/// Installs the firewall and links every sandbox booted from now on; `cas` are PEM files added
/// to every sandbox's trust store.
pub(crate) async fn link_sandboxes(driver: &JailDriver, cas: &[PathBuf]) -> Result<ProxyPorts> {
    let mut extra = Vec::new();
    for path in cas {
        let pem = std::fs::read(path)
            .with_context(|| format!("failed to read --sandbox-ca {}", path.display()))?;
        anyhow::ensure!(
            pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
            "--sandbox-ca {} holds no PEM certificate",
            path.display()
        );
        extra.extend_from_slice(&pem);
        if !extra.ends_with(b"\n") {
            extra.push(b'\n');
        }
    }
    let ports = ProxyPorts::default();
    let net = HostNet::open(ports).await.context(
        "failed to set up sandbox networking (needs nft and rtnetlink; `warren doctor` checks)",
    )?;
    driver.enable_network(net, extra);
    Ok(ports)
}

/// What the policy refuses beyond the fixed ranges: every address of this host's own
/// interfaces, so no name or literal reaches a host service through the proxy.
pub(crate) fn policy_config() -> Arc<PolicyConfig> {
    let own: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| {
                    let sa = a.address?;
                    sa.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .collect()
        })
        .unwrap_or_default();
    Arc::new(PolicyConfig::new().with_host_addresses(own))
}

/// The control plane's check of a `proxy_config`: the proxy's own parser.
pub(crate) fn check(config: Arc<PolicyConfig>) -> EgressCheck {
    EgressCheck(Arc::new(move |pc| {
        Policy::from_proxy_config(Some(pc), config.clone())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}

async fn tcp(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("failed to listen on egress proxy port {port}"))
}

/// Starts the proxy's listeners and DNS, once for all sandboxes. A connection is matched to
/// its sandbox by its source address (the slot of its link), and gets the sandbox's current
/// `proxy_config`; a source that is no running sandbox gets nothing.
pub(crate) async fn start_proxy(
    control: Arc<Control>,
    ports: ProxyPorts,
    config: Arc<PolicyConfig>,
) -> Result<()> {
    let lookup = {
        let control = control.clone();
        move |source: IpAddr| -> Option<Arc<SandboxPolicy>> {
            let target = control.egress_target(warren_net::sandbox_slot(source)?)?;
            match Policy::from_proxy_config(target.proxy_config.as_ref(), config.clone()) {
                Ok(policy) => Some(Arc::new(SandboxPolicy {
                    sandbox_id: target.sandbox_id,
                    policy,
                })),
                Err(e) => {
                    // Checked at create and update: a stored one that no longer parses
                    // refuses everything rather than falling back to the default.
                    tracing::warn!(sandbox_id = %target.sandbox_id, error = %e, "stored proxy_config does not parse; refusing egress");
                    None
                }
            }
        }
    };
    let lookup = Arc::new(lookup);
    let events = {
        let control = control.clone();
        move |ev: ConnectionEvent| {
            control.egress_connection(&EgressRecord {
                sandbox_id: ev.sandbox,
                host: ev.host,
                port: ev.port,
                allowed: matches!(ev.decision, Decision::Allow),
                rule: ev.rule,
                bytes_up: ev.bytes_up,
                bytes_down: ev.bytes_down,
            });
        }
    };
    let resolver = Arc::new(SystemResolver);
    let proxy = Proxy::new(
        ProxyConfig::default(),
        lookup.clone(),
        resolver.clone(),
        Arc::new(events),
    );
    tokio::spawn(proxy.clone().serve_explicit(tcp(ports.proxy).await?));
    tokio::spawn(proxy.clone().serve_transparent_http(tcp(ports.http).await?));
    tokio::spawn(proxy.serve_transparent_tls(tcp(ports.tls).await?));
    let dns = DnsServer::new(DnsConfig::default(), lookup, resolver);
    let udp = UdpSocket::bind(("0.0.0.0", ports.dns))
        .await
        .with_context(|| format!("failed to listen on the sandboxes' DNS port {}", ports.dns))?;
    tokio::spawn(dns.clone().serve_udp(udp));
    tokio::spawn(dns.serve_tcp(tcp(ports.dns).await?));
    tracing::info!(
        proxy = ports.proxy,
        http = ports.http,
        tls = ports.tls,
        dns = ports.dns,
        "egress proxy listening"
    );
    Ok(())
}

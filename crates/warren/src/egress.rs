//! `warren serve`'s sandbox network: the links and the firewall (`warren-net`) and the egress
//! proxy (`warren-proxy`), wired to the control plane, which says which sandbox a link belongs
//! to and under which `proxy_config`, and records every connection.

use anyhow::{Context, Result};
use warren_net::{HostNet, ProxyPorts};
use warren_runtime::JailDriver;

/// Installs the firewall and links every sandbox booted from now on.
pub(crate) async fn link_sandboxes(driver: &JailDriver) -> Result<ProxyPorts> {
    let ports = ProxyPorts::default();
    let net = HostNet::open(ports)
        .await
        .context("failed to set up sandbox networking (needs nft and rtnetlink; `warren doctor` checks)")?;
    driver.enable_network(net);
    Ok(ports)
}

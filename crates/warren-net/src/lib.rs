//! A sandbox's network, host side. In `proxied` mode each sandbox's network namespace gets one
//! veth pair: `eth0` inside with a /30 from 100.64.0.0/10 (CGNAT space, never routed to the
//! internet or a LAN), its peer `wr<slot>` on the host. Nothing is forwarded: the host firewall
//! ([`firewall`]) lets a sandbox reach only the egress proxy's ports on the host end of its own
//! link (ports 80 and 443 and DNS are redirected there), and drops everything else it sends,
//! in IPv4 and IPv6, before routing. In `none` mode the namespace keeps only its loopback.
//!
//! Links are configured over rtnetlink; inside the namespace through a netlink socket opened by
//! a thread that joined it, so nothing runs `ip` and no process is left per sandbox.

mod addr;
pub mod firewall;
mod link;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

pub use addr::{SandboxAddrs, addrs_for, slot_of};
pub use firewall::ProxyPorts;

/// Network failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error("failed to {action}: {source}")]
    Netlink {
        /// What was being done.
        action: &'static str,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// A system call failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `nft` failed.
    #[error("failed to {action} with nft: {detail}")]
    Nft {
        /// What was being done.
        action: &'static str,
        /// What nft said.
        detail: String,
    },
    /// The slot is past the address plan.
    #[error("sandbox slot {0} has no address in 100.64.0.0/10")]
    NoAddress(u32),
}

/// How a sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// Through the egress proxy (the default).
    #[default]
    Proxied,
}

/// The host side of every sandbox's network: the firewall (installed once) and a netlink
/// connection for the links.
#[derive(Debug, Clone)]
pub struct HostNet {
    netlink: rtnetlink::Handle,
    ports: ProxyPorts,
}

impl HostNet {
    /// Installs the firewall (replacing an earlier daemon's) and opens netlink. Needs a tokio
    /// runtime.
    pub async fn open(ports: ProxyPorts) -> Result<Self, NetError> {
        firewall::install(&ports).await?;
        let (conn, netlink, _) = rtnetlink::new_connection().map_err(|source| NetError::Io {
            action: "open a netlink socket",
            source,
        })?;
        tokio::spawn(conn);
        Ok(Self { netlink, ports })
    }

    /// The ports the firewall lets sandboxes reach.
    pub fn ports(&self) -> ProxyPorts {
        self.ports
    }

    /// Gives the sandbox whose PID 1 is `pid` its link: `eth0` with its address and a default
    /// route to the host end. Returns the addresses.
    pub async fn attach(&self, slot: u32, pid: u32) -> Result<SandboxAddrs, NetError> {
        let addrs = addrs_for(slot).ok_or(NetError::NoAddress(slot))?;
        // A link left by a sandbox of the same slot that died without a teardown.
        link::delete(&self.netlink, &addrs.host_link).await?;
        match link::attach(&self.netlink, &addrs, pid).await {
            Ok(()) => Ok(addrs),
            Err(e) => {
                let _ = link::delete(&self.netlink, &addrs.host_link).await;
                Err(e)
            }
        }
    }

    /// Removes the sandbox's link (its namespace's end goes with it). Idempotent.
    pub async fn detach(&self, slot: u32) -> Result<(), NetError> {
        match addrs_for(slot) {
            Some(a) => link::delete(&self.netlink, &a.host_link).await,
            None => Ok(()),
        }
    }

    /// Removes the links of slots not in `keep`; returns the slots removed.
    pub async fn gc(&self, keep: &HashSet<u32>) -> Result<Vec<u32>, NetError> {
        let mut removed = Vec::new();
        for name in link::host_links(&self.netlink).await? {
            if let Some(slot) = addr::slot_of_link(&name)
                && !keep.contains(&slot)
            {
                link::delete(&self.netlink, &name).await?;
                removed.push(slot);
            }
        }
        Ok(removed)
    }
}

/// The sandbox slot a connection's source address belongs to, if any.
pub fn sandbox_slot(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => slot_of(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().and_then(slot_of),
    }
}

/// The environment every command of a proxied sandbox gets: the proxy for clients that honour
/// proxy variables (the rest are redirected by the firewall).
pub fn proxy_env(addrs: &SandboxAddrs, ports: ProxyPorts) -> Vec<(String, String)> {
    let url = format!("http://{}:{}", addrs.host, ports.proxy);
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.push((name.to_owned(), url.clone()));
    }
    env.push(("NO_PROXY".to_owned(), no_proxy.clone()));
    env.push(("no_proxy".to_owned(), no_proxy));
    env
}

/// The host end's address of a slot's link, for callers that only have the slot.
pub fn host_address(slot: u32) -> Option<Ipv4Addr> {
    addrs_for(slot).map(|a| a.host)
}

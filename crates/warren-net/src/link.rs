//! The veth pair of one sandbox, over rtnetlink.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::{NetError, SandboxAddrs};

/// Prefix length of every sandbox link (a /30: host, sandbox, network and broadcast).
const PREFIX: u8 = 30;

fn netlink(action: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |source| NetError::Netlink { action, source }
}

fn is_missing(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| -c.get() == nix::libc::ENODEV))
}

/// The index of a link by name, or `None` if there is none.
async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(netlink("look up a sandbox link")(e)),
    }
}

/// Deletes a link if it exists.
pub(crate) async fn delete(h: &Handle, name: &str) -> Result<(), NetError> {
    let Some(index) = index_of(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Err(e) if !is_missing(&e) => Err(netlink("delete a sandbox link")(e)),
        _ => Ok(()),
    }
}

/// Names of the host-side sandbox links that exist.
pub(crate) async fn host_links(h: &Handle) -> Result<Vec<String>, NetError> {
    let mut out = Vec::new();
    let mut links = h.link().get().execute();
    while let Some(l) = links
        .try_next()
        .await
        .map_err(netlink("list network links"))?
    {
        for a in l.attributes {
            if let LinkAttribute::IfName(name) = a
                && name.starts_with("wr")
            {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// Writes a sysctl, ignoring one this kernel does not have.
fn sysctl(path: &str, value: &str) -> Result<(), NetError> {
    match std::fs::write(path, value) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::Io {
            action: "set a network sysctl",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A netlink connection inside the network namespace of `pid`: opened by a thread that joins
/// the namespace (a socket keeps the namespace it was made in), which then ends. IPv6 is
/// switched off in there on the way: a sandbox link carries IPv4 only.
async fn handle_in(pid: u32) -> Result<Handle, NetError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|source| NetError::Io {
        action: "open the sandbox's network namespace",
        source,
    })?;
    let rt = tokio::runtime::Handle::current();
    let joined = std::thread::spawn(move || -> Result<_, NetError> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Io {
            action: "join the sandbox's network namespace",
            source: e.into(),
        })?;
        sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")?;
        sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")?;
        let _rt = rt.enter();
        rtnetlink::new_connection().map_err(|source| NetError::Io {
            action: "open a netlink socket in the sandbox's namespace",
            source,
        })
    })
    .join()
    .map_err(|_| NetError::Io {
        action: "join the sandbox's network namespace",
        source: std::io::Error::other("the thread panicked"),
    })??;
    let (conn, handle, _) = joined;
    tokio::spawn(conn);
    Ok(handle)
}

/// Creates the pair with one end made directly inside the namespace of `pid` as `eth0` (moving
/// a link between namespaces waits for an RCU grace period, tens of milliseconds), and
/// addresses and routes both ends.
pub(crate) async fn attach(h: &Handle, a: &SandboxAddrs, pid: u32) -> Result<(), NetError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|source| NetError::Io {
        action: "open the sandbox's network namespace",
        source,
    })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name("eth0".to_owned())
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(a.host_link.clone())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    h.link()
        .add(pair)
        .execute()
        .await
        .map_err(netlink("create a sandbox link"))?;
    sysctl(
        &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", a.host_link),
        "1",
    )?;
    let host = index_of(h, &a.host_link)
        .await?
        .ok_or(NetError::NoAddress(a.slot))?;
    h.address()
        .add(host, a.host.into(), PREFIX)
        .execute()
        .await
        .map_err(netlink("address the host end of a sandbox link"))?;
    h.link()
        .set(LinkUnspec::new_with_index(host).up().build())
        .execute()
        .await
        .map_err(netlink("bring up the host end of a sandbox link"))?;
    inside(pid, a).await
}

async fn inside(pid: u32, a: &SandboxAddrs) -> Result<(), NetError> {
    let h = handle_in(pid).await?;
    let eth = index_of(&h, "eth0")
        .await?
        .ok_or(NetError::NoAddress(a.slot))?;
    h.address()
        .add(eth, a.sandbox.into(), PREFIX)
        .execute()
        .await
        .map_err(netlink("address the sandbox's eth0"))?;
    h.link()
        .set(LinkUnspec::new_with_index(eth).up().build())
        .execute()
        .await
        .map_err(netlink("bring up the sandbox's eth0"))?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(a.host)
        .output_interface(eth)
        .build();
    h.route()
        .add(default)
        .execute()
        .await
        .map_err(netlink("route the sandbox through its link"))?;
    Ok(())
}

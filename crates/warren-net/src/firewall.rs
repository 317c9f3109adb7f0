//! The host firewall for sandbox links, one nftables table (`inet warren`) installed through
//! nft's JSON API. Every rule matches the host-side link names (`wr*`), so a new sandbox needs
//! no rule change: creating its link is enough, and the rules cover it from its first packet.
//!
//! - prerouting (nat): TCP 80 → the transparent HTTP port, TCP 443 → the transparent TLS port,
//!   TCP/UDP 53 → the DNS port, each on the host end of the sandbox's own link (`redirect`).
//! - input: the proxy's four ports accepted; everything else a sandbox sends to the host
//!   (API, SSH, other daemons, any address of the host, IPv6 link-local) counted and dropped.
//! - forward: anything from or to a sandbox link counted and dropped: a sandbox reaches nothing
//!   past the host, so private ranges, metadata addresses and other sandboxes are unreachable
//!   at the packet level whatever the proxy decides.

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::NetError;

/// The table's name (family `inet`).
pub const TABLE: &str = "warren";
const LINKS: &str = "wr*";

/// Host ports of the egress proxy that sandboxes may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPorts {
    /// The explicit HTTP proxy (`HTTP_PROXY`, CONNECT).
    pub proxy: u16,
    /// Where port 80 is redirected.
    pub http: u16,
    /// Where port 443 is redirected.
    pub tls: u16,
    /// Where DNS is redirected (UDP and TCP).
    pub dns: u16,
}

impl Default for ProxyPorts {
    fn default() -> Self {
        Self {
            proxy: 17001,
            http: 17080,
            tls: 17443,
            dns: 17053,
        }
    }
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": expr}}})
}

fn iif() -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": LINKS}})
}

fn oif() -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": LINKS}})
}

fn dport(proto: &str, port: u16) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": port}})
}

fn redirect(proto: &str, from: u16, to: u16) -> Value {
    rule(
        "prerouting",
        vec![
            iif(),
            dport(proto, from),
            json!({"counter": null}),
            json!({"redirect": {"port": to}}),
        ],
    )
}

/// The whole table as one nft JSON batch: delete any earlier one, then create it, atomically.
pub fn ruleset(p: &ProxyPorts) -> Value {
    let chain = |name: &str, kind: &str, hook: &str, prio: i32| {
        json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
    };
    let mut cmds = vec![
        json!({"add": {"table": {"family": "inet", "name": TABLE}}}),
        json!({"delete": {"table": {"family": "inet", "name": TABLE}}}),
        json!({"add": {"table": {"family": "inet", "name": TABLE}}}),
        chain("prerouting", "nat", "prerouting", -100),
        chain("input", "filter", "input", 0),
        chain("forward", "filter", "forward", 0),
        redirect("tcp", 80, p.http),
        redirect("tcp", 443, p.tls),
        redirect("tcp", 53, p.dns),
        redirect("udp", 53, p.dns),
    ];
    for port in [p.proxy, p.http, p.tls, p.dns] {
        cmds.push(rule(
            "input",
            vec![
                iif(),
                dport("tcp", port),
                json!({"counter": null}),
                json!({"accept": null}),
            ],
        ));
    }
    cmds.push(rule(
        "input",
        vec![
            iif(),
            dport("udp", p.dns),
            json!({"counter": null}),
            json!({"accept": null}),
        ],
    ));
    cmds.push(rule(
        "input",
        vec![iif(), json!({"counter": null}), json!({"drop": null})],
    ));
    cmds.push(rule(
        "forward",
        vec![iif(), json!({"counter": null}), json!({"drop": null})],
    ));
    cmds.push(rule(
        "forward",
        vec![oif(), json!({"counter": null}), json!({"drop": null})],
    ));
    json!({"nftables": cmds})
}

async fn nft(
    args: &[&str],
    input: Option<&Value>,
    action: &'static str,
) -> Result<String, NetError> {
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|source| NetError::Io { action, source })?;
    if let Some(stdin) = child.stdin.as_mut()
        && let Some(v) = input
    {
        stdin
            .write_all(v.to_string().as_bytes())
            .await
            .map_err(|source| NetError::Io { action, source })?;
    }
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetError::Io { action, source })?;
    if !out.status.success() {
        return Err(NetError::Nft {
            action,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs (or replaces) the table.
pub(crate) async fn install(p: &ProxyPorts) -> Result<(), NetError> {
    nft(
        &["-j", "-f", "-"],
        Some(&ruleset(p)),
        "install the sandbox firewall",
    )
    .await?;
    Ok(())
}

/// Packets the firewall dropped from or to sandbox links, per chain: what tests read to prove
/// nothing left a namespace.
pub async fn dropped_packets() -> Result<u64, NetError> {
    let out = nft(
        &["-j", "list", "table", "inet", TABLE],
        None,
        "read the sandbox firewall",
    )
    .await?;
    let v: Value = serde_json::from_str(&out).map_err(|e| NetError::Nft {
        action: "read the sandbox firewall",
        detail: e.to_string(),
    })?;
    let mut dropped = 0;
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(r) = item.get("rule") else { continue };
        let exprs = r["expr"].as_array().cloned().unwrap_or_default();
        if exprs.iter().any(|e| e.get("drop").is_some()) {
            for e in &exprs {
                if let Some(n) = e["counter"]["packets"].as_u64() {
                    dropped += n;
                }
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_redirects_the_three_services_and_drops_the_rest() {
        let v = ruleset(&ProxyPorts::default());
        let text = v.to_string();
        for port in [17001, 17080, 17443, 17053] {
            assert!(text.contains(&port.to_string()), "{port}");
        }
        let cmds = v["nftables"].as_array().unwrap();
        let drops = cmds
            .iter()
            .filter(|c| c.to_string().contains("\"drop\""))
            .count();
        assert_eq!(drops, 3, "input, forward in, forward out");
        // The last input rule is the catch-all drop: nothing a sandbox sends to the host
        // passes unless a rule before it accepted a proxy port.
        let last_input = cmds
            .iter()
            .rev()
            .find(|c| c["add"]["rule"]["chain"] == "input")
            .unwrap();
        assert!(last_input.to_string().contains("\"drop\""));
    }
}

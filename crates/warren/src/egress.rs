//! `warren serve`'s sandbox network: the links and the firewall (`warren-net`) and the egress
//! proxy (`warren-proxy`), wired to the control plane, which says which sandbox a link belongs
//! to and under which `proxy_config`, and records every connection.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, UdpSocket};
use warren_control::{ConfigError, Control, Egress, EgressRecord, TokenSigner};
use warren_net::{HostNet, ProxyPorts};
use warren_proxy::ca::CaStore;
use warren_proxy::dns::{DnsConfig, DnsServer};
use warren_proxy::events::ConnectionEvent;
use warren_proxy::inject::{Credentials, RuleError, SecretValue};
use warren_proxy::policy::{Decision, Policy, PolicyConfig};
use warren_proxy::proxy::{CallbackSigner, Proxy, ProxyConfig};
use warren_proxy::resolve::SystemResolver;
use warren_proxy::sandbox::SandboxPolicy;
use warren_runtime::JailDriver;

/// The server's signing key (`<data dir>/callback-signing.pem`, made on first start): proxy
/// callback signatures and login-mode service URLs' user tokens.
#[derive(Debug)]
pub(crate) struct ServerSigner(pub(crate) Arc<CallbackSigner>);

impl ServerSigner {
    pub(crate) fn load(data_dir: &Path, public_url: &str) -> Result<Self> {
        let signer =
            CallbackSigner::load_or_create(&data_dir.join("callback-signing.pem"), public_url)
                .context("failed to load the server's signing key")?;
        Ok(Self(Arc::new(signer)))
    }
}

impl TokenSigner for ServerSigner {
    fn jwks(&self) -> serde_json::Value {
        self.0.jwks()
    }

    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        self.0.sign_claims(claims)
    }
}

/// The sandbox network of a `proxied` server, before the control plane exists.
pub(crate) struct EgressSetup {
    ports: ProxyPorts,
    policy: Arc<PolicyConfig>,
    cas: Arc<CaStore>,
    upstream_tls: Arc<rustls::ClientConfig>,
    signer: Arc<CallbackSigner>,
}

/// Reads PEM certificate files, in order, into one bundle.
fn read_pems(paths: &[PathBuf], flag: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for path in paths {
        let pem = std::fs::read(path)
            .with_context(|| format!("failed to read {flag} {}", path.display()))?;
        anyhow::ensure!(
            pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
            "{flag} {} holds no PEM certificate",
            path.display()
        );
        out.extend_from_slice(&pem);
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Installs the firewall and links every sandbox booted from now on. `sandbox_cas` are PEM
/// files added to every sandbox's trust store; the proxy trusts them too, with
/// `upstream_cas`, when it verifies the servers it intercepts TLS to.
pub(crate) async fn link_sandboxes(
    driver: &JailDriver,
    sandbox_cas: &[PathBuf],
    upstream_cas: &[PathBuf],
    data_dir: &Path,
    signer: Arc<CallbackSigner>,
) -> Result<EgressSetup> {
    let extra = read_pems(sandbox_cas, "--sandbox-ca")?;
    let mut upstream_extra = extra.clone();
    upstream_extra.extend(read_pems(upstream_cas, "--egress-upstream-ca")?);
    let upstream_tls = warren_proxy::proxy::upstream_tls(&upstream_extra)
        .context("failed to load the CAs the egress proxy verifies upstreams with")?;
    let cas = CaStore::open(data_dir.join("egress-ca"))
        .context("failed to open the sandboxes' CA directory")?;
    let ports = ProxyPorts::default();
    let net = HostNet::open(ports).await.context(
        "failed to set up sandbox networking (needs nft and rtnetlink; `warren doctor` checks)",
    )?;
    driver.enable_network(net, extra);
    Ok(EgressSetup {
        ports,
        policy: policy_config(),
        cas: Arc::new(cas),
        upstream_tls,
        signer,
    })
}

/// What the policy refuses beyond the fixed ranges: every address of this host's own
/// interfaces, so no name or literal reaches a host service through the proxy.
fn policy_config() -> Arc<PolicyConfig> {
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

/// The control plane's side of the proxy: its parsers, and the sandboxes' CAs.
#[derive(Debug)]
struct ProxyEgress {
    policy: Arc<PolicyConfig>,
    cas: Arc<CaStore>,
}

impl Egress for ProxyEgress {
    fn check(&self, pc: &serde_json::Value) -> Result<Vec<String>, ConfigError> {
        Policy::from_proxy_config(Some(pc), self.policy.clone())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // Parsing needs no secret: values are read when a request needs them.
        let credentials = Credentials::from_proxy_config(Some(pc), Arc::new(|_: &str| None))
            .map_err(|e| match e {
                RuleError::Invalid(m) => ConfigError::Invalid(m),
                RuleError::Unsupported(m) => ConfigError::Unsupported(m),
            })?;
        Ok(credentials.secret_keys().iter().cloned().collect())
    }

    fn sandbox_ca(&self, sandbox_id: &str) -> Result<String, String> {
        self.cas
            .ensure(sandbox_id)
            .map(|ca| ca.cert_pem().to_owned())
            .map_err(|e| e.to_string())
    }

    fn forget(&self, sandbox_id: &str) {
        if let Err(e) = self.cas.remove(sandbox_id) {
            tracing::warn!(%sandbox_id, error = %e, "failed to remove a deleted sandbox's CA");
        }
    }
}

impl EgressSetup {
    /// The control plane's hooks into the proxy.
    pub(crate) fn hooks(&self) -> Arc<dyn Egress> {
        Arc::new(ProxyEgress {
            policy: self.policy.clone(),
            cas: self.cas.clone(),
        })
    }
}

async fn tcp(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("failed to listen on egress proxy port {port}"))
}

/// Starts the proxy's listeners and DNS, once for all sandboxes. A connection is matched to
/// its sandbox by its source address (the slot of its link), and gets the sandbox's current
/// `proxy_config`; a source that is no running sandbox gets nothing.
pub(crate) async fn start_proxy(control: Arc<Control>, setup: EgressSetup) -> Result<()> {
    let EgressSetup {
        ports,
        policy: config,
        cas,
        upstream_tls,
        signer,
    } = setup;
    let lookup = {
        let control = control.clone();
        move |source: IpAddr| -> Option<Arc<SandboxPolicy>> {
            let target = control.egress_target(warren_net::sandbox_slot(source)?)?;
            let secrets = {
                let (control, workspace) = (control.clone(), target.workspace_id.clone());
                Arc::new(move |key: &str| {
                    control
                        .secret_for_injection(&workspace, key)
                        .map(|s| SecretValue {
                            value: s.value,
                            hosts: s.hosts.into_iter().map(|h| h.pattern).collect(),
                        })
                })
            };
            let pc = target.proxy_config.as_ref();
            let parsed = Policy::from_proxy_config(pc, config.clone())
                .map_err(|e| e.to_string())
                .and_then(|policy| {
                    let credentials =
                        Credentials::from_proxy_config(pc, secrets).map_err(|e| e.to_string())?;
                    Ok((policy, credentials))
                });
            match parsed {
                Ok((policy, credentials)) => {
                    let ca = match cas.get(&target.sandbox_id) {
                        Ok(ca) => ca,
                        Err(e) => {
                            tracing::warn!(sandbox_id = %target.sandbox_id, error = %e, "failed to load the sandbox's CA");
                            None
                        }
                    };
                    let mut sandbox = SandboxPolicy::new(target.sandbox_id, policy);
                    sandbox.workspace_id = target.workspace_id;
                    sandbox.hostname = target.hostname;
                    sandbox.credentials = credentials;
                    sandbox.ca = ca;
                    Some(Arc::new(sandbox))
                }
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
    let proxy_config = ProxyConfig {
        upstream_tls: Some(upstream_tls),
        callback_signer: Some(signer),
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(
        proxy_config,
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

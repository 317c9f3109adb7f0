//! Host-side name resolution with the policy's address check applied: only the addresses a
//! sandbox may reach ever come out of here, for the proxy to dial or the DNS server to answer.
//!
//! Resolving on the host and re-checking every address is what stops DNS rebinding: a name
//! the policy allows that resolves to 169.254.169.254 or 127.0.0.1 yields no address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use crate::policy::{Decision, Destination, Host, Policy, Ruling};

/// Most addresses taken from one lookup; the rest are ignored.
const MAX_ADDRESSES: usize = 16;

/// A boxed future, so [`Resolve`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves a name to addresses, with no policy applied.
pub trait Resolve: Send + Sync {
    /// The addresses of `name` (normalized, never an IP literal).
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The host's resolver (`getaddrinfo`: `/etc/hosts`, then the servers of `/etc/resolv.conf`),
/// run on tokio's blocking pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of names, for tests and for names the daemon pins; any other name fails
/// with `NotFound`.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` (matched case-insensitively) resolving to `addrs`.
    pub fn with(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.names
            .insert(name.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolve for StaticResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.names.get(name).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not in table"))
        })
    }
}

/// Why a destination yields no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The policy refuses the destination, or every address it resolves to.
    #[error("{rule}")]
    Refused {
        /// The rule that refused it.
        rule: String,
    },
    /// The lookup failed.
    #[error("failed to resolve {name}: {source}")]
    Lookup {
        /// The name.
        name: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The lookup took too long.
    #[error("failed to resolve {name}: timed out")]
    Timeout {
        /// The name.
        name: String,
    },
    /// The lookup succeeded with no address.
    #[error("failed to resolve {name}: no addresses")]
    NoAddresses {
        /// The name.
        name: String,
    },
}

/// The addresses a connection may go to, and the rule that allowed them.
#[derive(Debug, Clone)]
pub struct Permitted {
    /// Canonical addresses, in the resolver's order, never empty.
    pub addrs: Vec<IpAddr>,
    /// The rule that allowed the first of them.
    pub rule: String,
}

/// The addresses `dest` may be reached at under `policy`: an IP literal is checked as it is,
/// a name is checked, resolved, and each address checked.
pub async fn permitted_addresses(
    resolver: &dyn Resolve,
    policy: &Policy,
    dest: &Destination,
    timeout: Duration,
) -> Result<Permitted, ResolveError> {
    let ruling = policy.ruling(dest);
    if !ruling.allowed {
        return Err(ResolveError::Refused { rule: ruling.rule });
    }
    let name = match dest.host() {
        Host::Ip(ip) => {
            let ruling = policy.address_ruling(dest, *ip);
            return match ruling.allowed {
                true => Ok(Permitted {
                    addrs: vec![*ip],
                    rule: ruling.rule,
                }),
                false => Err(ResolveError::Refused { rule: ruling.rule }),
            };
        }
        Host::Name(name) => name,
    };
    let addrs = lookup(resolver, name, timeout).await?;
    filter(name, addrs, |addr| policy.address_ruling(dest, addr))
}

/// The addresses the DNS server may answer for `name` (normalized) under `policy`.
pub async fn permitted_name_addresses(
    resolver: &dyn Resolve,
    policy: &Policy,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, ResolveError> {
    if let Decision::Deny { rule } = policy.decide_name(name) {
        return Err(ResolveError::Refused { rule });
    }
    let addrs = lookup(resolver, name, timeout).await?;
    filter(name, addrs, |addr| policy.name_address_ruling(name, addr)).map(|p| p.addrs)
}

async fn lookup(
    resolver: &dyn Resolve,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, ResolveError> {
    match tokio::time::timeout(timeout, resolver.lookup(name)).await {
        Err(_) => Err(ResolveError::Timeout {
            name: name.to_owned(),
        }),
        Ok(Err(source)) => Err(ResolveError::Lookup {
            name: name.to_owned(),
            source,
        }),
        Ok(Ok(addrs)) if addrs.is_empty() => Err(ResolveError::NoAddresses {
            name: name.to_owned(),
        }),
        Ok(Ok(addrs)) => Ok(addrs),
    }
}

/// Keeps the addresses `rule_for` allows, deduplicated; none left is a refusal that names
/// the first address refused and why.
fn filter(
    name: &str,
    addrs: Vec<IpAddr>,
    rule_for: impl Fn(IpAddr) -> Ruling,
) -> Result<Permitted, ResolveError> {
    let mut kept: Vec<IpAddr> = Vec::new();
    let mut first_rule = None;
    let mut first_refusal = None;
    for addr in addrs
        .into_iter()
        .take(MAX_ADDRESSES)
        .map(|a| a.to_canonical())
    {
        if kept.contains(&addr) {
            continue;
        }
        let ruling = rule_for(addr);
        if ruling.allowed {
            first_rule.get_or_insert(ruling.rule);
            kept.push(addr);
        } else {
            first_refusal.get_or_insert(ruling.rule);
        }
    }
    match first_rule {
        Some(rule) => Ok(Permitted { addrs: kept, rule }),
        None => Err(ResolveError::Refused {
            rule: format!(
                "{name} resolves only to refused addresses ({})",
                first_refusal.unwrap_or_default()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::policy::PolicyConfig;

    const T: Duration = Duration::from_secs(5);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver() -> StaticResolver {
        StaticResolver::new()
            .with(
                "mixed.example",
                [
                    ip("127.0.0.1"),
                    ip("1.1.1.1"),
                    ip("::ffff:1.1.1.1"),
                    ip("10.0.0.1"),
                ],
            )
            .with("rebind.example", [ip("127.0.0.1"), ip("169.254.169.254")])
            .with("empty.example", [])
    }

    fn default_policy() -> Policy {
        Policy::default_egress(Arc::new(PolicyConfig::new()))
    }

    #[tokio::test]
    async fn only_permitted_addresses_come_out() {
        let d = Destination::new("mixed.example", 443).unwrap();
        let p = permitted_addresses(&resolver(), &default_policy(), &d, T)
            .await
            .unwrap();
        assert_eq!(p.addrs, vec![ip("1.1.1.1")]);
        assert_eq!(p.rule, "default egress (port 443)");
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_blocked_addresses_is_refused() {
        let d = Destination::new("rebind.example", 443).unwrap();
        let err = permitted_addresses(&resolver(), &default_policy(), &d, T)
            .await
            .unwrap_err();
        let ResolveError::Refused { rule } = err else {
            panic!("{err}")
        };
        assert_eq!(
            rule,
            "rebind.example resolves only to refused addresses \
             (127.0.0.1 is a loopback address (127.0.0.0/8))"
        );
    }

    #[tokio::test]
    async fn refused_names_are_not_looked_up() {
        let p = Policy::from_proxy_config(
            Some(&json!({"access_control": {"deny_list": ["unknown.example"]}})),
            Arc::new(PolicyConfig::new()),
        )
        .unwrap();
        // The static resolver would fail with NotFound if it were asked.
        let d = Destination::new("unknown.example", 443).unwrap();
        assert!(matches!(
            permitted_addresses(&resolver(), &p, &d, T).await,
            Err(ResolveError::Refused { .. })
        ));
        let d = Destination::new("unknown.example", 22).unwrap();
        assert!(matches!(
            permitted_addresses(&resolver(), &default_policy(), &d, T).await,
            Err(ResolveError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn literals_are_checked_without_a_lookup() {
        let d = Destination::new("169.254.169.254", 80).unwrap();
        assert!(matches!(
            permitted_addresses(&resolver(), &default_policy(), &d, T).await,
            Err(ResolveError::Refused { .. })
        ));
        let d = Destination::new("1.1.1.1", 443).unwrap();
        let p = permitted_addresses(&resolver(), &default_policy(), &d, T)
            .await
            .unwrap();
        assert_eq!(p.addrs, vec![ip("1.1.1.1")]);
    }

    #[tokio::test]
    async fn lookup_failures_are_not_refusals() {
        let d = Destination::new("missing.example", 443).unwrap();
        assert!(matches!(
            permitted_addresses(&resolver(), &default_policy(), &d, T).await,
            Err(ResolveError::Lookup { .. })
        ));
        let d = Destination::new("empty.example", 443).unwrap();
        assert!(matches!(
            permitted_addresses(&resolver(), &default_policy(), &d, T).await,
            Err(ResolveError::NoAddresses { .. })
        ));
    }

    #[tokio::test]
    async fn dns_answers_are_filtered() {
        let addrs = permitted_name_addresses(&resolver(), &default_policy(), "mixed.example", T)
            .await
            .unwrap();
        assert_eq!(addrs, vec![ip("1.1.1.1")]);
        assert!(matches!(
            permitted_name_addresses(&resolver(), &default_policy(), "rebind.example", T).await,
            Err(ResolveError::Refused { .. })
        ));
    }

    /// The host's own resolver reads /etc/hosts for `localhost`: no packet leaves the machine.
    #[tokio::test]
    async fn system_resolver_answers_from_the_hosts_file_and_loopback_is_filtered() {
        let addrs = SystemResolver.lookup("localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
        let d = Destination::new("local.example", 443).unwrap();
        let err = filter("localhost", addrs, |a| {
            default_policy().address_ruling(&d, a)
        })
        .unwrap_err();
        assert!(matches!(err, ResolveError::Refused { .. }));
    }
}

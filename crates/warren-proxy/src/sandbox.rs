//! Which sandbox a connection comes from, and the policy in force for it.
//!
//! Sandboxes are told apart by the source address of their packets: each sandbox's network
//! namespace has its own address on its link to the host, and the host's firewall keeps a
//! sandbox from using another's. The daemon owns that mapping and hands the listeners a
//! [`SandboxLookup`]; [`SandboxTable`] is a ready-made one. A source the lookup does not know
//! is refused, so nothing outside a sandbox can use the proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use crate::ca::SandboxCa;
use crate::inject::Credentials;
use crate::policy::Policy;

/// A sandbox and its egress policy.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// The sandbox's id, for events and logs.
    pub sandbox_id: String,
    /// Its hostname, which its DNS answers with its own address (empty: none).
    pub hostname: String,
    /// Its workspace (a callback's `identity.tenant_id`).
    pub workspace_id: String,
    /// Its policy.
    pub policy: Policy,
    /// Its credential rules.
    pub credentials: Credentials,
    /// Its CA, for intercepting TLS to hosts its rules cover.
    pub ca: Option<Arc<SandboxCa>>,
}

impl SandboxPolicy {
    /// A sandbox with `policy` and no credential rules.
    pub fn new(sandbox_id: impl Into<String>, policy: Policy) -> Self {
        Self {
            sandbox_id: sandbox_id.into(),
            hostname: String::new(),
            workspace_id: String::new(),
            policy,
            credentials: Credentials::none(),
            ca: None,
        }
    }
}

/// Finds the sandbox behind a source address. Called once per connection (and per DNS
/// query), so a policy swapped in by the caller applies to new connections at once; open
/// connections keep the policy they started with.
pub trait SandboxLookup: Send + Sync {
    /// The sandbox whose address is `source` (canonical: never IPv4-mapped IPv6), if any.
    fn lookup(&self, source: IpAddr) -> Option<Arc<SandboxPolicy>>;
}

impl<F> SandboxLookup for F
where
    F: Fn(IpAddr) -> Option<Arc<SandboxPolicy>> + Send + Sync,
{
    fn lookup(&self, source: IpAddr) -> Option<Arc<SandboxPolicy>> {
        self(source)
    }
}

/// A map from sandbox address to sandbox, updated while the listeners run.
#[derive(Debug, Default)]
pub struct SandboxTable {
    by_addr: RwLock<HashMap<IpAddr, Arc<SandboxPolicy>>>,
}

impl SandboxTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) the sandbox at `addr`: new connections from it get this policy.
    pub fn insert(&self, addr: IpAddr, sandbox: SandboxPolicy) {
        let mut map = self.by_addr.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(addr.to_canonical(), Arc::new(sandbox));
    }

    /// Forgets the sandbox at `addr`, returning it.
    pub fn remove(&self, addr: IpAddr) -> Option<Arc<SandboxPolicy>> {
        let mut map = self.by_addr.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(&addr.to_canonical())
    }
}

impl SandboxLookup for SandboxTable {
    fn lookup(&self, source: IpAddr) -> Option<Arc<SandboxPolicy>> {
        // A poisoned lock only means a writer panicked between whole-value inserts: the map
        // itself is consistent.
        let map = self.by_addr.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&source.to_canonical()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    #[test]
    fn table_swaps_policies_and_canonicalizes_sources() {
        let table = SandboxTable::new();
        let policy = Policy::default_egress(Arc::new(PolicyConfig::new()));
        let addr: IpAddr = "100.64.0.2".parse().unwrap();
        assert!(table.lookup(addr).is_none());
        table.insert(addr, SandboxPolicy::new("a", policy.clone()));
        assert_eq!(
            table
                .lookup("::ffff:100.64.0.2".parse().unwrap())
                .unwrap()
                .sandbox_id,
            "a"
        );
        table.insert(addr, SandboxPolicy::new("b", policy));
        assert_eq!(table.lookup(addr).unwrap().sandbox_id, "b");
        assert!(table.remove(addr).is_some());
        assert!(table.lookup(addr).is_none());
    }
}

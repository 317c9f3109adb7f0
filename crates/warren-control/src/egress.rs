//! The control plane's side of the egress proxy: which sandbox a proxied connection comes from
//! (by its link's slot) and under which `proxy_config`, and the record of every connection in
//! the audit log and `/metrics`.

use serde_json::Value;
use warren_types::SandboxStatus;

use crate::config::ConfigError;
use crate::control::Control;
use crate::error::ControlError;
use crate::store::Store;
use warren_driver::{DriverError, FailureKind};

/// A running sandbox as the egress proxy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressTarget {
    /// Its public id.
    pub sandbox_id: String,
    /// Its hostname inside (its runtime id).
    pub hostname: String,
    /// Its workspace (the audit entry goes there).
    pub workspace_id: String,
    /// Its `proxy_config` now: an update applies to the next connection.
    pub proxy_config: Option<Value>,
}

/// One connection the proxy decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRecord {
    /// The sandbox's public id.
    pub sandbox_id: String,
    /// The destination host (name or address) and port.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// Whether it was let through.
    pub allowed: bool,
    /// The rule that decided.
    pub rule: String,
    /// Bytes the sandbox sent.
    pub bytes_up: u64,
    /// Bytes the sandbox received.
    pub bytes_down: u64,
}

impl Control {
    /// The running sandbox whose link has this slot, if any.
    pub fn egress_target(&self, slot: u32) -> Option<EgressTarget> {
        let id = crate::state::lock(&self.slots).get(&slot).cloned()?;
        let rec = self.store.get_sandbox(&id).ok().flatten()?;
        let live = rec.status == SandboxStatus::Ready
            && rec.handle.as_ref().is_some_and(|h| h.slot == slot);
        live.then_some(EgressTarget {
            sandbox_id: rec.id,
            hostname: rec.runtime_id.to_string(),
            workspace_id: rec.workspace_id,
            proxy_config: rec.config.proxy_config,
        })
    }

    /// Notes that a sandbox now runs on a slot (or no longer does).
    pub(crate) fn track_slot(&self, id: &str, slot: Option<u32>) {
        let mut slots = crate::state::lock(&self.slots);
        slots.retain(|_, owner| owner != id);
        if let Some(slot) = slot {
            slots.insert(slot, id.to_owned());
        }
    }

    /// The PEM certificates a booting sandbox trusts besides its image's: its own CA, when the
    /// server runs the egress proxy.
    pub(crate) fn sandbox_trust(&self, id: &str) -> Result<String, DriverError> {
        match &self.cfg.egress {
            None => Ok(String::new()),
            Some(egress) => egress.sandbox_ca(id).map_err(|e| {
                DriverError::failed(FailureKind::Other, "failed to make the sandbox's CA", e)
            }),
        }
    }

    /// Refuses a `proxy_config` that names workspace secrets the workspace does not have.
    pub(crate) fn check_secrets(
        &self,
        workspace_id: &str,
        keys: &[String],
    ) -> Result<(), ControlError> {
        for key in keys {
            if self.store.get_secret(workspace_id, key)?.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "proxy_config names workspace secret {key}, which is not set (set it with \
                     PUT /api/v1/workspaces/current/secrets/{key} or `warren secret set {key}`)"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The public keys proxy callbacks and login-mode user tokens are signed with
    /// (`/.well-known/jwks.json`); none without a signing key.
    pub fn jwks(&self) -> Value {
        match &self.cfg.signer {
            Some(signer) => signer.jwks(),
            None => serde_json::json!({"keys": []}),
        }
    }

    /// Records a proxied connection in the audit log and the metrics.
    pub fn egress_connection(&self, ev: &EgressRecord) {
        self.metrics.egress(ev.allowed, ev.bytes_up, ev.bytes_down);
        let workspace_id = self
            .store
            .get_sandbox(&ev.sandbox_id)
            .ok()
            .flatten()
            .map(|r| r.workspace_id);
        let verdict = if ev.allowed { "allowed" } else { "denied" };
        self.append_audit(
            workspace_id,
            None,
            &format!("egress.{verdict}"),
            Some(ev.sandbox_id.clone()),
            Some(format!(
                "{}:{} rule={} up={} down={}",
                ev.host, ev.port, ev.rule, ev.bytes_up, ev.bytes_down
            )),
        );
    }
}

//! The audit log: who did what to which sandbox, appended by every verb.

use crate::control::{Control, now};
use crate::error::ControlError;
use crate::store::{AuditEntry, Principal, SandboxRecord, Store, rfc3339};

impl Control {
    /// Appends to the audit log; failures are logged, never surfaced to the caller.
    pub fn audit(
        &self,
        p: Option<&Principal>,
        action: &str,
        target: Option<&str>,
        detail: Option<String>,
    ) {
        let entry = AuditEntry {
            seq: 0,
            at: rfc3339(now()),
            workspace_id: p.map(|p| p.workspace_id.clone()),
            user_id: p.map(|p| p.user_id.clone()),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!(error = %e, action, "failed to append to the audit log");
        }
    }

    /// Appends what the server did on its own to a sandbox (an idle stop, an auto-delete), in
    /// the sandbox's workspace, so its admins see it.
    pub(crate) fn audit_system(&self, rec: &SandboxRecord, action: &str) {
        let entry = AuditEntry {
            seq: 0,
            at: rfc3339(now()),
            workspace_id: Some(rec.workspace_id.clone()),
            user_id: None,
            action: action.to_owned(),
            target: Some(rec.id.clone()),
            detail: Some(rec.name.clone()),
        };
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!(error = %e, action, "failed to append to the audit log");
        }
    }

    /// Audit entries visible to the caller (admins: the workspace; others: their own).
    pub fn list_audit(
        &self,
        p: &Principal,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ControlError> {
        let mut entries = self.store.list_audit(Some(&p.workspace_id), after, limit)?;
        if !p.is_admin {
            entries.retain(|e| e.user_id.as_deref() == Some(&p.user_id));
        }
        Ok(entries)
    }
}

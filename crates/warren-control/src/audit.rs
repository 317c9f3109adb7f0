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
        self.append_audit(
            p.map(|p| p.workspace_id.clone()),
            p.map(|p| p.user_id.clone()),
            action,
            target.map(str::to_owned),
            detail,
        );
    }

    /// Appends what the server did on its own to a sandbox (an idle stop, an auto-delete), in
    /// the sandbox's workspace, so its admins see it.
    pub(crate) fn audit_system(&self, rec: &SandboxRecord, action: &str) {
        self.append_audit(
            Some(rec.workspace_id.clone()),
            None,
            action,
            Some(rec.id.clone()),
            Some(rec.name.clone()),
        );
    }

    /// The one place an entry is written: every kind of entry above and the egress proxy's.
    pub(crate) fn append_audit(
        &self,
        workspace_id: Option<String>,
        user_id: Option<String>,
        action: &str,
        target: Option<String>,
        detail: Option<String>,
    ) {
        let entry = AuditEntry {
            seq: 0,
            at: rfc3339(now()),
            workspace_id,
            user_id,
            action: action.to_owned(),
            target,
            detail,
        };
        self.audit_log.append(entry);
    }

    /// Returns once every audit entry appended so far is in the database (a daemon shutting
    /// down).
    pub fn flush_audit(&self) {
        self.audit_log.flush();
    }

    /// Audit entries visible to the caller (admins: the workspace; others: their own).
    pub fn list_audit(
        &self,
        p: &Principal,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ControlError> {
        self.audit_log.flush();
        let mut entries = self.store.list_audit(Some(&p.workspace_id), after, limit)?;
        if !p.is_admin {
            entries.retain(|e| e.user_id.as_deref() == Some(&p.user_id));
        }
        Ok(entries)
    }
}

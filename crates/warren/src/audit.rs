//! `warren audit`: reads the append-only audit log straight from the state database, so it works
//! whether or not the daemon runs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use warren_control::{SqliteStore, Store};
use warren_wire::ops::AuditEntry;

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only entries after this sequence number (default: the newest `--limit` entries).
    #[arg(long)]
    after: Option<i64>,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub(crate) fn audit(data_dir: &Path, args: AuditArgs) -> Result<ExitCode> {
    let db = data_dir.join("warren.db");
    let store = SqliteStore::open_read_only(&db)
        .with_context(|| format!("failed to open {}", db.display()))?;
    let after = match args.after {
        Some(a) => a,
        None => (store
            .last_audit_seq()
            .context("failed to read the audit log")?
            - i64::from(args.limit))
        .max(0),
    };
    let entries = store
        .list_audit(None, after, args.limit)
        .context("failed to read the audit log")?;
    for e in entries {
        if args.json {
            println!("{}", serde_json::to_string(&wire_entry(e))?);
        } else {
            println!(
                "{:>6} {} user={} {} {} {}",
                e.seq,
                e.at,
                e.user_id.as_deref().unwrap_or("-"),
                e.action,
                e.target.as_deref().unwrap_or("-"),
                e.detail.as_deref().unwrap_or(""),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An entry as the API's `/audit` answers it, so `--json` lines read the same either way.
fn wire_entry(e: warren_control::AuditEntry) -> AuditEntry {
    AuditEntry {
        seq: e.seq,
        at: e.at,
        workspace_id: e.workspace_id,
        user_id: e.user_id,
        action: e.action,
        target: e.target,
        detail: e.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_the_store_s_shape() {
        let e = warren_control::AuditEntry {
            seq: 7,
            at: "2025-01-01T00:00:00Z".into(),
            workspace_id: Some("w".into()),
            user_id: None,
            action: "exec".into(),
            target: Some("sb".into()),
            detail: Some("echo hi".into()),
        };
        assert_eq!(
            serde_json::to_string(&wire_entry(e.clone())).unwrap(),
            serde_json::to_string(&e).unwrap()
        );
    }
}

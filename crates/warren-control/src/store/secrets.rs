//! The `secrets` table: one row per workspace secret, its custom hosts as JSON in the row, so
//! the egress proxy's lookup is a single primary-key read.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{SecretHostRecord, SecretRecord, StoreError, rfc3339};

/// A custom host as the `hosts` column holds it.
#[derive(Debug, Serialize, Deserialize)]
struct RawHost {
    id: String,
    host_pattern: String,
    header_name: Option<String>,
    header_value_template: Option<String>,
    created_at: String,
    updated_at: String,
}

fn time(s: &str) -> Result<SystemTime, StoreError> {
    humantime::parse_rfc3339(s).map_err(|e| StoreError::Decode {
        what: "secret timestamp",
        source: Box::new(e),
    })
}

fn encode_hosts(hosts: &[SecretHostRecord]) -> Result<String, StoreError> {
    let raw: Vec<RawHost> = hosts
        .iter()
        .map(|h| RawHost {
            id: h.id.clone(),
            host_pattern: h.host_pattern.clone(),
            header_name: h.header_name.clone(),
            header_value_template: h.header_value_template.clone(),
            created_at: rfc3339(h.created_at),
            updated_at: rfc3339(h.updated_at),
        })
        .collect();
    serde_json::to_string(&raw).map_err(|e| StoreError::Decode {
        what: "secret hosts",
        source: Box::new(e),
    })
}

fn decode_hosts(text: &str) -> Result<Vec<SecretHostRecord>, StoreError> {
    let raw: Vec<RawHost> = serde_json::from_str(text).map_err(|e| StoreError::Decode {
        what: "secret hosts",
        source: Box::new(e),
    })?;
    raw.into_iter()
        .map(|h| {
            Ok(SecretHostRecord {
                created_at: time(&h.created_at)?,
                updated_at: time(&h.updated_at)?,
                id: h.id,
                host_pattern: h.host_pattern,
                header_name: h.header_name,
                header_value_template: h.header_value_template,
            })
        })
        .collect()
}

/// The columns of a row, before decoding.
type Row = (String, String, String, String, String);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn decode((key, value, hosts, created, updated): Row) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        key,
        value,
        hosts: decode_hosts(&hosts)?,
        created_at: time(&created)?,
        updated_at: time(&updated)?,
    })
}

pub(super) fn get(
    conn: &Connection,
    workspace_id: &str,
    key: &str,
) -> Result<Option<SecretRecord>, StoreError> {
    conn.query_row(
        "SELECT key, value, hosts, created_at, updated_at FROM secrets \
         WHERE workspace_id = ?1 AND key = ?2",
        params![workspace_id, key],
        row,
    )
    .optional()?
    .map(decode)
    .transpose()
}

pub(super) fn list(conn: &Connection, workspace_id: &str) -> Result<Vec<SecretRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT key, value, hosts, created_at, updated_at FROM secrets \
         WHERE workspace_id = ?1 ORDER BY key",
    )?;
    let rows = stmt.query_map(params![workspace_id], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode(r?)?);
    }
    Ok(out)
}

pub(super) fn put(
    conn: &Connection,
    workspace_id: &str,
    rec: &SecretRecord,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO secrets (workspace_id, key, value, hosts, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (workspace_id, key) DO UPDATE SET value = excluded.value, \
         hosts = excluded.hosts, updated_at = excluded.updated_at",
        params![
            workspace_id,
            rec.key,
            rec.value,
            encode_hosts(&rec.hosts)?,
            rfc3339(rec.created_at),
            rfc3339(rec.updated_at),
        ],
    )?;
    Ok(())
}

pub(super) fn delete(conn: &Connection, workspace_id: &str, key: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "DELETE FROM secrets WHERE workspace_id = ?1 AND key = ?2",
        params![workspace_id, key],
    )?;
    Ok(n > 0)
}

//! The `snapshots` and `snapshot_tags` tables: snapshot records by id, and the `name:tag`
//! pointers of a workspace.

use std::collections::BTreeMap;
use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};
use warren_types::RunConfig;

use super::{SqliteStore, StoreError, rfc3339};

/// A snapshot's build state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// Being pulled, unpacked or captured.
    Building,
    /// Sandboxes can boot from it.
    Ready,
    /// The build failed; `status_message` says why.
    Failed,
}

impl SnapshotStatus {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "building" => Ok(Self::Building),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Decode {
                what: "snapshot status",
                source: format!("unknown status {other:?}").into(),
            }),
        }
    }
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// Public id (UUID); also names its image, `snapshot/<id>`.
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Its name (the repository part of `name:tag`).
    pub name: String,
    /// Build state.
    pub status: SnapshotStatus,
    /// Why it failed.
    pub status_message: Option<String>,
    /// Disk size of sandboxes booted from it, at least.
    pub fs_capacity_bytes: u64,
    /// Bytes its files take, when known.
    pub fs_used_bytes: Option<u64>,
    /// The image it was built from.
    pub docker_image: Option<String>,
    /// That image's manifest digest.
    pub image_digest: Option<String>,
    /// The sandbox it was captured from.
    pub source_sandbox_id: Option<String>,
    /// Registry credentials used for the pull.
    pub registry_id: Option<String>,
    /// What sandboxes booted from it start with.
    pub run_config: RunConfig,
    /// Labels sandboxes booted from it inherit.
    pub labels: BTreeMap<String, String>,
    /// Free text.
    pub description: Option<String>,
    /// The settings of its sandbox it carries (capture's `include`).
    pub carried: crate::carry::Carried,
    /// Creating user.
    pub created_by: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
}

const COLUMNS: &str = "id, workspace_id, name, status, status_message, fs_capacity_bytes, \
    fs_used_bytes, docker_image, image_digest, source_sandbox_id, registry_id, run_config, \
    labels, description, created_by, created_at, updated_at, carried";

type Raw = (
    [String; 4],
    Option<String>,
    i64,
    Option<i64>,
    [Option<String>; 4],
    [String; 2],
    Option<String>,
    [String; 3],
    String,
);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?],
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        [r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?],
        [r.get(11)?, r.get(12)?],
        r.get(13)?,
        [r.get(14)?, r.get(15)?, r.get(16)?],
        r.get(17)?,
    ))
}

fn decode_json<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Decode {
        what,
        source: Box::new(e),
    })
}

fn time(s: &str) -> Result<SystemTime, StoreError> {
    humantime::parse_rfc3339(s).map_err(|e| StoreError::Decode {
        what: "snapshot timestamp",
        source: Box::new(e),
    })
}

fn decode(raw: Raw) -> Result<SnapshotRecord, StoreError> {
    let (
        [id, workspace_id, name, status],
        status_message,
        cap,
        used,
        opts,
        [rc, labels],
        description,
        [by, created, updated],
        carried,
    ) = raw;
    let [docker_image, image_digest, source_sandbox_id, registry_id] = opts;
    Ok(SnapshotRecord {
        id,
        workspace_id,
        name,
        status: SnapshotStatus::parse(&status)?,
        status_message,
        fs_capacity_bytes: u64::try_from(cap).unwrap_or(0),
        fs_used_bytes: used.and_then(|u| u64::try_from(u).ok()),
        docker_image,
        image_digest,
        source_sandbox_id,
        registry_id,
        run_config: decode_json(&rc, "snapshot run_config")?,
        labels: decode_json(&labels, "snapshot labels")?,
        description,
        carried: decode_json(&carried, "snapshot carried settings")?,
        created_by: by,
        created_at: time(&created)?,
        updated_at: time(&updated)?,
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Writes a snapshot's record (insert or replace by id).
    pub(crate) fn put_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        self.lock().execute(
            &format!("INSERT OR REPLACE INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"),
            params![
                s.id,
                s.workspace_id,
                s.name,
                s.status.as_str(),
                s.status_message,
                int(s.fs_capacity_bytes),
                s.fs_used_bytes.map(int),
                s.docker_image,
                s.image_digest,
                s.source_sandbox_id,
                s.registry_id,
                json(&s.run_config),
                json(&s.labels),
                s.description,
                s.created_by,
                rfc3339(s.created_at),
                rfc3339(s.updated_at),
                json(&s.carried),
            ],
        )?;
        Ok(())
    }

    /// A snapshot by id, in any workspace.
    pub(crate) fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let raw = self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?;
        raw.map(decode).transpose()
    }

    /// Every snapshot of a workspace (every workspace with `None`), newest first.
    pub(crate) fn list_snapshots(
        &self,
        workspace_id: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE ?1 IS NULL OR workspace_id = ?1 ORDER BY created_at DESC, id"
        ))?;
        let raws = stmt
            .query_map(params![workspace_id], row)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(decode).collect()
    }

    /// Removes a snapshot and every tag pointing at it.
    pub(crate) fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM snapshot_tags WHERE snapshot_id = ?1",
            params![id],
        )?;
        tx.execute("DELETE FROM snapshots WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    /// Points `name:tag` of a workspace at a snapshot, moving it off any other.
    pub(crate) fn set_tag(
        &self,
        workspace_id: &str,
        name: &str,
        tag: &str,
        snapshot_id: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO snapshot_tags (workspace_id, name, tag, snapshot_id) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (workspace_id, name, tag) DO UPDATE SET snapshot_id = excluded.snapshot_id",
            params![workspace_id, name, tag, snapshot_id],
        )?;
        Ok(())
    }

    /// The snapshot `name:tag` points at in a workspace.
    pub(crate) fn resolve_tag(
        &self,
        workspace_id: &str,
        name: &str,
        tag: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT snapshot_id FROM snapshot_tags WHERE workspace_id = ?1 AND name = ?2 AND tag = ?3",
                params![workspace_id, name, tag],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The tags that point at a snapshot, sorted.
    pub(crate) fn tags_of(&self, snapshot_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT tag FROM snapshot_tags WHERE snapshot_id = ?1 ORDER BY tag")?;
        let tags = stmt
            .query_map(params![snapshot_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(tags)
    }

    /// The `(tag, snapshot id)` pairs of a name in a workspace, sorted by tag.
    pub(crate) fn tags_of_name(
        &self,
        workspace_id: &str,
        name: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT tag, snapshot_id FROM snapshot_tags WHERE workspace_id = ?1 AND name = ?2 ORDER BY tag",
        )?;
        let tags = stmt
            .query_map(params![workspace_id, name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(tags)
    }
}

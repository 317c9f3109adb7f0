//! Tables of one JSON document per row, keyed by id and unique by name in a workspace: the
//! shape of `registries`, `volumes` and `templates`. Each of those modules names its table and
//! its record type; the SQL lives here once.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{SqliteStore, StoreError};

/// A table with columns `id`, `workspace_id`, `name` (unique per workspace) and `body`.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonTable {
    /// Table name (a constant: it is formatted into SQL).
    pub table: &'static str,
    /// What a row is, for errors ("volume").
    pub what: &'static str,
}

/// The columns a row is found by.
pub(super) struct RowKey<'a> {
    pub id: &'a str,
    pub workspace_id: &'a str,
    pub name: &'a str,
}

impl JsonTable {
    fn codec(self, e: serde_json::Error) -> StoreError {
        StoreError::Decode {
            what: self.what,
            source: Box::new(e),
        }
    }

    fn decode<T: DeserializeOwned>(self, body: &str) -> Result<T, StoreError> {
        serde_json::from_str(body).map_err(|e| self.codec(e))
    }
}

impl SqliteStore {
    /// Inserts or replaces a row by id; `Conflict` when the name is taken in the workspace.
    pub(super) fn put_row<T: Serialize>(
        &self,
        t: JsonTable,
        key: RowKey<'_>,
        value: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(value).map_err(|e| t.codec(e))?;
        let result = self.lock().execute(
            &format!(
                "INSERT INTO {} (id, workspace_id, name, body) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                t.table
            ),
            params![key.id, key.workspace_id, key.name, body],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("{} '{}'", t.what, key.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A workspace's row by id or name.
    pub(super) fn find_row<T: DeserializeOwned>(
        &self,
        t: JsonTable,
        workspace_id: &str,
        id_or_name: &str,
    ) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row(
                &format!(
                    "SELECT body FROM {} WHERE workspace_id = ?1 AND (id = ?2 OR name = ?2) \
                     ORDER BY name = ?2 DESC LIMIT 1",
                    t.table
                ),
                params![workspace_id, id_or_name],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| t.decode(&b)).transpose()
    }

    /// A workspace's rows (every workspace's with `None`), by name.
    pub(super) fn list_rows<T: DeserializeOwned>(
        &self,
        t: JsonTable,
        workspace_id: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT body FROM {} WHERE ?1 IS NULL OR workspace_id = ?1 ORDER BY name",
            t.table
        ))?;
        let bodies = stmt
            .query_map(params![workspace_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        bodies.iter().map(|b| t.decode(b)).collect()
    }

    /// Removes a row by id (in the workspace, when given); false if there was none.
    pub(super) fn delete_row(
        &self,
        t: JsonTable,
        workspace_id: Option<&str>,
        id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().execute(
            &format!(
                "DELETE FROM {} WHERE id = ?1 AND (?2 IS NULL OR workspace_id = ?2)",
                t.table
            ),
            params![id, workspace_id],
        )? > 0)
    }
}

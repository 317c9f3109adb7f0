//! API keys: the first admin key, key creation, listing and revocation, and authentication.

use std::path::Path;

use crate::auth;
use crate::config::validate_name;
use crate::control::Control;
use crate::error::ControlError;
use crate::store::{KeyInfo, Principal, Store, StoreError};

impl Control {
    pub(crate) fn bootstrap_admin(&self) -> Result<Option<String>, ControlError> {
        if self.store.has_users()? {
            return Ok(None);
        }
        let ws = self.store.create_workspace("default")?;
        let user = self.store.create_user(&ws, "admin", true)?;
        let key = auth::generate_key()
            .map_err(|e| ControlError::Exhausted(format!("failed to generate a key: {e}")))?;
        self.store.add_key(&user, &auth::hash_key(&key))?;
        write_secret(&self.cfg.data_dir.join("admin.key"), &key)
            .map_err(|e| ControlError::Exhausted(format!("failed to write admin.key: {e}")))?;
        Ok(Some(key))
    }

    /// The principal an API key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<Option<Principal>, ControlError> {
        self.authenticate_hash(auth::hash_key(key))
    }

    /// The principal of the unrevoked key with this hash (what a sign-in session keeps of the
    /// key it was made with, so revoking the key ends the session).
    pub(crate) fn authenticate_hash(
        &self,
        hash: String,
    ) -> Result<Option<Principal>, ControlError> {
        let generation = match self.keys.get(&hash) {
            Ok(p) => return Ok(Some(p)),
            Err(generation) => generation,
        };
        let p = self.store.principal_for_key(&hash)?;
        if let Some(p) = &p {
            self.keys.insert(generation, hash, p.clone());
        }
        Ok(p)
    }

    /// Creates a user in the caller's workspace with a new key. Admins only.
    pub fn create_key(
        &self,
        p: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(String, String), ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can create keys".into(),
            ));
        }
        validate_name(name)?;
        let user = match self.store.create_user(&p.workspace_id, name, admin) {
            Ok(u) => u,
            Err(StoreError::Conflict(_)) => {
                return Err(ControlError::Conflict(format!(
                    "user '{name}' already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let key = auth::generate_key()
            .map_err(|e| ControlError::Exhausted(format!("failed to generate a key: {e}")))?;
        let id = self.store.add_key(&user, &auth::hash_key(&key))?;
        self.audit(Some(p), "key.create", Some(&id), Some(name.to_owned()));
        Ok((id, key))
    }

    /// Keys of the caller's workspace. Admins only.
    pub fn list_keys(&self, p: &Principal) -> Result<Vec<KeyInfo>, ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can list keys".into(),
            ));
        }
        Ok(self.store.list_keys(&p.workspace_id)?)
    }

    /// Revokes a key of the caller's workspace. Admins only.
    pub fn revoke_key(&self, p: &Principal, key_id: &str) -> Result<(), ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can revoke keys".into(),
            ));
        }
        if !self.store.revoke_key(&p.workspace_id, key_id)? {
            return Err(ControlError::NotFound(format!("key '{key_id}' not found")));
        }
        self.keys.invalidate();
        self.revocations.send_modify(|n| *n += 1);
        self.audit(Some(p), "key.revoke", Some(key_id), None);
        Ok(())
    }
}

/// Writes a secret file readable by its owner only, atomically.
pub(crate) fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

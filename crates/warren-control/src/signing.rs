//! The key service tokens and download links are signed with, and the signing itself.
//!
//! HS256 with a 32-byte random key kept in `<data-dir>/service-token.key` (mode 0600, made on
//! first use): this server is the only party that mints and verifies these tokens (the SDKs
//! treat them as opaque, §6.3), so a shared secret is enough and no public key has to be
//! published; asymmetric keys would only matter if a third party verified them. Rotating the
//! key ([`Control::rotate_service_key`]) invalidates every outstanding token and link.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::Control;
use crate::error::ControlError;
use crate::state::lock;
use crate::store::Principal;

const KEY_FILE: &str = "service-token.key";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token came with the request.
    #[error(
        "missing service token: send the X-Langsmith-Sandbox-Service-Token header or open the browser_url first"
    )]
    Missing,
    /// The token is not one this server signed (malformed or tampered with).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's lifetime is over.
    #[error("token expired")]
    Expired,
    /// The token is valid but for another sandbox, port or purpose.
    #[error("{0}")]
    Foreign(String),
    /// The grant the token belongs to was revoked.
    #[error("the service URL was revoked")]
    Revoked,
    /// The token's user or sandbox no longer exists, or the key could not be read.
    #[error("{0}")]
    Unusable(String),
}

fn read_or_create(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let hex = s.trim();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new(path),
        Err(e) => Err(e),
    }
}

fn write_new(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    crate::keys::write_secret(path, &hex)?;
    Ok(key)
}

impl Control {
    pub(crate) fn service_key(&self) -> Result<Arc<Vec<u8>>, ControlError> {
        let mut slot = lock(&self.service_key);
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let path = self.cfg.data_dir.join(KEY_FILE);
        let key = read_or_create(&path).map_err(|e| {
            ControlError::Unavailable(format!("failed to read or create {KEY_FILE}: {e}"))
        })?;
        let key = Arc::new(key);
        *slot = Some(key.clone());
        Ok(key)
    }

    /// Replaces the signing key (admins only): every service token and download link minted so
    /// far, in every workspace, stops working.
    pub fn rotate_service_key(&self, p: &Principal) -> Result<(), ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can rotate the service token key".into(),
            ));
        }
        self.replace_service_key()?;
        self.audit(Some(p), "service.rotate_key", None, None);
        Ok(())
    }

    pub(crate) fn replace_service_key(&self) -> Result<(), ControlError> {
        let mut slot = lock(&self.service_key);
        let path = self.cfg.data_dir.join(KEY_FILE);
        let key = write_new(&path)
            .map_err(|e| ControlError::Unavailable(format!("failed to write {KEY_FILE}: {e}")))?;
        *slot = Some(Arc::new(key));
        drop(slot);
        // Connections let in by a token or session of the old key end too.
        self.grant_changes.send_modify(|n| *n += 1);
        Ok(())
    }

    pub(crate) fn sign<C: Serialize>(&self, claims: &C) -> Result<String, ControlError> {
        let key = self.service_key()?;
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&key),
        )
        .map_err(|e| ControlError::Unavailable(format!("failed to sign a token: {e}")))
    }

    /// Checks the signature, the expiry (no leeway) and the audience.
    pub(crate) fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        require_exp: bool,
    ) -> Result<C, TokenError> {
        self.verify_keyed(token, audience, require_exp)
            .map(|(claims, _)| claims)
    }

    /// [`Control::verify`], with the key that verified the token: what an open connection
    /// compares with the current key to learn of a rotation. A second read of the key could
    /// see one rotated in between, and the connection would never learn of it.
    pub(crate) fn verify_keyed<C: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        require_exp: bool,
    ) -> Result<(C, Arc<Vec<u8>>), TokenError> {
        let key = self
            .service_key()
            .map_err(|e| TokenError::Unusable(e.to_string()))?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_audience(&[audience]);
        if require_exp {
            v.set_required_spec_claims(&["exp", "aud", "sub"]);
        } else {
            // Still checked when present.
            v.set_required_spec_claims(&["aud", "sub"]);
        }
        match jsonwebtoken::decode::<C>(token, &DecodingKey::from_secret(&key), &v) {
            Ok(d) => Ok((d.claims, key)),
            Err(e) => Err(match e.kind() {
                JwtErrorKind::ExpiredSignature => TokenError::Expired,
                JwtErrorKind::InvalidAudience => {
                    TokenError::Foreign(format!("the token is not for {audience}"))
                }
                _ => TokenError::Invalid(e.to_string()),
            }),
        }
    }
}

//! API keys: generated from the OS's randomness, shown once, stored only as SHA-256 hashes.
//! Keys carry 192 random bits, so a plain (unsalted, fast) hash is enough: nothing about them
//! can be guessed offline.

use sha2::{Digest, Sha256};

use crate::error::ControlError;
use crate::store::Principal;

/// Prefix of every Warren API key, so leaked keys are recognisable by scanners.
pub const KEY_PREFIX: &str = "wrn_";

/// A fresh API key.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{KEY_PREFIX}{hex}"))
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a caller who is not a workspace admin: "only workspace admins may {what}".
pub(crate) fn admin_only(p: &Principal, what: &str) -> Result<(), ControlError> {
    if p.is_admin {
        Ok(())
    } else {
        Err(ControlError::Forbidden(format!(
            "only workspace admins may {what}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_hashes_stable() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 48);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

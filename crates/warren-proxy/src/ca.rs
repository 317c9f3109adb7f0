//! Per-sandbox certificate authorities, for intercepting TLS to hosts a credential rule covers.
//!
//! Each sandbox gets its own CA, made when the sandbox is created and kept in the daemon's data
//! directory (one file per sandbox, mode 0600, never inside a sandbox). Only that sandbox trusts
//! it (its trust store), so a certificate the proxy issues for one sandbox is worthless in any
//! other, and the proxy issues certificates only for hosts the sandbox's own rules cover.
//! Leaf certificates share one key per CA and are cached per host for a day.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::policy::Host;

/// How long an issued leaf certificate is used before a fresh one is made.
const LEAF_REUSE: StdDuration = StdDuration::from_secs(24 * 3600);
/// Most hosts whose leaf configurations one CA keeps cached.
const MAX_CACHED_LEAVES: usize = 256;

/// Why a CA could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing its file failed.
    #[error("sandbox CA file: {0}")]
    Io(#[from] io::Error),
    /// Generating or parsing a key or certificate failed.
    #[error("sandbox CA: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("sandbox CA: {0}")]
    Tls(#[from] rustls::Error),
    /// The id cannot name a file.
    #[error("invalid sandbox id for a CA file")]
    BadId,
    /// The file exists but is not a CA this store wrote.
    #[error("sandbox CA file is damaged")]
    Damaged,
}

/// The CAs of all sandboxes, on disk under one directory.
#[derive(Debug)]
pub struct CaStore {
    dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<SandboxCa>>>,
    making: Mutex<()>,
}

impl CaStore {
    /// The store in `dir`, created (mode 0700) if absent.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CaError> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        // An existing directory keeps its mode otherwise.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir,
            loaded: Mutex::new(HashMap::new()),
            making: Mutex::new(()),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, CaError> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        match ok {
            true => Ok(self.dir.join(format!("{id}.pem"))),
            false => Err(CaError::BadId),
        }
    }

    /// The sandbox's CA, made now if it has none.
    pub fn ensure(&self, id: &str) -> Result<Arc<SandboxCa>, CaError> {
        // One maker at a time: two boots of one sandbox must not make two CAs.
        let _making = self.making.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ca) = self.get(id)? {
            return Ok(ca);
        }
        let path = self.path(id)?;
        let ca = SandboxCa::generate(id)?;
        let tmp = self.dir.join(format!(".{id}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp); // a leftover of a crash, whatever its mode
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(ca.cert_pem.as_bytes())?;
        file.write_all(ca.key_pem.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        let ca = Arc::new(ca);
        self.cache().insert(id.to_owned(), ca.clone());
        Ok(ca)
    }

    /// The sandbox's CA if it has one.
    pub fn get(&self, id: &str) -> Result<Option<Arc<SandboxCa>>, CaError> {
        if let Some(ca) = self.cache().get(id) {
            return Ok(Some(ca.clone()));
        }
        let pem = match fs::read_to_string(self.path(id)?) {
            Ok(pem) => pem,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ca = Arc::new(SandboxCa::load(id, &pem)?);
        self.cache().insert(id.to_owned(), ca.clone());
        Ok(Some(ca))
    }

    /// Forgets the sandbox's CA and deletes its file (a deleted sandbox's CA is never used
    /// again). Idempotent.
    pub fn remove(&self, id: &str) -> Result<(), CaError> {
        self.cache().remove(id);
        match fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SandboxCa>>> {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One sandbox's CA.
pub struct SandboxCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    leaves: Mutex<HashMap<Host, (Instant, Arc<ServerConfig>)>>,
}

impl std::fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCa").finish_non_exhaustive()
    }
}

fn ca_params(id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warren");
    dn.push(
        DnType::CommonName,
        format!("Warren egress proxy CA for sandbox {id}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl SandboxCa {
    fn generate(id: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(id);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Self::new(id, cert.pem(), cert.der().clone(), key)
    }

    fn load(id: &str, pem: &str) -> Result<Self, CaError> {
        let end = "-----END CERTIFICATE-----";
        let split = pem.find(end).ok_or(CaError::Damaged)? + end.len();
        let (cert_pem, key_pem) = pem.split_at(split);
        let key = KeyPair::from_pem(key_pem.trim()).map_err(|_| CaError::Damaged)?;
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CaError::Damaged)?;
        Self::new(id, format!("{}\n", cert_pem.trim()), der, key)
    }

    fn new(
        id: &str,
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        key: KeyPair,
    ) -> Result<Self, CaError> {
        let key_pem = key.serialize_pem();
        // The issuer needs only the CA's name, key identifier method and usages, which
        // `ca_params` reproduces exactly; the key is the one the certificate was made with.
        let issuer = Issuer::new(ca_params(id), key);
        Ok(Self {
            cert_pem,
            cert_der,
            key_pem,
            issuer,
            leaf_key: KeyPair::generate()?,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM, for the sandbox's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server configuration presenting a certificate for `host`, issued by this CA.
    pub(crate) fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, CaError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((made, config)) = leaves.get(host)
            && made.elapsed() < LEAF_REUSE
        {
            return Ok(config.clone());
        }
        let name = match host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(7);
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone(), self.cert_der.clone()], key)?;
        // HTTP/1.1 only: the interceptor speaks HTTP/1.1 to both sides.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if leaves.len() >= MAX_CACHED_LEAVES {
            leaves.clear();
        }
        leaves.insert(host.clone(), (Instant::now(), config.clone()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_kept_private_reloaded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaStore::open(dir.path().join("ca")).unwrap();
        let ca = store.ensure("sb-1").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let path = dir.path().join("ca/sb-1.pem");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(dir.path().join("ca"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(store.ensure("sb-1").unwrap().cert_pem(), ca.cert_pem());
        // A fresh store (a restarted daemon) loads the same CA from disk.
        let again = CaStore::open(dir.path().join("ca")).unwrap();
        let loaded = again.get("sb-1").unwrap().unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        loaded
            .server_config(&Host::Name("api.example.com".into()))
            .unwrap();
        assert_ne!(store.ensure("sb-2").unwrap().cert_pem(), ca.cert_pem());
        store.remove("sb-1").unwrap();
        store.remove("sb-1").unwrap();
        assert!(!path.exists());
        assert!(store.get("sb-1").unwrap().is_none());
        for bad in ["", "../x", "a/b", "a.pem"] {
            assert!(matches!(store.ensure(bad), Err(CaError::BadId)), "{bad}");
        }
    }
}

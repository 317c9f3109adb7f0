//! Calling `proxy_config.callbacks` ([`crate::inject::callback`]): the signed POST, the answer,
//! and the answers kept for their time to live.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::{Client, upstream};
use crate::inject::Scheme;
use crate::inject::callback::{Callback, answer_headers};
use crate::policy::{Destination, Host};
use crate::sandbox::SandboxPolicy;

/// The `sub` of every callback signature, as the SDK's verifier requires.
const CALLBACK_SUBJECT: &str = "langsmith-sandbox-callback";
/// The header the signature goes in.
pub const SIGNATURE_HEADER: &str = "x-langsmith-signature-jwt";
/// How long a signature is valid.
const SIGNATURE_TTL: Duration = Duration::from_secs(300);
/// Most bytes of a callback's answer.
const MAX_ANSWER: usize = 64 * 1024;
/// Most answers kept at once over all sandboxes.
const MAX_CACHED: usize = 4096;

/// The server's Ed25519 key for callback signatures, published at `/.well-known/jwks.json`.
pub struct CallbackSigner {
    kid: String,
    key: EncodingKey,
    public: Vec<u8>,
    issuer: String,
}

impl std::fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl CallbackSigner {
    /// The key in `path` (PKCS#8 PEM, mode 0600), made if absent; `issuer` is the server's
    /// public URL (the signatures' `iss`).
    pub fn load_or_create(path: &Path, issuer: &str) -> io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bad = |e: rcgen::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let pair = match std::fs::read_to_string(path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(bad)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(bad)?;
                let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                file.write_all(pair.serialize_pem().as_bytes())?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)?;
                pair
            }
            Err(e) => return Err(e),
        };
        if !pair.is_compatible(&rcgen::PKCS_ED25519) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the callback signing key is not Ed25519",
            ));
        }
        let public = pair.public_key_raw().to_vec();
        let kid = format!("{:x}", Sha256::digest(&public))[..16].to_owned();
        Ok(Self {
            kid,
            key: EncodingKey::from_ed_der(&pair.serialize_der()),
            public,
            issuer: issuer.trim_end_matches('/').to_owned(),
        })
    }

    /// The public key as a JWK Set.
    pub fn jwks(&self) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public);
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]})
    }

    /// A signature of `body` for the callback at `aud`.
    pub fn sign(&self, aud: &str, body: &[u8]) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.sign_claims(&json!({
            "iss": self.issuer,
            "aud": aud,
            "sub": CALLBACK_SUBJECT,
            "iat": now,
            "exp": now + SIGNATURE_TTL.as_secs(),
            "body_sha256": format!("{:x}", Sha256::digest(body)),
        }))
    }

    /// A JWS of `claims` as given (EdDSA, this key's `kid`): the server's other tokens that
    /// third parties verify by the same JWKS, such as login-mode service URLs' user tokens.
    pub fn sign_claims(&self, claims: &Value) -> Result<String, String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| e.to_string())
    }
}

type Answer = Arc<Vec<(HeaderName, HeaderValue)>>;

/// Answers kept until they expire, by sandbox, callback and (for destination callbacks) host.
#[derive(Debug, Default)]
pub(super) struct AnswerCache {
    map: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl AnswerCache {
    fn get(&self, key: &str) -> Option<Answer> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, a)| a.clone())
    }

    fn put(&self, key: String, until: Instant, answer: Answer) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CACHED {
            let now = Instant::now();
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(key, (until, answer));
    }
}

/// Sets the headers the sandbox's callbacks give for a request to `dest`: every attribution
/// callback's, and the first destination callback's that covers `dest`. Returns the callbacks
/// used, for the connection's event.
pub(super) async fn apply(
    client: &Client,
    sandbox: &SandboxPolicy,
    scheme: Scheme,
    dest: &Destination,
    parts: &mut Parts,
    has_body: bool,
) -> Result<Vec<String>, String> {
    let callbacks = sandbox.credentials.callbacks();
    if callbacks.is_empty() {
        return Ok(Vec::new());
    }
    let mut used = Vec::new();
    let request = |cb: &Callback| {
        cb.full_request
            .then(|| full_request(scheme, dest, parts, has_body))
    };
    let mut set = Vec::new();
    for cb in callbacks.iter().filter(|c| c.is_attribution()) {
        let key = format!("{}\0{}", sandbox.sandbox_id, cb.url);
        let answer = answer(client, sandbox, cb, key, dest, None).await?;
        for name in &cb.attribution_headers {
            let value = answer.iter().find(|(n, _)| n == name).ok_or_else(|| {
                format!(
                    "callback {} did not supply the required header {name}",
                    cb.url
                )
            })?;
            set.push(value.clone());
        }
        used.push(format!("callback {}", cb.url));
    }
    if let Some(cb) = callbacks
        .iter()
        .find(|c| !c.is_attribution() && c.covers(dest))
    {
        let key = format!("{}\0{}\0{dest}", sandbox.sandbox_id, cb.url);
        let answer = answer(client, sandbox, cb, key, dest, request(cb)).await?;
        set.extend(answer.iter().cloned());
        used.push(format!("callback {}", cb.url));
    }
    for (name, value) in set {
        parts.headers.insert(name, value);
    }
    Ok(used)
}

/// A kept answer, or a fresh one (never kept for `full_request`).
async fn answer(
    client: &Client,
    sandbox: &SandboxPolicy,
    cb: &Callback,
    key: String,
    dest: &Destination,
    request: Option<Value>,
) -> Result<Answer, String> {
    let cacheable = request.is_none() && cb.ttl_seconds > 0;
    if cacheable && let Some(answer) = client.shared.callbacks.get(&key) {
        return Ok(answer);
    }
    let mut body = json!({
        "host": dest.host().to_string(),
        "port": dest.port(),
        "identity": {"tenant_id": sandbox.workspace_id, "sandbox_id": sandbox.sandbox_id},
    });
    if let Some(request) = request {
        body["request"] = request;
    }
    let timeout = client.config().callback_timeout;
    let call = call(client, sandbox, cb, body.to_string().into_bytes());
    let (headers, expires) = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("callback {} did not answer within {timeout:?}", cb.url))??;
    let answer = Arc::new(headers);
    if cacheable {
        let ttl = Duration::from_secs(cb.ttl_seconds);
        let ttl = expires.map_or(ttl, |e| e.min(ttl));
        client
            .shared
            .callbacks
            .put(key, Instant::now() + ttl, answer.clone());
    }
    Ok(answer)
}

/// The request as a `full_request` callback sees it. The body is not read (it streams to the
/// upstream): `body_truncated` says whether there is one.
fn full_request(scheme: Scheme, dest: &Destination, parts: &Parts, has_body: bool) -> Value {
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            headers
                .entry(name.to_string())
                .or_default()
                .push(v.to_owned());
        }
    }
    let scheme = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    json!({
        "method": parts.method.as_str(),
        "url": format!("{scheme}://{dest}{target}"),
        "scheme": scheme,
        "host": dest.host().to_string(),
        "path": path,
        "query": query,
        "headers": headers,
        "body_base64": "",
        "body_truncated": has_body,
    })
}

/// One signed POST to a callback, under the sandbox's egress policy; its headers and how long
/// they are valid (`expires_at`).
async fn call(
    client: &Client,
    sandbox: &SandboxPolicy,
    cb: &Callback,
    body: Vec<u8>,
) -> Result<(Vec<(HeaderName, HeaderValue)>, Option<Duration>), String> {
    let config = client.config();
    let signer = config
        .callback_signer
        .as_ref()
        .ok_or("callbacks are not enabled on this server")?;
    let tls = config
        .upstream_tls
        .clone()
        .ok_or("callbacks are not enabled on this server")?;
    let signature = signer.sign(&cb.url, &body)?;
    let extra = sandbox
        .credentials
        .callback_headers(cb)
        .map_err(|e| e.to_string())?;
    let (tcp, _route) = upstream::open(client, &cb.dest)
        .await
        .map_err(|f| match f {
            upstream::Failure::Refused { rule } => {
                format!("callback {} refused by egress policy: {rule}", cb.url)
            }
            upstream::Failure::Unreachable { error, .. } => {
                format!("callback {} unreachable: {error}", cb.url)
            }
        })?;
    let name = match cb.dest.host() {
        Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("callback {}: TLS failed: {e}", cb.url))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("callback {}: {e}", cb.url))?;
    tokio::spawn(connection);
    let host = match cb.dest.port() {
        443 => cb.dest.host().to_string(),
        _ => cb.dest.to_string(),
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(cb.path.as_str())
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("callback {}: {e}", cb.url))?;
    for (name, value) in extra {
        req.headers_mut().insert(name, value);
    }
    let response = sender
        .send_request(req)
        .await
        .map_err(|e| format!("callback {}: {e}", cb.url))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| {
            format!(
                "callback {}: the answer could not be read (at most {MAX_ANSWER} bytes): {e}",
                cb.url
            )
        })?
        .to_bytes();
    if !status.is_success() {
        debug!(sandbox_id = %sandbox.sandbox_id, url = %cb.url, %status, "proxy: callback refused");
        return Err(format!("callback {} answered {status}", cb.url));
    }
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("callback {}: the answer is not JSON: {e}", cb.url))?;
    let headers = answer_headers(&answer).map_err(|e| format!("callback {}: {e}", cb.url))?;
    let expires = match answer.get("expires_at").and_then(Value::as_str) {
        None => None,
        Some(at) => {
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        format!("callback {}: expires_at is not an RFC 3339 time", cb.url)
                    })?;
            let left = at - time::OffsetDateTime::now_utc();
            Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
        }
    };
    Ok((headers, expires))
}

//! Service URLs and download links (LANGSMITH-API.md §6): minting signed tokens for a sandbox
//! port or file, the grants that let a port's tokens be listed and revoked, and checking a
//! token a request carries. The reverse proxy and the link's HTTP live in `warren-api`; the
//! bytes go through the agent like a tunnel's (`tunnel.rs`), never by routing host traffic
//! into the sandbox's network namespace.
//!
//! Each sandbox port has its own service host, `<port>-<sandbox id>.<service domain>`, which is
//! also the token's audience: a token for one sandbox or port is refused on every other.
//!
//! A port is shared one of two ways (its grant's [`GrantMode`]): by token (here), or by login
//! (`service_login.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::control::{Control, now};
use crate::error::ControlError;
use crate::listing::{ListQuery, Listed, Listing, Order, Page, SortValue};
use crate::signing::TokenError;
use crate::store::{GrantMode, GrantRecord, Principal};
use crate::tunnel::{StreamKind, TunnelError, TunnelStream};

/// Token lifetime when the request names none.
pub const DEFAULT_SERVICE_TTL: u64 = 600;
/// Longest service token lifetime.
pub const MAX_SERVICE_TTL: u64 = 86_400;
/// Longest download link lifetime, when one is asked for.
pub const MAX_DOWNLOAD_TTL: u64 = 365 * 86_400;
/// The audience of download links (service tokens name their service host).
const DOWNLOAD_AUDIENCE: &str = "warren-download";
/// Most `embed_origins` a service URL takes (§6.1).
const MAX_EMBED_ORIGINS: usize = 5;
/// A service token (token mode) or a signed-in browser's session cookie (`login`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServiceClaims {
    pub(crate) sub: String,
    pub(crate) sandbox_id: String,
    pub(crate) port: u16,
    pub(crate) aud: String,
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    pub(crate) gid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) embed_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) login: bool,
    /// A session's sign-in key hash (`service_login.rs`); empty for a token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) kh: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct DownloadClaims {
    sub: String,
    sandbox_id: String,
    path: String,
    aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_disposition: Option<String>,
}

/// A freshly minted service token.
#[derive(Debug, Clone)]
pub struct MintedService {
    /// The signed token.
    pub token: String,
    /// The sandbox's id.
    pub sandbox_id: String,
    /// The port.
    pub port: u16,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Origins allowed to frame the service.
    pub embed_origins: Vec<String>,
}

/// A request's right to reach a sandbox port, from a verified token.
#[derive(Debug, Clone)]
pub struct ServiceAccess {
    /// Who the token acts as (the grant's subject).
    pub principal: Principal,
    /// The sandbox.
    pub sandbox_id: String,
    /// The port.
    pub port: u16,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// Origins allowed to frame the service.
    pub embed_origins: Vec<String>,
    /// A signed-in user's session (login mode), not a token: the app gets the user's identity.
    pub signed_in: bool,
    /// The grant it rides on.
    grant_id: String,
    /// A session's sign-in key hash; empty for a token.
    key_hash: String,
    /// The signing key the token or session verified with (a rotation ends what it let in).
    signed_with: Arc<Vec<u8>>,
}

/// A freshly minted download link's token.
#[derive(Debug, Clone)]
pub struct MintedDownload {
    /// The signed token.
    pub token: String,
    /// When it expires; never when none.
    pub expires_at: Option<SystemTime>,
}

/// A download link's right to one file, from a verified token.
#[derive(Debug, Clone)]
pub struct DownloadAccess {
    /// Who the link acts as.
    pub principal: Principal,
    /// The sandbox.
    pub sandbox_id: String,
    /// The file.
    pub path: String,
    /// Content-Type to answer with.
    pub content_type: Option<String>,
    /// `attachment` or `inline`.
    pub content_disposition: Option<String>,
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Now, in whole seconds: tokens carry whole seconds, and `expires_at` must equal them.
pub(crate) fn now_secs() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs(now()))
}

fn ttl(asked: Option<i64>, max: u64) -> Result<Duration, ControlError> {
    let asked = asked.map_or(Ok(DEFAULT_SERVICE_TTL), u64::try_from);
    match asked {
        Ok(s) if (1..=max).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(ControlError::invalid(format!(
            "expires_in_seconds must be between 1 and {max}"
        ))),
    }
}

pub(crate) fn check_port(port: i64) -> Result<u16, ControlError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ControlError::invalid("port must be between 1 and 65535"))
}

pub(crate) fn check_origins(origins: &[String]) -> Result<(), ControlError> {
    if origins.len() > MAX_EMBED_ORIGINS {
        return Err(ControlError::invalid(format!(
            "at most {MAX_EMBED_ORIGINS} embed_origins"
        )));
    }
    for o in origins {
        let local = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
            .iter()
            .any(|p| o == p || o.strip_prefix(p).is_some_and(|r| r.starts_with(':')));
        let host = o.strip_prefix("https://").unwrap_or("");
        if !local && (host.is_empty() || host.contains(['/', '?', '#', ' '])) {
            return Err(ControlError::invalid(format!(
                "embed origin '{o}' must be https://host[:port] (http only for localhost)"
            )));
        }
    }
    Ok(())
}

impl Control {
    /// The host a sandbox port is served on: `<port>-<id>.<domain>` (or `<port>-<id>` without
    /// a service domain). It is the audience of the port's tokens.
    pub fn service_host(&self, sandbox_id: &str, port: u16) -> String {
        match &self.cfg.service_domain {
            Some(d) => format!("{port}-{sandbox_id}.{d}"),
            None => format!("{port}-{sandbox_id}"),
        }
    }

    /// The sandbox and port a `Host` header names, if it is a service host.
    pub fn parse_service_host(&self, host: &str) -> Option<(String, u16)> {
        let domain = self.cfg.service_domain.as_deref()?;
        let host = host.to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host.as_str(),
        };
        let label = name.strip_suffix(domain)?.strip_suffix('.')?;
        let (port, id) = label.split_once('-')?;
        let port: u16 = port.parse().ok()?;
        (port != 0 && !id.is_empty() && !id.contains('.')).then(|| (id.to_owned(), port))
    }

    /// Mints a service token for a port of a sandbox the caller may use, creating or renewing
    /// the port's grant. Repeatable: the SDK re-mints to refresh.
    pub fn mint_service_token(
        &self,
        p: &Principal,
        name_or_id: &str,
        port: i64,
        expires_in_seconds: Option<i64>,
        embed_origins: Vec<String>,
    ) -> Result<MintedService, ControlError> {
        let rec = self.find(p, name_or_id)?;
        let port = check_port(port)?;
        let ttl = ttl(expires_in_seconds, MAX_SERVICE_TTL)?;
        check_origins(&embed_origins)?;
        let iat = now_secs();
        let exp = iat + ttl;
        let Some(grant) = self.store.upsert_grant(
            &rec.id,
            port,
            &p.user_id,
            now(),
            exp,
            &embed_origins,
            GrantMode::Token,
        )?
        else {
            let mode = self
                .store
                .grant_of(&rec.id, port)?
                .map_or("login", |g| g.mode.as_str());
            return Err(ControlError::Conflict(format!(
                "port {port} of sandbox '{name_or_id}' is shared by login (access: {mode}), \
                 which takes no tokens; end it (mint with access \"off\", or DELETE the sandbox's \
                 service-urls with ?port={port}) to mint tokens for the port"
            )));
        };
        let token = self.sign(&ServiceClaims {
            sub: p.user_id.clone(),
            sandbox_id: rec.id.clone(),
            port,
            aud: self.service_host(&rec.id, port),
            exp: secs(exp),
            iat: secs(iat),
            gid: grant.id,
            embed_origins: embed_origins.clone(),
            login: false,
            kh: String::new(),
        })?;
        self.audit(
            Some(p),
            "service.mint",
            Some(&rec.id),
            Some(format!("port {port} for {}s", ttl.as_secs())),
        );
        Ok(MintedService {
            token,
            sandbox_id: rec.id,
            port,
            expires_at: exp,
            embed_origins,
        })
    }

    /// The grants of a sandbox the caller may use, by port.
    pub fn list_service_grants(
        &self,
        p: &Principal,
        name_or_id: &str,
    ) -> Result<Vec<GrantRecord>, ControlError> {
        let rec = self.find(p, name_or_id)?;
        let now = now();
        let mut grants = self.store.list_grants(&rec.id)?;
        // What the port is reachable by now: a token grant whose newest token expired is not.
        grants.retain(|g| g.mode != GrantMode::Token || g.expires_at > now);
        Ok(grants)
    }

    /// A sandbox's service grants, by port, paged.
    pub fn service_grants_page(
        &self,
        p: &Principal,
        name_or_id: &str,
        q: &ListQuery,
    ) -> Result<Page<GrantRecord>, ControlError> {
        Ok(q.page(self.list_service_grants(p, name_or_id)?, p, &GRANT_LISTING)?)
    }

    /// Revokes a sandbox's grant of one port, or every grant: their tokens stop working at
    /// once. Returns how many grants went.
    pub fn revoke_service_grants(
        &self,
        p: &Principal,
        name_or_id: &str,
        port: Option<u16>,
    ) -> Result<usize, ControlError> {
        let rec = self.find(p, name_or_id)?;
        let n = self.store.delete_grants(&rec.id, port)?;
        if n > 0 {
            self.grant_changes.send_modify(|n| *n += 1);
        }
        let what = port.map_or_else(|| "all ports".to_owned(), |p| format!("port {p}"));
        self.audit(Some(p), "service.revoke", Some(&rec.id), Some(what));
        Ok(n)
    }

    /// Checks a token presented for `port` of `sandbox_id`: signature, expiry, audience (this
    /// sandbox and port), the grant still standing, and its user still existing.
    pub fn verify_service_token(
        &self,
        token: &str,
        sandbox_id: &str,
        port: u16,
    ) -> Result<ServiceAccess, TokenError> {
        self.verify_service(token, sandbox_id, port, false)
    }

    /// Checks the cookie a service host set: a token, or a signed-in browser's session, whose
    /// user must still be one the port's login mode admits.
    pub fn verify_service_cookie(
        &self,
        token: &str,
        sandbox_id: &str,
        port: u16,
    ) -> Result<ServiceAccess, TokenError> {
        self.verify_service(token, sandbox_id, port, true)
    }

    /// A token or (`session_ok`) a session checked, and counted when refused.
    fn verify_service(
        &self,
        token: &str,
        sandbox_id: &str,
        port: u16,
        session_ok: bool,
    ) -> Result<ServiceAccess, TokenError> {
        let result = self.verify_service_inner(token, sandbox_id, port, session_ok);
        if result.is_err() {
            self.metrics.service_refused();
        }
        result
    }

    fn verify_service_inner(
        &self,
        token: &str,
        sandbox_id: &str,
        port: u16,
        session_ok: bool,
    ) -> Result<ServiceAccess, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let aud = self.service_host(sandbox_id, port);
        let (c, key): (ServiceClaims, _) = self.verify_keyed(token, &aud, true)?;
        if c.sandbox_id != sandbox_id || c.port != port {
            return Err(TokenError::Foreign(format!("the token is not for {aud}")));
        }
        let grant = self
            .store
            .get_grant(&c.gid)
            .map_err(|e| TokenError::Unusable(e.to_string()))?
            .ok_or(TokenError::Revoked)?;
        let principal = self.admitted(&grant, &c.sandbox_id, c.port, c.login, &c.sub, &c.kh)?;
        if c.login && !session_ok {
            return Err(TokenError::Foreign(
                "a sign-in session works only as the cookie its service host set".into(),
            ));
        }
        Ok(ServiceAccess {
            principal,
            sandbox_id: c.sandbox_id,
            port: c.port,
            expires_at: UNIX_EPOCH + Duration::from_secs(c.exp),
            // A login grant's origins are the grant's current ones: each grant call replaces them.
            embed_origins: if c.login {
                grant.embed_origins
            } else {
                c.embed_origins
            },
            signed_in: c.login,
            grant_id: grant.id,
            key_hash: c.kh,
            signed_with: key,
        })
    }

    /// Whether the access a request was let in with still stands: its grant neither revoked
    /// nor shared another way, its user still there, and a session's key and admission still
    /// good (expiry aside: a connection already open outlives its token).
    fn service_access_stands(&self, a: &ServiceAccess) -> bool {
        let rotated = self
            .service_key()
            .is_ok_and(|now| !Arc::ptr_eq(&a.signed_with, &now));
        match self.store.get_grant(&a.grant_id) {
            Ok(Some(g)) if !rotated => {
                let user = &a.principal.user_id;
                self.admitted(&g, &a.sandbox_id, a.port, a.signed_in, user, &a.key_hash)
                    .is_ok()
            }
            Ok(_) => false,
            // A store that fails to answer says nothing about the access: kept until it does.
            Err(e) => {
                tracing::warn!(grant = %a.grant_id, error = %e, "failed to re-check a service grant");
                true
            }
        }
    }

    /// Who a token or session acts as, if `grant` still admits it: the grant is of its sandbox
    /// and port and shares the port the same way (a port that changed how it is shared took
    /// its old tokens or sessions with it); a token's user still exists; a session's key still
    /// stands and the grant's mode still admits its user.
    fn admitted(
        &self,
        grant: &GrantRecord,
        sandbox_id: &str,
        port: u16,
        login: bool,
        user_id: &str,
        key_hash: &str,
    ) -> Result<Principal, TokenError> {
        if grant.sandbox_id != sandbox_id
            || grant.port != port
            || login != (grant.mode != GrantMode::Token)
        {
            return Err(TokenError::Revoked);
        }
        if !login {
            return self.principal_of(user_id);
        }
        let p = self.session_user(key_hash, user_id)?;
        self.may_open(&p, grant)
            .map_err(|e| TokenError::Foreign(e.to_string()))?;
        Ok(p)
    }

    /// Resolves when a connection let in with `a` must end (a WebSocket through a service URL):
    /// its access no longer stands. Checked again on every grant change and key revocation,
    /// never by polling.
    pub async fn service_access_ended(&self, a: &ServiceAccess) {
        let mut grants = self.grant_changes.subscribe();
        let mut revocations = self.revocations.subscribe();
        while self.service_access_stands(a) {
            tokio::select! {
                r = grants.changed() => if r.is_err() { return },
                r = revocations.changed() => if r.is_err() { return },
            }
        }
    }

    pub(crate) fn principal_of(&self, user_id: &str) -> Result<Principal, TokenError> {
        self.store
            .principal_for_user(user_id)
            .map_err(|e| TokenError::Unusable(e.to_string()))?
            .ok_or_else(|| TokenError::Unusable("the token's user no longer exists".into()))
    }

    /// Opens a connection to the service port for one proxied request (waking the sandbox if
    /// stopped); it is audited as the grant's subject with its byte counts when dropped.
    pub async fn open_service_stream(
        self: &Arc<Self>,
        access: &ServiceAccess,
        what: String,
    ) -> Result<TunnelStream, TunnelError> {
        self.open_port_stream(
            &access.principal,
            &access.sandbox_id,
            access.port,
            StreamKind::Service {
                what,
                signed_in: access.signed_in,
            },
        )
        .await
    }

    /// Mints a download link's token for a file of a sandbox the caller may use. The file is
    /// not checked now: the link answers 404 if it is missing when fetched.
    pub fn mint_download_link(
        &self,
        p: &Principal,
        name_or_id: &str,
        path: &str,
        expires_in_seconds: Option<i64>,
        content_type: Option<String>,
        content_disposition: Option<String>,
    ) -> Result<MintedDownload, ControlError> {
        let rec = self.find(p, name_or_id)?;
        if path.is_empty() || path.contains('\0') {
            return Err(ControlError::invalid("path must be a non-empty string"));
        }
        if let Some(d) = &content_disposition
            && d != "attachment"
            && d != "inline"
        {
            return Err(ControlError::invalid(
                "content_disposition must be 'attachment' or 'inline'",
            ));
        }
        if content_type
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(ControlError::invalid(
                "content_type is not a valid media type",
            ));
        }
        // No lifetime asked for is a link that never expires (the SDK documents it so); only
        // rotating the signing key ends it.
        let ttl = match expires_in_seconds {
            Some(s) => Some(ttl(Some(s), MAX_DOWNLOAD_TTL)?),
            None => None,
        };
        let iat = now_secs();
        let exp = ttl.map(|t| iat + t);
        let token = self.sign(&DownloadClaims {
            sub: p.user_id.clone(),
            sandbox_id: rec.id.clone(),
            path: path.to_owned(),
            aud: DOWNLOAD_AUDIENCE.to_owned(),
            exp: exp.map(secs),
            iat: secs(iat),
            content_type,
            content_disposition,
        })?;
        self.audit(
            Some(p),
            "download.mint",
            Some(&rec.id),
            Some(match ttl {
                Some(t) => format!("{path} for {}s", t.as_secs()),
                None => format!("{path} without expiry"),
            }),
        );
        Ok(MintedDownload {
            token,
            expires_at: exp,
        })
    }

    /// Checks a download link's token.
    pub fn verify_download_token(&self, token: &str) -> Result<DownloadAccess, TokenError> {
        let c: DownloadClaims = self.verify(token, DOWNLOAD_AUDIENCE, false)?;
        let principal = self.principal_of(&c.sub)?;
        Ok(DownloadAccess {
            principal,
            sandbox_id: c.sandbox_id,
            path: c.path,
            content_type: c.content_type,
            content_disposition: c.content_disposition,
        })
    }
}

/// How a sandbox's service grants list: every one unless a page is asked for.
const GRANT_LISTING: Listing = Listing {
    columns: &["port", "created_at"],
    default_sort: ("port", Order::Asc),
    default_limit: None,
    max_limit: None,
};

impl Listed for GrantRecord {
    fn list_id(&self) -> &str {
        &self.id
    }
    fn list_name(&self) -> &str {
        ""
    }
    fn list_creator(&self) -> Option<&str> {
        Some(&self.user_id)
    }
    fn sort_value(&self, column: &str) -> SortValue {
        match column {
            "created_at" => SortValue::time(self.created_at),
            _ => SortValue::Int(i64::from(self.port)),
        }
    }
}

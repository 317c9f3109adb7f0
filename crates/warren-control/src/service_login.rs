//! Service URLs shared by login (LANGSMITH-API.md §6.1, `access: restricted|workspace`): no
//! token exists, and a browser signs in instead. The sign-in happens on the API's own origin,
//! never on the service host, whose pages are the tenant's: a key typed there could be read by
//! the tenant's scripts. The API origin hands the browser a one-time code
//! ([`Control::begin_service_login`]) that the service host's `__auth` trades for a session
//! cookie ([`Control::finish_service_login`]); each request the session makes reaches the app
//! with a user token the server signs with its private key ([`Control::user_token`]), which
//! the app can verify by the public half in the JWKS. Token mode is `service.rs`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::control::{Control, now, visible};
use crate::error::ControlError;
use crate::service::{ServiceAccess, ServiceClaims, check_origins, check_port, now_secs, secs};
use crate::signing::TokenError;
use crate::state::lock;
use crate::store::{GrantMode, GrantRecord, Principal, Store};

/// How long a sign-in's one-time code is good for: the browser follows it at once.
const LOGIN_CODE_TTL: u64 = 60;
/// How long a browser stays signed in to a login-mode service host.
const LOGIN_SESSION_TTL: u64 = 12 * 3600;
/// How long a user token handed to the app is valid: it rides on one request.
const USER_TOKEN_TTL: u64 = 300;

/// The one-time code a sign-in on the API origin hands to the service host's `__auth`.
#[derive(Debug, Serialize, Deserialize)]
struct LoginCode {
    sub: String,
    sandbox_id: String,
    port: u16,
    aud: String,
    exp: u64,
    iat: u64,
    gid: String,
    jti: String,
    /// The hash of the API key signed in with (as the store keeps it), so revoking the key
    /// ends what it signed in.
    kh: String,
}

/// A port shared by login.
#[derive(Debug, Clone)]
pub struct LoginGrant {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// The port.
    pub port: u16,
    /// Who may open it.
    pub mode: GrantMode,
    /// Origins allowed to frame the service.
    pub embed_origins: Vec<String>,
}

/// A signed-in browser's session on a service host: the cookie's value and its end.
#[derive(Debug, Clone)]
pub struct LoginSession {
    /// The cookie's value.
    pub token: String,
    /// When it ends.
    pub expires_at: SystemTime,
}

impl Control {
    /// Shares a port of a sandbox the caller may use by login: `restricted` admits the users
    /// who may read the sandbox, `workspace` every member of its workspace. Durable (no
    /// expiry); each call replaces the mode and the origins. The port's tokens stop working.
    pub fn grant_service_login(
        &self,
        p: &Principal,
        name_or_id: &str,
        port: i64,
        access: &str,
        embed_origins: Vec<String>,
    ) -> Result<LoginGrant, ControlError> {
        let rec = self.find(p, name_or_id)?;
        let port = check_port(port)?;
        let mode = GrantMode::login(access).ok_or_else(|| {
            ControlError::invalid(format!(
                "access must be \"restricted\" or \"workspace\" (omit it for a token), got \"{access}\""
            ))
        })?;
        check_origins(&embed_origins)?;
        if self.cfg.signer.is_none() {
            return Err(ConfigError::Unsupported(
                "login-mode service URLs need the server's signing key, and this server has none"
                    .into(),
            )
            .into());
        }
        if self.cfg.service_domain.is_none() {
            return Err(ConfigError::Unsupported(
                "login-mode service URLs need a service domain (warren serve --service-domain): \
                 the app must be served from its own origin, apart from the sign-in page"
                    .into(),
            )
            .into());
        }
        let before = self.store.grant_of(&rec.id, port)?.map(|g| g.mode);
        let at = now_secs();
        let grant = self
            .store
            .upsert_grant(&rec.id, port, &p.user_id, at, at, &embed_origins, mode)?
            .ok_or_else(|| ControlError::Unavailable("the login grant was not stored".into()))?;
        // Connections a change of mode may end re-check; a renewal of the same mode changes
        // no one's access.
        if before.is_some_and(|m| m != mode) {
            self.grant_changes.send_modify(|n| *n += 1);
        }
        self.audit(
            Some(p),
            "service.grant",
            Some(&rec.id),
            Some(format!("port {port} to {access} login")),
        );
        Ok(LoginGrant {
            sandbox_id: rec.id,
            port,
            mode: grant.mode,
            embed_origins: grant.embed_origins,
        })
    }

    /// Ends a port's login grant, if it has one (`access: "off"`), so tokens can be minted
    /// for it; the sessions it admitted end with it.
    pub fn end_service_login(
        &self,
        p: &Principal,
        name_or_id: &str,
        port: i64,
    ) -> Result<(), ControlError> {
        let rec = self.find(p, name_or_id)?;
        let port = check_port(port)?;
        if self.store.delete_login_grant(&rec.id, port)? {
            self.grant_changes.send_modify(|n| *n += 1);
            self.audit(
                Some(p),
                "service.revoke",
                Some(&rec.id),
                Some(format!("port {port} login")),
            );
        }
        Ok(())
    }

    /// The login mode a sandbox port is shared by, if any (where the router sends a browser
    /// that has not signed in).
    pub fn service_login_mode(&self, sandbox_id: &str, port: u16) -> Option<GrantMode> {
        match self.store.grant_of(sandbox_id, port) {
            Ok(g) => g.map(|g| g.mode).filter(|m| *m != GrantMode::Token),
            Err(e) => {
                tracing::warn!(%sandbox_id, port, error = %e, "failed to read a service grant");
                None
            }
        }
    }

    /// Whether `p` may open a port its grant shares by login.
    pub(crate) fn may_open(&self, p: &Principal, grant: &GrantRecord) -> Result<(), ControlError> {
        let rec = self
            .store
            .find_sandbox(&p.workspace_id, &grant.sandbox_id)?;
        let admitted = match (rec, grant.mode) {
            (Some(_), GrantMode::Workspace) => true,
            (Some(r), GrantMode::Restricted) => visible(p, &r),
            _ => false,
        };
        if admitted {
            Ok(())
        } else {
            Err(ControlError::Forbidden(format!(
                "user '{}' may not open port {} of this sandbox (access: {}{})",
                p.user_name,
                grant.port,
                grant.mode.as_str(),
                match grant.mode {
                    GrantMode::Restricted => ", for those who may read the sandbox",
                    _ => ", for members of the sandbox's workspace",
                }
            )))
        }
    }

    /// Signs the owner of `api_key` in to a port shared by login: checks the key, the grant and
    /// that its user may open the port, and answers a one-time code for the service host's
    /// `__auth` (good for a minute, once). `None`: the key is not a valid one.
    pub fn begin_service_login(
        &self,
        api_key: &str,
        sandbox_id: &str,
        port: u16,
    ) -> Result<Option<String>, ControlError> {
        let key_hash = crate::auth::hash_key(api_key);
        let Some(p) = self.authenticate_hash(key_hash.clone())? else {
            return Ok(None);
        };
        let grant = self
            .store
            .grant_of(sandbox_id, port)?
            .filter(|g| g.mode != GrantMode::Token)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "port {port} of sandbox '{sandbox_id}' is not shared by login"
                ))
            })?;
        self.may_open(&p, &grant)?;
        let iat = secs(now());
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti)
            .map_err(|e| ControlError::Unavailable(format!("no randomness: {e}")))?;
        self.sign(&LoginCode {
            sub: p.user_id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            port,
            aud: self.login_audience(sandbox_id, port),
            exp: iat + LOGIN_CODE_TTL,
            iat,
            gid: grant.id,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            kh: key_hash,
        })
        .map(Some)
    }

    /// The user a session or code acts as: the owner of the key it was signed in with, while
    /// that key stands.
    pub(crate) fn session_user(
        &self,
        key_hash: &str,
        user_id: &str,
    ) -> Result<Principal, TokenError> {
        match self.authenticate_hash(key_hash.to_owned()) {
            Ok(Some(p)) if p.user_id == user_id => Ok(p),
            Ok(_) => Err(TokenError::Foreign(
                "the API key this browser signed in with was revoked: sign in again".into(),
            )),
            Err(e) => Err(TokenError::Unusable(e.to_string())),
        }
    }

    fn login_audience(&self, sandbox_id: &str, port: u16) -> String {
        format!("{}#login", self.service_host(sandbox_id, port))
    }

    /// Trades a sign-in's one-time code, on the service host it was made for, for the
    /// browser's session there. A code works once.
    pub fn finish_service_login(
        &self,
        code: &str,
        sandbox_id: &str,
        port: u16,
    ) -> Result<LoginSession, TokenError> {
        if code.is_empty() {
            return Err(TokenError::Missing);
        }
        let c: LoginCode = self.verify(code, &self.login_audience(sandbox_id, port), true)?;
        {
            let mut used = lock(&self.login_codes);
            let now = secs(now());
            used.retain(|_, exp| *exp >= now);
            if used.insert(c.jti.clone(), c.exp).is_some() {
                return Err(TokenError::Foreign(
                    "this sign-in link was used already: open the service URL again".into(),
                ));
            }
        }
        let grant = self
            .store
            .get_grant(&c.gid)
            .map_err(|e| TokenError::Unusable(e.to_string()))?
            .filter(|g| g.sandbox_id == sandbox_id && g.port == port)
            .filter(|g| g.mode != GrantMode::Token)
            .ok_or(TokenError::Revoked)?;
        let principal = self.session_user(&c.kh, &c.sub)?;
        self.may_open(&principal, &grant)
            .map_err(|e| TokenError::Foreign(e.to_string()))?;
        let iat = now_secs();
        let exp = iat + Duration::from_secs(LOGIN_SESSION_TTL);
        let token = self
            .sign(&ServiceClaims {
                sub: principal.user_id.clone(),
                sandbox_id: sandbox_id.to_owned(),
                port,
                aud: self.service_host(sandbox_id, port),
                exp: secs(exp),
                iat: secs(iat),
                gid: grant.id,
                embed_origins: Vec::new(),
                login: true,
                kh: c.kh,
            })
            .map_err(|e| TokenError::Unusable(e.to_string()))?;
        self.audit(
            Some(&principal),
            "service.login",
            Some(sandbox_id),
            Some(format!("port {port} ({})", grant.mode.as_str())),
        );
        Ok(LoginSession {
            token,
            expires_at: exp,
        })
    }

    /// The user token a signed-in request reaches the app with (`X-Langsmith-User-Token`):
    /// signed with the server's private key for the host the request was sent to, valid for
    /// a few minutes.
    pub fn user_token(&self, access: &ServiceAccess, host: &str) -> Result<String, ControlError> {
        let signer = self.cfg.signer.as_ref().ok_or_else(|| {
            ControlError::Unavailable("this server has no signing key for user tokens".into())
        })?;
        let iat = secs(now());
        signer
            .sign(&serde_json::json!({
                "iss": self.cfg.public_url,
                "aud": host,
                "sub": access.principal.user_id,
                "name": access.principal.user_name,
                "iat": iat,
                "exp": iat + USER_TOKEN_TTL,
            }))
            .map_err(|e| ControlError::Unavailable(format!("failed to sign a user token: {e}")))
    }
}

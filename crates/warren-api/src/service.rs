//! Service URLs and download links on the control plane (§2.3, §6): mint, list and revoke a
//! port's grants, and mint download links; plus the link itself (`GET`/`HEAD /dl/{token}`,
//! no API key). The reverse proxy is `proxy.rs`.
//!
//! Addressing: `service_url` is path-based, `<public url>/svc/<id>/<port>`, so any HTTP client
//! reaches it with no DNS set-up (the SDK's helpers resolve nothing but the server's own
//! host). `browser_url` uses the port's own host, `<port>-<id>.<service domain>`, when the
//! server has a service domain (default `localhost`, whose subdomains browsers resolve to the
//! loopback): a web app there sees `/` as its root, so absolute paths work, and its cookies and
//! storage are its own origin's. Without a service domain, `browser_url` is path-based too.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use warren_control::{GrantMode, GrantRecord, TokenError};
use warren_wire::service::{
    DownloadUrlBody, DownloadUrlResponse, ServiceGrantItem, ServiceGrantList, ServiceLoginResponse,
    ServiceUrlBody, ServiceUrlResponse,
};

use crate::files::{Presentation, serve_file};
use crate::listing::ListParams;
use crate::{ApiError, ApiJson, ApiQuery, AppState, Caller};

/// Times in these answers: RFC 3339, whole seconds, `Z` (Python 3.10 parses it).
fn seconds(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `<scheme>://` and `:<port>` of the public URL, to build a service host's URL.
fn scheme_and_port(public_url: &str) -> (&str, &str) {
    let (scheme, rest) = public_url.split_once("://").unwrap_or(("http", public_url));
    let authority = rest.split('/').next().unwrap_or("");
    let port = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[i..],
        _ => "",
    };
    (scheme, port)
}

/// The URL prefix a sandbox port is served at by path.
pub(crate) fn path_base(public_url: &str, sandbox_id: &str, port: u16) -> String {
    format!("{public_url}/svc/{sandbox_id}/{port}")
}

/// The base the browser opens: the port's own host if the server has a service domain.
pub(crate) fn browser_base(state: &AppState, sandbox_id: &str, port: u16) -> String {
    let cfg = state.control.config();
    match cfg.service_domain {
        Some(_) => {
            let (scheme, p) = scheme_and_port(&cfg.public_url);
            let host = state.control.service_host(sandbox_id, port);
            format!("{scheme}://{host}{p}")
        }
        None => path_base(&cfg.public_url, sandbox_id, port),
    }
}

/// The token error as an answer: 401 when the token is missing, malformed, tampered with or
/// expired (get a new one), 403 when it is valid but not for this (another sandbox, port or
/// a revoked grant).
pub(crate) fn token_error(e: &TokenError) -> ApiError {
    let (status, name) = match e {
        TokenError::Missing | TokenError::Invalid(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        TokenError::Expired => (StatusCode::UNAUTHORIZED, "TokenExpired"),
        TokenError::Foreign(_) | TokenError::Revoked | TokenError::Unusable(_) => {
            (StatusCode::FORBIDDEN, "Forbidden")
        }
    };
    ApiError::with(status, name, e.to_string())
}

pub(crate) async fn mint(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ServiceUrlBody>,
) -> Result<Response, ApiError> {
    let origins = body.embed_origins.unwrap_or_default();
    // "off" (the generated client's) ends a login grant and mints a token.
    if body.access.as_deref() == Some("off") {
        state.control.end_service_login(&caller, &name, body.port)?;
    } else if let Some(access) = body.access.as_deref() {
        let g = state
            .control
            .grant_service_login(&caller, &name, body.port, access, origins)?;
        let url = format!("{}/", browser_base(&state, &g.sandbox_id, g.port));
        return Ok(Json(ServiceLoginResponse {
            browser_url: url.clone(),
            service_url: url,
            access: g.mode.as_str().to_owned(),
            embed_origins: (!g.embed_origins.is_empty()).then_some(g.embed_origins),
        })
        .into_response());
    }
    let m = state.control.mint_service_token(
        &caller,
        &name,
        body.port,
        body.expires_in_seconds,
        origins,
    )?;
    let public = &state.control.config().public_url;
    let browser = browser_base(&state, &m.sandbox_id, m.port);
    let embedded = !m.embed_origins.is_empty();
    Ok(Json(ServiceUrlResponse {
        browser_url: format!("{browser}/__auth?token={}", m.token),
        service_url: path_base(public, &m.sandbox_id, m.port),
        embed_url: embedded.then(|| format!("{browser}/__embed#token={}", m.token)),
        embed_origins: embedded.then_some(m.embed_origins),
        token: m.token,
        expires_at: seconds(m.expires_at),
    })
    .into_response())
}

fn item(g: GrantRecord) -> ServiceGrantItem {
    ServiceGrantItem {
        port: g.port,
        access: g.mode.as_str().into(),
        created_at: seconds(g.created_at),
        created_by: Some(g.user_id),
        expires_at: (g.mode == GrantMode::Token).then(|| seconds(g.expires_at)),
        embed_origins: (!g.embed_origins.is_empty()).then_some(g.embed_origins),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ListParams(q): ListParams,
) -> Result<Json<ServiceGrantList>, ApiError> {
    let page = state.control.service_grants_page(&caller, &name, &q)?;
    Ok(Json(ServiceGrantList {
        items: page.items.into_iter().map(item).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PortQuery {
    port: Option<u16>,
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PortQuery>,
) -> Result<StatusCode, ApiError> {
    state
        .control
        .revoke_service_grants(&caller, &name, q.port)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn mint_download(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<DownloadUrlBody>,
) -> Result<Json<DownloadUrlResponse>, ApiError> {
    let m = state.control.mint_download_link(
        &caller,
        &name,
        &body.path,
        body.expires_in_seconds,
        body.content_type,
        body.content_disposition,
    )?;
    Ok(Json(DownloadUrlResponse {
        download_url: format!("{}/dl/{}", state.control.config().public_url, m.token),
        token: m.token,
        expires_at: m.expires_at.map(seconds),
    }))
}

/// `Content-Disposition` for a file: the type asked for and the file's base name, with any
/// character that could break the header's quoting replaced.
fn disposition(kind: Option<&str>, path: &str) -> Option<HeaderValue> {
    let kind = kind.unwrap_or("attachment");
    let base = path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download");
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!("{kind}; filename=\"{safe}\"")).ok()
}

/// `GET`/`HEAD /dl/{token}`: the file a link pins, as the user who minted it. No API key;
/// an expired link is 410, a tampered one 403.
pub(crate) async fn download_link(
    State(state): State<AppState>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = match state.control.verify_download_token(&token) {
        Ok(a) => a,
        Err(e) => {
            state.control.metrics().service_refused();
            return Err(match e {
                TokenError::Expired => {
                    ApiError::with(StatusCode::GONE, "LinkExpired", "the download link expired")
                }
                other => ApiError::with(StatusCode::FORBIDDEN, "Forbidden", other.to_string()),
            });
        }
    };
    let how = Presentation {
        content_type: access.content_type.clone(),
        content_disposition: disposition(access.content_disposition.as_deref(), &access.path),
        csp_sandbox: true,
    };
    let resp = serve_file(
        &state,
        &access.principal,
        &access.sandbox_id,
        &access.path,
        &method,
        &headers,
        &how,
    )
    .await;
    state.control.audit(
        Some(&access.principal),
        "download",
        Some(&access.sandbox_id),
        Some(format!(
            "{method} {} {}",
            access.path,
            resp.as_ref().map_or(0, |r| r.status().as_u16())
        )),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_parts() {
        assert_eq!(scheme_and_port("http://127.0.0.1:7878"), ("http", ":7878"));
        assert_eq!(scheme_and_port("https://w.example.com"), ("https", ""));
        assert_eq!(scheme_and_port("http://[::1]:80/x"), ("http", ":80"));
        assert_eq!(scheme_and_port("http://[::1]"), ("http", ""));
    }

    #[test]
    fn disposition_quotes_a_safe_name() {
        let v = disposition(Some("inline"), "/a/b\"c.txt").unwrap();
        assert_eq!(v, "inline; filename=\"b_c.txt\"");
        let v = disposition(None, "/").unwrap();
        assert_eq!(v, "attachment; filename=\"download\"");
    }
}

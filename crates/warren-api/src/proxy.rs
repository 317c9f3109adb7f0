//! The service router (§6.2): HTTP and WebSocket requests to a sandbox port, authorised by a
//! service token, proxied through the sandbox's agent (one agent connection per request, the
//! same path as a tunnel stream) with hyper's client on that connection.
//!
//! A request reaches a port two ways: by its service host (`<port>-<id>.<domain>` in `Host`,
//! checked before any other route, so the app owns every path there), or by path
//! (`/svc/<id>/<port>/...`, the prefix removed before forwarding). Either way it needs the
//! token in `X-Langsmith-Sandbox-Service-Token` or the cookie `GET .../__auth?token=` sets;
//! both are removed before the request goes on, and so are hop-by-hop headers, except the
//! `Connection: upgrade` pair of a WebSocket handshake, whose upgraded connection is spliced
//! to the agent connection.
//!
//! A port shared by login is opened on its service host only: a browser that has not signed
//! in is sent to the sign-in page on the API's origin (`login.rs`), which sends it back to
//! `__auth?code=` for its session cookie. Its requests reach the app with
//! `X-Langsmith-User-Token` (verifiable by the JWKS) and `X-Langsmith-User-Id`; copies of those
//! headers a client sends are always removed.

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use warren_control::{ServiceAccess, TokenError, TunnelError};

use crate::service::token_error;
use crate::{ApiError, AppState};

/// The header the SDKs send the token in.
const TOKEN_HEADER: &str = "x-langsmith-sandbox-service-token";
/// The cookie `__auth` sets.
const COOKIE: &str = "warren_svc";
/// The headers a signed-in request reaches the app with; a client's own copies never do.
const USER_TOKEN_HEADER: &str = "x-langsmith-user-token";
const USER_ID_HEADER: &str = "x-langsmith-user-id";
const USER_HEADERS: &[&str] = &[USER_TOKEN_HEADER, USER_ID_HEADER, "x-langsmith-user-email"];
/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded as they came.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Where a request is going: the sandbox, the port, and the path prefix the route added (by
/// path), or the service host it was sent to (by host).
struct Target {
    sandbox_id: String,
    port: u16,
    prefix: String,
    host: String,
}

/// Sends a request whose `Host` is a service host to its port; passes every other request on.
pub(crate) async fn by_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| {
            req.uri()
                .authority()
                .map(axum::http::uri::Authority::as_str)
        });
    match host.and_then(|h| Some((h, state.control.parse_service_host(h)?))) {
        Some((host, (sandbox_id, port))) => {
            let t = Target {
                sandbox_id,
                port,
                prefix: String::new(),
                host: host.to_owned(),
            };
            service(state, t, req).await
        }
        None => next.run(req).await,
    }
}

/// `/svc/{id}/{port}[/...]`.
pub(crate) async fn by_path(State(state): State<AppState>, req: Request) -> Response {
    let mut parts = req.uri().path().splitn(5, '/').skip(2);
    let (Some(id), Some(port)) = (parts.next(), parts.next()) else {
        return ApiError::no_route().into_response();
    };
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::no_route().into_response();
    };
    let t = Target {
        prefix: format!("/svc/{id}/{port}"),
        sandbox_id: id.to_owned(),
        port,
        host: String::new(),
    };
    service(state, t, req).await
}

async fn service(state: AppState, t: Target, mut req: Request) -> Response {
    let rest = req
        .uri()
        .path()
        .strip_prefix(&t.prefix)
        .unwrap_or("/")
        .to_owned();
    let rest = if rest.is_empty() {
        "/".to_owned()
    } else {
        rest
    };
    // With a service domain, a browser never needs the path form, and a page served there would
    // run on the API's own origin, beside the sign-in page: by path, only the header token of
    // programs opens a port.
    let browsers_by_path = state.control.config().service_domain.is_none();
    match rest.as_str() {
        "/__auth" | "/__embed" if !t.prefix.is_empty() && !browsers_by_path => {
            return ApiError::no_route().into_response();
        }
        "/__auth" => return auth(&state, &t, req.uri()),
        "/__embed" => return embed_page(),
        _ => {}
    }
    if !t.prefix.is_empty() && !browsers_by_path {
        strip_cookie(req.headers_mut());
    }
    let access = match authorise(&state, &t, req.headers()) {
        Ok(a) => a,
        Err(e) => return refused(&state, &t, &req, &e),
    };
    strip_credentials(req.headers_mut());
    if access.signed_in {
        let token = match state.control.user_token(&access, &t.host) {
            Ok(t) => t,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let h = req.headers_mut();
        for (name, value) in [
            (USER_TOKEN_HEADER, token.as_str()),
            (USER_ID_HEADER, access.principal.user_id.as_str()),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    match pq.parse::<Uri>() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => return ApiError::no_route().into_response(),
    }
    let mut resp = forward(&state, &access, req).await;
    if !access.embed_origins.is_empty()
        && let Ok(v) = HeaderValue::from_str(&format!(
            "frame-ancestors 'self' {}",
            access.embed_origins.join(" ")
        ))
    {
        resp.headers_mut()
            .append(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// A refused request: a browser finding a port shared by login on its service host is sent
/// to sign in; everything else gets the token error.
fn refused(state: &AppState, t: &Target, req: &Request, e: &TokenError) -> Response {
    let Some(mode) = t
        .prefix
        .is_empty()
        .then(|| state.control.service_login_mode(&t.sandbox_id, t.port))
        .flatten()
    else {
        return token_error(e).into_response();
    };
    let navigation = matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if !navigation {
        return ApiError::with(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!(
                "port {} of this sandbox is shared by login (access: {}): open it in a browser \
                 and sign in; it takes no service token",
                t.port,
                mode.as_str()
            ),
        )
        .into_response();
    }
    let back = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let query = serde_urlencoded::to_string([
        ("sandbox", t.sandbox_id.as_str()),
        ("port", &t.port.to_string()),
        ("redirect", back),
    ])
    .unwrap_or_default();
    let location = format!(
        "{}/auth/service-login?{query}",
        state.control.config().public_url
    );
    redirect(StatusCode::FOUND, &location, None)
}

/// The token from the header, else the first service cookie that verifies. A sign-in session
/// is taken only as the cookie of a service host (by path, the API's origin, it never is).
fn authorise(state: &AppState, t: &Target, h: &HeaderMap) -> Result<ServiceAccess, TokenError> {
    if let Some(tok) = h.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return state
            .control
            .verify_service_token(tok.trim(), &t.sandbox_id, t.port);
    }
    let verify = |tok: &str| {
        if t.prefix.is_empty() {
            state
                .control
                .verify_service_cookie(tok, &t.sandbox_id, t.port)
        } else {
            state
                .control
                .verify_service_token(tok, &t.sandbox_id, t.port)
        }
    };
    let mut first_err = TokenError::Missing;
    for tok in cookies(h) {
        match verify(&tok) {
            Ok(a) => return Ok(a),
            Err(e) if first_err == TokenError::Missing => first_err = e,
            Err(_) => {}
        }
    }
    if first_err == TokenError::Missing {
        state.control.metrics().service_refused();
    }
    Err(first_err)
}

fn cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .collect()
}

/// Removes the token header, the service cookie (keeping the app's own cookies) and any user
/// headers the client sent.
fn strip_credentials(h: &mut HeaderMap) {
    h.remove(TOKEN_HEADER);
    for name in USER_HEADERS {
        h.remove(*name);
    }
    strip_cookie(h);
}

/// Removes the service cookie, keeping the app's own cookies.
fn strip_cookie(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').is_none_or(|(k, _)| k != COOKIE))
        .map(str::to_owned)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

/// A path on the same origin to send a browser to, or `/`. Browsers drop tabs and newlines
/// from a URL and read `\` as `/`, so a path with any of them (or any other control or space
/// character) could turn into `//elsewhere`: refused.
pub(crate) fn same_origin_path(redirect: Option<&str>) -> &str {
    redirect
        .filter(|r| {
            r.starts_with('/')
                && !r.starts_with("//")
                && !r
                    .chars()
                    .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
        })
        .unwrap_or("/")
}

/// `__auth?token=…[&redirect=/path]`: checks the token, sets it as an HttpOnly cookie for this
/// host (or path prefix) and redirects. `__auth?code=…` does the same with a sign-in's
/// one-time code, on a service host only, and sets the browser's session. Only same-origin
/// paths are redirected to.
fn auth(state: &AppState, t: &Target, uri: &Uri) -> Response {
    let q: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let (cookie, expires_at) = match q.get("code") {
        Some(code) if t.prefix.is_empty() => {
            match state
                .control
                .finish_service_login(code, &t.sandbox_id, t.port)
            {
                Ok(s) => (s.token, s.expires_at),
                Err(e) => return token_error(&e).into_response(),
            }
        }
        Some(_) => return ApiError::no_route().into_response(),
        None => {
            let token = q.get("token").map(String::as_str).unwrap_or("");
            match state
                .control
                .verify_service_token(token, &t.sandbox_id, t.port)
            {
                Ok(a) => (token.to_owned(), a.expires_at),
                Err(e) => return token_error(&e).into_response(),
            }
        }
    };
    let back = same_origin_path(q.get("redirect").map(String::as_str));
    let max_age = expires_at
        .duration_since(std::time::SystemTime::now())
        .map_or(0, |d| d.as_secs());
    let path = if t.prefix.is_empty() { "/" } else { &t.prefix };
    let secure = if state.control.config().public_url.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={cookie}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    );
    let location = format!("{}{back}", t.prefix);
    redirect(StatusCode::FOUND, &location, Some(&cookie))
}

/// A redirect (`status` 302 or 303) to `location` that no cache keeps, setting `cookie` when
/// given. Both are built from checked parts; one that is still no valid header value answers
/// 500 rather than a redirect without a target.
pub(crate) fn redirect(status: StatusCode, location: &str, cookie: Option<&str>) -> Response {
    let mut h = HeaderMap::new();
    let Ok(l) = HeaderValue::from_str(location) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    h.insert(header::LOCATION, l);
    if let Some(cookie) = cookie {
        let Ok(c) = HeaderValue::from_str(cookie) else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        h.insert(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (status, h).into_response()
}

/// `__embed#token=…[&redirect=/path]`: the token stays in the fragment (no server or Referer
/// sees it) until this page hands it to `__auth`.
fn embed_page() -> Response {
    const PAGE: &str = "<!doctype html><meta charset=utf-8><script>\
        var p=new URLSearchParams(location.hash.slice(1));\
        var u='__auth?token='+encodeURIComponent(p.get('token')||'');\
        if(p.get('redirect'))u+='&redirect='+encodeURIComponent(p.get('redirect'));\
        location.replace(u);</script>";
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

fn bad_gateway(message: String) -> Response {
    ApiError::with(StatusCode::BAD_GATEWAY, "BadGateway", message).into_response()
}

/// Sends the request over a fresh agent connection to the port and streams the answer back;
/// a `101 Switching Protocols` splices both upgraded connections.
async fn forward(state: &AppState, access: &ServiceAccess, mut req: Request) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    let stream = match state.control.open_service_stream(access, what).await {
        Ok(s) => s,
        Err(TunnelError::Refused(m)) => {
            return bad_gateway(format!(
                "nothing answers on port {} in the sandbox: {m}",
                access.port
            ));
        }
        Err(TunnelError::NotAllowed(m)) => {
            return ApiError::with(StatusCode::FORBIDDEN, "Forbidden", m).into_response();
        }
        Err(TunnelError::Unavailable(e)) => return ApiError::from(e).into_response(),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return bad_gateway(format!("failed to reach the sandbox port: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "service connection ended");
        }
    });
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let headers = req.headers_mut();
    let keep: Vec<(header::HeaderName, HeaderValue)> = if upgrade {
        [header::CONNECTION, header::UPGRADE]
            .into_iter()
            .filter_map(|n| headers.get(&n).cloned().map(|v| (n, v)))
            .collect()
    } else {
        Vec::new()
    };
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    for (n, v) in keep {
        headers.insert(n, v);
    }
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("the sandbox port did not answer over HTTP: {e}")),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = client_side
    {
        let sandbox_side = hyper::upgrade::on(&mut resp);
        let (control, access) = (state.control.clone(), access.clone());
        tokio::spawn(async move {
            let (Ok(c), Ok(s)) = (client_side.await, sandbox_side.await) else {
                return;
            };
            let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
            // Each plain request is checked on its own; an upgraded connection lives on, so it
            // ends when the access it was let in with is revoked.
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut c, &mut s) => {}
                () = control.service_access_ended(&access) => {
                    tracing::info!(
                        sandbox = %access.sandbox_id,
                        port = access.port,
                        "service connection cut: its access was revoked"
                    );
                }
            }
        });
    } else {
        // The answer's framing is hyper's to set on the client's connection.
        for name in HOP_BY_HOP {
            resp.headers_mut().remove(*name);
        }
    }
    resp.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_and_other_cookies_kept() {
        let mut h = HeaderMap::new();
        h.insert(TOKEN_HEADER, HeaderValue::from_static("t"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; warren_svc=secret; b=2"),
        );
        assert_eq!(cookies(&h), vec!["secret".to_owned()]);
        strip_credentials(&mut h);
        assert!(h.get(TOKEN_HEADER).is_none());
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("warren_svc=x"));
        strip_credentials(&mut only);
        assert!(only.get(header::COOKIE).is_none());
    }
}

//! Signing in to a port shared by login (LANGSMITH-API.md §6.1, `access: restricted|workspace`):
//! `GET /auth/service-login` is the form, `POST` checks the API key, asks the control plane
//! whether its user may open the port, and sends the browser back to the service host's
//! `__auth` with a one-time code (`proxy.rs`).
//!
//! The form lives on the API's origin, never on the service host: pages there are the
//! tenant's, and a key typed into one could be read by the tenant's scripts. Warren's users
//! sign in with their API key (it has no passwords). The page runs no script and may not be
//! framed.

use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::proxy::{redirect, same_origin_path};
use crate::service::browser_base;
use crate::{ApiError, ApiQuery, AppState};

/// Where to sign in to, and where to go after.
#[derive(Debug, Deserialize)]
pub(crate) struct Target {
    sandbox: String,
    port: u16,
    #[serde(default)]
    redirect: Option<String>,
}

/// The form, posted back (its fields spelled out: a flattened `Target` would read `port` as
/// a string).
#[derive(Debug, Deserialize)]
pub(crate) struct Submitted {
    api_key: String,
    sandbox: String,
    port: u16,
    #[serde(default)]
    redirect: Option<String>,
}

/// Text for HTML, attribute values included.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, t: &Target, error: Option<&str>) -> Response {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=err role=alert>{}</p>", escape(e))
    });
    let body = format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\"><title>Sign in · Warren</title>\
         <style>body{{font:16px system-ui,sans-serif;max-width:30em;margin:4em auto;padding:0 1em}}\
         input,button{{font:inherit;padding:.4em;margin:.4em 0}}input[type=password]{{width:100%;\
         box-sizing:border-box}}.err{{color:#b00}}code{{font-size:.9em}}</style>\
         <h1>Sign in</h1><p>Port {port} of sandbox <code>{sandbox}</code> is shared with \
         signed-in users. Enter your Warren API key to open it.</p>{error}\
         <form method=post action=service-login>\
         <input type=hidden name=sandbox value=\"{sandbox}\">\
         <input type=hidden name=port value=\"{port}\">\
         <input type=hidden name=redirect value=\"{redirect}\">\
         <label>API key<input type=password name=api_key required autofocus \
         autocomplete=current-password></label><button>Sign in</button></form></html>",
        port = t.port,
        sandbox = escape(&t.sandbox),
        redirect = escape(same_origin_path(t.redirect.as_deref())),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /auth/service-login?sandbox=&port=[&redirect=]`: the form.
pub(crate) async fn form(ApiQuery(t): ApiQuery<Target>) -> Response {
    page(StatusCode::OK, &t, None)
}

/// `POST /auth/service-login`: a valid key of a user the port admits is sent to the service
/// host with a one-time code; anything else gets the form again, saying why.
pub(crate) async fn submit(State(state): State<AppState>, Form(f): Form<Submitted>) -> Response {
    let t = Target {
        sandbox: f.sandbox,
        port: f.port,
        redirect: f.redirect,
    };
    let code = match state
        .control
        .begin_service_login(f.api_key.trim(), &t.sandbox, t.port)
    {
        Ok(Some(code)) => code,
        Ok(None) => {
            state.control.metrics().unauthenticated_request();
            return page(
                StatusCode::UNAUTHORIZED,
                &t,
                Some("That API key is not valid."),
            );
        }
        Err(e) => {
            let e = ApiError::from(e);
            return page(e.status, &t, Some(&e.message));
        }
    };
    let query = serde_urlencoded::to_string([
        ("code", code.as_str()),
        ("redirect", same_origin_path(t.redirect.as_deref())),
    ])
    .unwrap_or_default();
    let location = format!(
        "{}/__auth?{query}",
        browser_base(&state, &t.sandbox, t.port)
    );
    redirect(StatusCode::SEE_OTHER, &location, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}

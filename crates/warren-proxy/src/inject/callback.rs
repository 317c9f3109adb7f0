//! `proxy_config.callbacks` (LANGSMITH-API.md §2.7, §6.3, §13): services of the user's own that
//! the proxy asks for headers.
//!
//! - A destination callback (`match_hosts`) is asked for the credentials of a request to a
//!   host it covers; the answer's headers are set on the request (TLS to the host is
//!   intercepted, as for a header rule) and kept for `ttl_seconds` (or until the answer's
//!   `expires_at`, if sooner) per host and port, unless `full_request` asks to see every request.
//! - An attribution callback (`attribution_headers`) is asked once per `ttl_seconds` for
//!   headers that go on every request the proxy handles; the headers it names are required,
//!   so a request is refused while the callback does not supply them.
//!
//! The call is an HTTPS POST whose JSON body (`host`, `port`, `identity`, and `request` for
//! `full_request`) is signed with the server's Ed25519 key: the `X-LangSmith-Signature-JWT`
//! header carries an EdDSA JWT (`sub` = `langsmith-sandbox-callback`, `aud` = the callback
//! URL, `body_sha256`) that the SDK's `SandboxTokenVerifier.verify_callback` checks against
//! the server's `/.well-known/jwks.json`. The answer is JSON:
//! `{"headers": {"Name": "value", ...}, "expires_at": "RFC 3339"?}`. A callback URL is reached
//! under the sandbox's own egress policy (never a loopback or private address).

use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::parse::{FORBIDDEN_HEADERS, parse_header, strings};
use super::{HeaderSpec, RuleError, invalid_callback};
use crate::policy::{Destination, Entry, Host};

/// Most callbacks in one `proxy_config`.
pub const MAX_CALLBACKS: usize = 8;
/// Longest `ttl_seconds`: a day.
pub const MAX_TTL_SECONDS: u64 = 86_400;

/// One parsed callback.
#[derive(Debug, Clone)]
pub struct Callback {
    /// The URL as configured (the signature's audience).
    pub url: String,
    /// Where it is.
    pub dest: Destination,
    /// Its path and query.
    pub path: String,
    /// How long an answer is kept.
    pub ttl_seconds: u64,
    /// The hosts it gives credentials for (empty for an attribution callback).
    pub(crate) hosts: Vec<Entry>,
    /// Whether it sees every request (and is asked every time).
    pub full_request: bool,
    /// Headers sent to the callback itself (its own authentication).
    pub(crate) request_headers: Vec<HeaderSpec>,
    /// For an attribution callback: the headers it must supply for all egress.
    pub attribution_headers: Vec<HeaderName>,
}

impl Callback {
    /// Whether this callback gives credentials for `dest`.
    pub fn covers(&self, dest: &Destination) -> bool {
        self.hosts.iter().any(|e| match dest.host() {
            Host::Name(n) => e.matches_name(n),
            Host::Ip(ip) => e.matches_addr(*ip),
        })
    }

    /// Whether this is an attribution callback.
    pub fn is_attribution(&self) -> bool {
        !self.attribution_headers.is_empty()
    }
}

pub(super) fn parse_callbacks(list: &Value) -> Result<Vec<Callback>, RuleError> {
    let list = list
        .as_array()
        .ok_or_else(|| RuleError::Invalid("proxy_config.callbacks must be a list".into()))?;
    if list.len() > MAX_CALLBACKS {
        return Err(RuleError::Invalid(format!(
            "proxy_config has more than {MAX_CALLBACKS} callbacks"
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, c)| parse_one(i, c))
        .collect()
}

fn parse_one(i: usize, value: &Value) -> Result<Callback, RuleError> {
    let obj: &Map<String, Value> = value
        .as_object()
        .ok_or_else(|| invalid_callback(i, "must be an object"))?;
    let url = obj
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_callback(i, "needs a url"))?;
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| invalid_callback(i, format!("{url:?} is not a URL")))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid_callback(i, "the url must be https"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid_callback(i, "the url has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid_callback(i, "the url may not carry credentials"));
    }
    let dest = Destination::new(authority.host(), authority.port_u16().unwrap_or(443))
        .map_err(|e| invalid_callback(i, format!("the url's host: {e}")))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let ttl_seconds = obj
        .get("ttl_seconds")
        .and_then(Value::as_u64)
        .filter(|t| *t <= MAX_TTL_SECONDS)
        .ok_or_else(|| {
            invalid_callback(
                i,
                format!("ttl_seconds must be a whole number from 0 to {MAX_TTL_SECONDS}"),
            )
        })?;
    let full_request = match obj.get("full_request") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid_callback(i, "full_request must be true or false")),
    };
    let name = format!("callback {}", i + 1);
    let hosts = strings(&name, obj, "match_hosts")?
        .iter()
        .map(|h| {
            let e = Entry::parse(h)
                .map_err(|e| invalid_callback(i, format!("match_hosts {h:?}: {e}")))?;
            match e.port() {
                Some(_) => Err(invalid_callback(
                    i,
                    format!("match_hosts {h:?} may not name a port"),
                )),
                None => Ok(e),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let attribution_headers = strings(&name, obj, "attribution_headers")?
        .iter()
        .map(|h| {
            let n = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| invalid_callback(i, format!("{h:?} is not a header name")))?;
            match FORBIDDEN_HEADERS.contains(&n.as_str()) {
                true => Err(invalid_callback(i, format!("header {h} may not be set"))),
                false => Ok(n),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if attribution_headers.len() > super::MAX_ATTRIBUTION_HEADERS {
        return Err(invalid_callback(
            i,
            "names more than 16 attribution_headers",
        ));
    }
    match (hosts.is_empty(), attribution_headers.is_empty()) {
        (true, true) => {
            return Err(invalid_callback(
                i,
                "needs match_hosts or attribution_headers",
            ));
        }
        (false, false) => {
            return Err(invalid_callback(
                i,
                "takes match_hosts or attribution_headers, not both",
            ));
        }
        _ => {}
    }
    if full_request && !attribution_headers.is_empty() {
        return Err(invalid_callback(
            i,
            "an attribution callback takes no full_request",
        ));
    }
    let request_headers = match obj.get("request_headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= super::MAX_HEADERS => list
            .iter()
            .map(|h| parse_header(&name, h, false))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(invalid_callback(
                i,
                "request_headers must be a list of at most 32 headers",
            ));
        }
    };
    Ok(Callback {
        url: url.to_owned(),
        dest,
        path,
        ttl_seconds,
        hosts,
        full_request,
        request_headers,
        attribution_headers,
    })
}

/// The headers of a callback's answer, checked as header names and values.
pub fn answer_headers(answer: &Value) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let Some(headers) = answer.get("headers") else {
        return Ok(Vec::new());
    };
    let headers = headers
        .as_object()
        .ok_or("the answer's headers must be an object of strings")?;
    if headers.len() > super::MAX_HEADERS {
        return Err("the answer has more than 32 headers".into());
    }
    headers
        .iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{k:?} is not a header name"))?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                return Err(format!("the answer may not set {k}"));
            }
            let mut value = v
                .as_str()
                .and_then(|v| HeaderValue::from_str(v).ok())
                .ok_or_else(|| format!("the answer's {k} is not a header value"))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

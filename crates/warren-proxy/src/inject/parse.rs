//! Parsing `proxy_config.rules`: every field checked, every refusal naming the rule.

use std::collections::BTreeMap;

use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::paths::{MAX_PATHS, PathPattern};
use super::{
    HeaderSpec, Kind, MAX_ATTRIBUTION_HEADERS, MAX_HEADERS, MAX_VALUE_LEN, Rule, RuleError, Source,
    invalid,
};
use crate::policy::Entry;

/// The rule's kind: `header` (also when `type` is absent), or `attribution`; anything else
/// is refused.
pub(super) fn rule_type<'a>(name: &str, obj: &'a Map<String, Value>) -> Result<&'a str, RuleError> {
    let declared = match obj.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err(invalid(name, "type must be a string")),
    };
    if declared == Some("aws") || obj.get("aws").is_some_and(|v| !v.is_null()) {
        return match declared {
            None | Some("aws") => Ok("aws"),
            Some(other) => Err(invalid(
                name,
                format!("a rule of type {other:?} has an aws block"),
            )),
        };
    }
    for provider in ["gcp", "azure"] {
        if declared == Some(provider) || obj.get(provider).is_some_and(|v| !v.is_null()) {
            return Err(RuleError::Unsupported(format!(
                "proxy_config rule {name:?}: {provider} credential rules are not supported yet; \
                 use a header rule with a workspace secret"
            )));
        }
    }
    for field in ["rewrite", "relay_id"] {
        if obj.get(field).is_some_and(|v| !v.is_null()) {
            return Err(RuleError::Unsupported(format!(
                "proxy_config rule {name:?}: {field} is not supported"
            )));
        }
    }
    match declared {
        None | Some("header") | Some("headers") => Ok("header"),
        Some("attribution") => Ok("attribution"),
        Some(other) => Err(RuleError::Unsupported(format!(
            "proxy_config rule {name:?}: rule type {other:?} is not supported \
             (supported: header, aws, attribution)"
        ))),
    }
}

/// The hosts of AWS's own endpoints, which an AWS rule covers unless `match_hosts` narrows
/// it (or names an S3-compatible service instead).
const AWS_HOSTS: &str = "*.amazonaws.com";

pub(super) fn parse_aws_rule(name: &str, obj: &Map<String, Value>) -> Result<Rule, RuleError> {
    for field in ["match_paths", "match_headers", "headers"] {
        if obj
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]))
        {
            return Err(invalid(name, format!("an aws rule takes no {field}")));
        }
    }
    let aws = obj
        .get("aws")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid(name, "an aws rule needs an aws block"))?;
    if aws
        .get("role_arn")
        .and_then(Value::as_str)
        .is_some_and(|r| !r.is_empty())
    {
        return Err(RuleError::Unsupported(format!(
            "proxy_config rule {name:?}: AWS role rules (role_arn) need an identity provider \
             AWS trusts, which Warren does not run; use access_key_id and secret_access_key"
        )));
    }
    let key = |field: &str| -> Result<Source, RuleError> {
        let holder = aws
            .get(field)
            .ok_or_else(|| invalid(name, format!("an aws rule needs aws.{field}")))?;
        parse_source(name, field, holder, false)
    };
    let (access_key_id, secret_access_key) = (key("access_key_id")?, key("secret_access_key")?);
    let mut rule = parse_matching(name, obj, &[AWS_HOSTS])?;
    rule.kind = Kind::Aws {
        access_key_id,
        secret_access_key,
    };
    Ok(rule)
}

pub(super) fn parse_header_rule(name: &str, obj: &Map<String, Value>) -> Result<Rule, RuleError> {
    let mut rule = parse_matching(name, obj, &[])?;
    let headers = match obj.get("headers") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => {
            return Err(invalid(
                name,
                "a header rule needs a non-empty headers list",
            ));
        }
    };
    if headers.len() > MAX_HEADERS {
        return Err(invalid(name, format!("more than {MAX_HEADERS} headers")));
    }
    let headers = headers
        .iter()
        .map(|h| parse_header(name, h, false))
        .collect::<Result<Vec<_>, _>>()?;
    rule.kind = Kind::Headers(headers);
    Ok(rule)
}

/// The `match_*` fields of a rule; `default_hosts` apply when `match_hosts` is empty (none:
/// the rule must name its hosts).
fn parse_matching(
    name: &str,
    obj: &Map<String, Value>,
    default_hosts: &[&str],
) -> Result<Rule, RuleError> {
    let mut hosts = strings(name, obj, "match_hosts")?;
    if hosts.is_empty() {
        hosts = default_hosts.iter().map(|h| (*h).to_owned()).collect();
    }
    if hosts.is_empty() {
        return Err(invalid(
            name,
            "match_hosts must name the hosts the credential may be sent to",
        ));
    }
    let hosts = hosts
        .iter()
        .map(|h| {
            let entry =
                Entry::parse(h).map_err(|e| invalid(name, format!("match_hosts {h:?}: {e}")))?;
            match entry.port() {
                Some(_) => Err(invalid(
                    name,
                    format!("match_hosts {h:?}: use match_port for a port"),
                )),
                None => Ok(entry),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let paths = strings(name, obj, "match_paths")?;
    if paths.len() > MAX_PATHS {
        return Err(invalid(name, format!("more than {MAX_PATHS} match_paths")));
    }
    let paths = paths
        .iter()
        .map(|p| {
            PathPattern::parse(p).map_err(|e| invalid(name, format!("match_paths {p:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let match_headers = strings(name, obj, "match_headers")?
        .iter()
        .map(|h| {
            let (n, v) = h.split_once(": ").ok_or_else(|| {
                invalid(name, format!("match_headers {h:?} must be \"name: value\""))
            })?;
            if n.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(invalid(
                    name,
                    format!("match_headers {h:?}: the name must be lowercase"),
                ));
            }
            let header = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| invalid(name, format!("match_headers {h:?}: not a header name")))?;
            Ok((header, v.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let port = match obj.get("match_port") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(name, "match_port must be a port from 1 to 65535"))?,
        ),
    };
    let https_only = match obj.get("match_scheme") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "https" => true,
        Some(_) => return Err(invalid(name, "match_scheme may only be \"https\"")),
    };
    Ok(Rule {
        name: name.to_owned(),
        hosts,
        port,
        https_only,
        paths,
        match_headers,
        kind: Kind::Headers(Vec::new()),
    })
}

pub(super) fn parse_attribution(
    name: &str,
    obj: &Map<String, Value>,
) -> Result<Vec<(HeaderName, HeaderValue)>, RuleError> {
    for field in [
        "match_hosts",
        "match_paths",
        "match_headers",
        "match_port",
        "match_scheme",
        "env_vars",
    ] {
        if obj.get(field).is_some_and(|v| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }) {
            return Err(invalid(
                name,
                format!("an attribution rule takes no {field}"),
            ));
        }
    }
    let list = match obj.get("headers") {
        Some(Value::Array(list)) => list,
        _ => return Err(invalid(name, "an attribution rule needs a headers list")),
    };
    if list.len() > MAX_ATTRIBUTION_HEADERS {
        return Err(invalid(
            name,
            format!("an attribution rule sets at most {MAX_ATTRIBUTION_HEADERS} headers"),
        ));
    }
    list.iter()
        .map(|h| {
            let spec = parse_header(name, h, true)?;
            match spec.source {
                Source::Literal(v) => Ok((spec.name, v)),
                Source::Secret { .. } => unreachable!("attribution headers are plaintext"),
            }
        })
        .collect()
}

/// Headers a rule may not set: they frame the message or belong to the connection.
pub(crate) const FORBIDDEN_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
];

pub(super) fn parse_header(
    rule: &str,
    h: &Value,
    attribution: bool,
) -> Result<HeaderSpec, RuleError> {
    let obj = h
        .as_object()
        .ok_or_else(|| invalid(rule, "each header must be {name, type, value}"))?;
    let raw = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(rule, "a header needs a name"))?;
    let name = HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| invalid(rule, format!("{raw:?} is not a header name")))?;
    if FORBIDDEN_HEADERS.contains(&name.as_str()) {
        return Err(invalid(
            rule,
            format!("header {raw} may not be set by a rule"),
        ));
    }
    if attribution && !name.as_str().starts_with("x-") {
        return Err(invalid(
            rule,
            format!("attribution header {raw} must start with X-"),
        ));
    }
    let source = parse_source(rule, &format!("header {raw}"), h, attribution)?;
    Ok(HeaderSpec { name, source })
}

/// A value holder `{type, value}`: `plaintext`, `opaque` or `workspace_secret` (only
/// `plaintext` when `plaintext_only`).
fn parse_source(
    rule: &str,
    what: &str,
    holder: &Value,
    plaintext_only: bool,
) -> Result<Source, RuleError> {
    let obj = holder
        .as_object()
        .ok_or_else(|| invalid(rule, format!("{what} must be {{type, value}}")))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("plaintext");
    let value = obj.get("value").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            rule,
            format!("{what} has no value (an opaque value is kept only when the rule is updated)"),
        )
    })?;
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(
            rule,
            format!("{what}'s value is longer than 64 KiB"),
        ));
    }
    match kind {
        "plaintext" | "opaque" | "workspace_secret" if plaintext_only && kind != "plaintext" => {
            Err(invalid(rule, format!("{what} must be plaintext")))
        }
        "plaintext" | "opaque" => {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                invalid(rule, format!("{what}'s value is not a valid header value"))
            })?;
            v.set_sensitive(kind == "opaque");
            Ok(Source::Literal(v))
        }
        "workspace_secret" => {
            let (template, keys) = secret_template(rule, value)?;
            Ok(Source::Secret { template, keys })
        }
        other => Err(invalid(
            rule,
            format!("{what} has type {other:?} (plaintext, opaque or workspace_secret)"),
        )),
    }
}

/// A `workspace_secret` value: a secret's name (`OPENAI_API_KEY`), or a template naming
/// secrets in braces (`Bearer {OPENAI_API_KEY}`).
fn secret_template(rule: &str, value: &str) -> Result<(String, Vec<String>), RuleError> {
    let valid = |k: &str| {
        !k.is_empty()
            && k.len() <= 128
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    if !value.contains('{') {
        if !valid(value) {
            return Err(invalid(
                rule,
                format!("{value:?} is not a workspace secret name"),
            ));
        }
        return Ok((format!("{{{value}}}"), vec![value.to_owned()]));
    }
    let mut keys = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| invalid(rule, format!("unclosed {{ in {value:?}")))?;
        let key = &after[..close];
        if !valid(key) {
            return Err(invalid(
                rule,
                format!("{{{key}}} is not a workspace secret name"),
            ));
        }
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_owned());
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') || value.chars().any(|c| c.is_control()) {
        return Err(invalid(
            rule,
            format!("{value:?} is not a valid secret template"),
        ));
    }
    Ok((value.to_owned(), keys))
}

pub(super) fn parse_env(
    name: &str,
    obj: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, RuleError> {
    let Some(env) = obj.get("env_vars").filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let env = env
        .as_object()
        .ok_or_else(|| invalid(name, "env_vars must be an object of strings"))?;
    env.iter()
        .map(|(k, v)| {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let v = v.as_str().filter(|_| ok).ok_or_else(|| {
                invalid(
                    name,
                    format!("env_vars {k:?} must be a variable name with a string value"),
                )
            })?;
            Ok((k.clone(), v.to_owned()))
        })
        .collect()
}

pub(super) fn strings(
    name: &str,
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Vec<String>, RuleError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(name, format!("{field} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(invalid(name, format!("{field} must be a list of strings"))),
    }
}

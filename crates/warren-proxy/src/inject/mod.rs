//! Credential injection: the `rules` of a sandbox's `proxy_config` (LANGSMITH-API.md §2.7, §12,
//! §13), which add headers to the requests the proxy handles so that a credential reaches the
//! service without ever entering the sandbox.
//!
//! - A header rule (`type` absent or `"header"`) names the hosts it covers (`match_hosts`,
//!   the same patterns as `access_control`), optionally a port, the `https` scheme, paths
//!   ([`paths`]) and exact request headers; the first enabled rule that matches a request wins
//!   and sets its `headers`, replacing any the sandbox sent under the same names.
//! - Header values are `plaintext`, `opaque` (stored server-side, never returned) or
//!   `workspace_secret`: the name of a secret in the workspace's store, or a template such as
//!   `Bearer {OPENAI_API_KEY}`. Secrets are read when a request needs them, so rotating one
//!   takes effect at once; a secret restricted to some hosts is never sent anywhere else.
//! - The `attribution` rule adds literal `X-` headers to every request the proxy handles.
//!   HTTPS to a host that no credential rule covers is passed through without interception,
//!   as the SDK documents ("A host no rule covers is passed through without TLS
//!   interception"), so it carries none: intercepting it would break HTTP/2-only clients,
//!   websockets, pinned certificates and other protocols on 443 for the sake of metadata.
//! - A TLS connection to a host some rule covers is intercepted ([`crate::ca`]); every other
//!   TLS connection is spliced untouched.
//! - `aws` rules sign requests with SigV4 ([`aws`]); `callbacks` ask a service of the user's
//!   for headers ([`callback`]).
//!
//! Provider rules `gcp` and `azure`, and `rewrite` and `relay` rules are
//! refused with [`RuleError::Unsupported`], never accepted and ignored: a caller must not
//! believe a credential is injected when it is not.

pub mod aws;
pub mod callback;
mod parse;
pub mod paths;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::policy::{Destination, Entry, Host};
use aws::AwsSigning;
use callback::Callback;
use parse::{parse_attribution, parse_aws_rule, parse_env, parse_header_rule, rule_type};
use paths::PathPattern;

/// Most rules in one `proxy_config`.
pub const MAX_RULES: usize = 64;
/// Most headers one rule sets.
pub const MAX_HEADERS: usize = 32;
/// Most headers the attribution rule sets.
pub const MAX_ATTRIBUTION_HEADERS: usize = 16;
/// Most bytes of one header value.
const MAX_VALUE_LEN: usize = 64 * 1024;

/// Why a `proxy_config`'s rules are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// The rules are malformed.
    #[error("{0}")]
    Invalid(String),
    /// The rules ask for something Warren does not do (yet).
    #[error("{0}")]
    Unsupported(String),
}

fn invalid_callback(i: usize, what: impl std::fmt::Display) -> RuleError {
    RuleError::Invalid(format!("proxy_config callback {}: {what}", i + 1))
}

fn invalid(rule: &str, what: impl std::fmt::Display) -> RuleError {
    RuleError::Invalid(format!("proxy_config rule {rule:?}: {what}"))
}

/// A workspace secret as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretValue {
    /// The value.
    pub value: String,
    /// Hosts it may be sent to (exact or `*.` patterns); empty: any host a rule names.
    pub hosts: Vec<String>,
}

/// The workspace's secret store, read when a request needs a secret.
pub trait Secrets: Send + Sync {
    /// The secret called `key`, if it is set.
    fn secret(&self, key: &str) -> Option<SecretValue>;
}

impl<F> Secrets for F
where
    F: Fn(&str) -> Option<SecretValue> + Send + Sync,
{
    fn secret(&self, key: &str) -> Option<SecretValue> {
        self(key)
    }
}

/// Why a matched request cannot get its credential; the request is refused rather than sent
/// without it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    /// A secret the rule uses is not set.
    #[error("rule {rule:?} uses workspace secret {key}, which is not set")]
    MissingSecret {
        /// The rule.
        rule: String,
        /// The secret.
        key: String,
    },
    /// The secret may not be sent to this host.
    #[error("workspace secret {key} may not be sent to {host}")]
    HostNotAllowed {
        /// The secret.
        key: String,
        /// The request's host.
        host: String,
    },
    /// An AWS rule matched a plain-HTTP request: its credentials go over HTTPS only.
    #[error("rule {rule:?} signs for AWS over HTTPS only")]
    NotHttps {
        /// The rule.
        rule: String,
    },
    /// The value made from a secret is not a valid header value.
    #[error("rule {rule:?} makes an invalid value for header {header}")]
    BadValue {
        /// The rule.
        rule: String,
        /// The header.
        header: String,
    },
}

/// Where a header's value comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// `plaintext` or `opaque`: the value itself.
    Literal(HeaderValue),
    /// `workspace_secret`: a template whose `{NAME}`s are secrets.
    Secret { template: String, keys: Vec<String> },
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderSpec {
    name: HeaderName,
    source: Source,
}

/// One enabled header rule.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    hosts: Vec<Entry>,
    port: Option<u16>,
    https_only: bool,
    paths: Vec<PathPattern>,
    match_headers: Vec<(HeaderName, String)>,
    kind: Kind,
}

/// What a rule does to a request it matches.
#[derive(Debug, Clone)]
enum Kind {
    /// Sets these headers.
    Headers(Vec<HeaderSpec>),
    /// Signs the request with this AWS key pair.
    Aws {
        access_key_id: Source,
        secret_access_key: Source,
    },
}

/// What [`Credentials::apply`] did to a request.
#[derive(Debug, Default)]
pub struct Applied {
    /// The rule that matched, if any.
    pub rule: Option<String>,
    /// For an AWS rule: the signing still to do, once the body's hash is known.
    pub aws: Option<AwsSigning>,
}

/// The scheme of a request the proxy handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS, intercepted.
    Https,
}

/// One request, as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// Its scheme.
    pub scheme: Scheme,
    /// Where it goes.
    pub dest: &'a Destination,
    /// Its path, without the query.
    pub path: &'a str,
}

/// A sandbox's credential rules, with its workspace's secret store.
#[derive(Clone)]
pub struct Credentials {
    rules: Vec<Rule>,
    attribution: Vec<(HeaderName, HeaderValue)>,
    env: BTreeMap<String, String>,
    secret_keys: BTreeSet<String>,
    secrets: Arc<dyn Secrets>,
    callbacks: Vec<Callback>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Rule names only: literal values are credentials too.
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Credentials")
            .field("rules", &names)
            .field("attribution", &self.attribution.len())
            .finish_non_exhaustive()
    }
}

impl Default for Credentials {
    fn default() -> Self {
        Self::none()
    }
}

impl Credentials {
    /// No rules: nothing is injected or intercepted.
    pub fn none() -> Self {
        Self {
            rules: Vec::new(),
            attribution: Vec::new(),
            env: BTreeMap::new(),
            secret_keys: BTreeSet::new(),
            secrets: Arc::new(|_: &str| None),
            callbacks: Vec::new(),
        }
    }

    /// The rules of `proxy_config`, reading secrets from `secrets`.
    pub fn from_proxy_config(
        proxy_config: Option<&Value>,
        secrets: Arc<dyn Secrets>,
    ) -> Result<Self, RuleError> {
        let mut out = Self {
            secrets,
            ..Self::none()
        };
        let Some(pc) = proxy_config.and_then(Value::as_object) else {
            return Ok(out);
        };
        if let Some(cbs) = pc.get("callbacks").filter(|v| !v.is_null()) {
            out.callbacks = callback::parse_callbacks(cbs)?;
            for cb in &out.callbacks {
                for h in &cb.request_headers {
                    if let Source::Secret { keys, .. } = &h.source {
                        out.secret_keys.extend(keys.iter().cloned());
                    }
                }
            }
        }
        for key in ["description"] {
            if let Some(d) = pc.get(key).and_then(Value::as_str)
                && d.chars().count() > 1024
            {
                return Err(RuleError::Invalid(format!(
                    "proxy_config {key} is longer than 1024 characters"
                )));
            }
        }
        let rules = match pc.get("rules") {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Array(rules)) => rules,
            Some(_) => {
                return Err(RuleError::Invalid(
                    "proxy_config.rules must be a list".into(),
                ));
            }
        };
        if rules.len() > MAX_RULES {
            return Err(RuleError::Invalid(format!(
                "proxy_config has more than {MAX_RULES} rules"
            )));
        }
        let mut names = BTreeSet::new();
        let mut attribution_seen = false;
        for rule in rules {
            let obj = rule.as_object().ok_or_else(|| {
                RuleError::Invalid("a proxy_config rule must be an object".into())
            })?;
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty() && n.len() <= 256)
                .ok_or_else(|| {
                    RuleError::Invalid(
                        "every proxy_config rule needs a name (1-256 characters)".into(),
                    )
                })?;
            if !names.insert(name.to_owned()) {
                return Err(invalid(name, "two rules have this name"));
            }
            if let Some(d) = obj.get("description").and_then(Value::as_str)
                && d.chars().count() > 1024
            {
                return Err(invalid(name, "description is longer than 1024 characters"));
            }
            let enabled = match obj.get("enabled") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid(name, "enabled must be true or false")),
            };
            let kind = rule_type(name, obj)?;
            match kind {
                "attribution" => {
                    if attribution_seen {
                        return Err(RuleError::Invalid(
                            "proxy_config may have at most one attribution rule".into(),
                        ));
                    }
                    attribution_seen = true;
                    let headers = parse_attribution(name, obj)?;
                    if enabled {
                        out.attribution = headers;
                    }
                }
                _ => {
                    let rule = match kind {
                        "aws" => parse_aws_rule(name, obj)?,
                        _ => parse_header_rule(name, obj)?,
                    };
                    let env = parse_env(name, obj)?;
                    for source in rule.sources() {
                        if let Source::Secret { keys, .. } = source {
                            out.secret_keys.extend(keys.iter().cloned());
                        }
                    }
                    if enabled {
                        out.env.extend(env);
                        out.rules.push(rule);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The workspace secrets the rules name (enabled or not), so the caller can check they
    /// exist when the sandbox is created.
    pub fn secret_keys(&self) -> &BTreeSet<String> {
        &self.secret_keys
    }

    /// Environment variables the enabled rules set in the sandbox (dummy values for tools
    /// that want a credential variable while the real credential is injected on the wire).
    pub fn env_vars(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Whether a TLS connection to `dest` must be intercepted: some enabled rule covers its
    /// host and port. Any other TLS connection is passed through untouched.
    pub fn intercepts(&self, dest: &Destination) -> bool {
        self.rules
            .iter()
            .any(|r| r.covers(dest) && r.port.is_none_or(|p| p == dest.port()))
            || self.callbacks.iter().any(|c| c.covers(dest))
    }

    /// The callbacks.
    pub fn callbacks(&self) -> &[Callback] {
        &self.callbacks
    }

    /// The headers a callback's call carries (literals, or made from secrets, checked against
    /// the secrets' host restrictions for the callback's own host).
    pub fn callback_headers(
        &self,
        cb: &Callback,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, InjectError> {
        let rule = format!("callback {}", cb.url);
        cb.request_headers
            .iter()
            .map(|spec| {
                let value = self.resolve(&rule, &spec.source, &cb.dest)?;
                HeaderValue::from_str(&value)
                    .map(|v| (spec.name.clone(), v))
                    .map_err(|_| InjectError::BadValue {
                        rule: rule.clone(),
                        header: spec.name.to_string(),
                    })
            })
            .collect()
    }

    /// Adds the headers of the attribution rule and of the first rule matching the request.
    /// An AWS rule's signing is left to the caller ([`Applied::aws`]), which needs the body.
    pub fn apply(
        &self,
        target: RequestTarget<'_>,
        headers: &mut HeaderMap,
    ) -> Result<Applied, InjectError> {
        for (name, value) in &self.attribution {
            headers.insert(name.clone(), value.clone());
        }
        let Some(rule) = self.rules.iter().find(|r| r.matches(target, headers)) else {
            return Ok(Applied::default());
        };
        let mut applied = Applied {
            rule: Some(rule.name.clone()),
            aws: None,
        };
        match &rule.kind {
            Kind::Headers(specs) => {
                // Resolve every value first: a request gets all of a rule's headers or is
                // refused.
                let mut values = Vec::with_capacity(specs.len());
                for spec in specs {
                    let value = self.value(rule, &spec.source, target.dest)?;
                    let mut value =
                        HeaderValue::from_str(&value).map_err(|_| InjectError::BadValue {
                            rule: rule.name.clone(),
                            header: spec.name.to_string(),
                        })?;
                    value.set_sensitive(true);
                    values.push((spec.name.clone(), value));
                }
                for (name, value) in values {
                    headers.insert(name, value);
                }
            }
            Kind::Aws {
                access_key_id,
                secret_access_key,
            } => {
                if target.scheme != Scheme::Https {
                    return Err(InjectError::NotHttps {
                        rule: rule.name.clone(),
                    });
                }
                applied.aws = Some(AwsSigning {
                    rule: rule.name.clone(),
                    access_key_id: self.value(rule, access_key_id, target.dest)?,
                    secret_access_key: self.value(rule, secret_access_key, target.dest)?,
                });
            }
        }
        Ok(applied)
    }

    fn value(
        &self,
        rule: &Rule,
        source: &Source,
        dest: &Destination,
    ) -> Result<String, InjectError> {
        self.resolve(&rule.name, source, dest)
    }

    fn resolve(
        &self,
        rule: &str,
        source: &Source,
        dest: &Destination,
    ) -> Result<String, InjectError> {
        let (template, keys) = match source {
            Source::Literal(v) => {
                return v
                    .to_str()
                    .map(str::to_owned)
                    .map_err(|_| InjectError::BadValue {
                        rule: rule.to_owned(),
                        header: "a literal value".into(),
                    });
            }
            Source::Secret { template, keys } => (template, keys),
        };
        let mut text = template.to_owned();
        for key in keys {
            let secret = self
                .secrets
                .secret(key)
                .ok_or_else(|| InjectError::MissingSecret {
                    rule: rule.to_owned(),
                    key: key.clone(),
                })?;
            if !secret.hosts.is_empty()
                && !secret
                    .hosts
                    .iter()
                    .any(|p| host_pattern_matches(p, dest.host()))
            {
                return Err(InjectError::HostNotAllowed {
                    key: key.clone(),
                    host: dest.host().to_string(),
                });
            }
            text = text.replace(&format!("{{{key}}}"), &secret.value);
        }
        Ok(text)
    }
}

/// A secret's host pattern: an exact host, or `*.` and a domain (which does not match the
/// domain itself).
fn host_pattern_matches(pattern: &str, host: &Host) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match host {
        Host::Name(name) => match pattern.strip_prefix("*.") {
            Some(domain) => name
                .strip_suffix(domain)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => *name == pattern,
        },
        Host::Ip(ip) => pattern.parse::<IpAddr>().is_ok_and(|p| p == *ip),
    }
}

impl Rule {
    fn sources(&self) -> Vec<&Source> {
        match &self.kind {
            Kind::Headers(specs) => specs.iter().map(|s| &s.source).collect(),
            Kind::Aws {
                access_key_id,
                secret_access_key,
            } => vec![access_key_id, secret_access_key],
        }
    }

    fn covers(&self, dest: &Destination) -> bool {
        self.hosts.iter().any(|e| match dest.host() {
            Host::Name(name) => e.matches_name(name),
            Host::Ip(ip) => e.matches_addr(*ip),
        })
    }

    fn matches(&self, target: RequestTarget<'_>, headers: &HeaderMap) -> bool {
        self.covers(target.dest)
            && self.port.is_none_or(|p| p == target.dest.port())
            && (!self.https_only || target.scheme == Scheme::Https)
            && paths::matches(&self.paths, target.path)
            && self.match_headers.iter().all(|(name, want)| {
                let mut got = headers.get_all(name).iter();
                // Exactly one such header with exactly this value: a second copy could be the
                // one the server reads.
                matches!((got.next(), got.next()), (Some(v), None) if v.as_bytes() == want.as_bytes())
            })
    }
}

#[cfg(test)]
mod tests;

//! A sandbox's egress policy, parsed from the `proxy_config` of the API (LANGSMITH-API.md
//! §2.7), and the decision it makes for one destination.
//!
//! Order of the checks, the first that refuses wins:
//! 1. addresses no sandbox may reach whatever the lists say: loopback, metadata,
//!    private, link-local, CGNAT, multicast, reserved, and the host's own addresses;
//! 2. `deny_list` (deny wins over allow);
//! 3. `allow_list`, when there is one: only what it lists passes;
//! 4. without an `allow_list`: ports 80 and 443 pass, any other port needs an `allow_list`
//!    entry naming `host:PORT` (LangSmith's default egress), so it is refused.
//!
//! An entry without a port covers all ports in `deny_list` but only 80 and 443 in
//! `allow_list`; an entry with `:PORT` covers that port only.
//!
//! A name is judged twice: by name before it is resolved ([`Policy::decide`]), then each
//! address it resolves to ([`Policy::decide_address`]), so a name that resolves to 127.0.0.1
//! is refused. An IP literal is judged as an address.

mod address;
mod pattern;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

pub use pattern::{EntryError, MAX_ENTRY_LEN, NameError};

pub(crate) use pattern::normalize_name;

pub(crate) use pattern::Entry;

/// Most entries one list may hold.
pub const MAX_ENTRIES: usize = 1024;

/// Ports that pass without an `allow_list` entry naming them.
const HTTP_PORTS: [u16; 2] = [80, 443];

/// Why a `proxy_config` could not be turned into a [`Policy`].
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `proxy_config` is not a JSON object.
    #[error("proxy_config must be a JSON object")]
    NotAnObject,
    /// `access_control` is not an object, or has a key other than the two lists.
    #[error("proxy_config.access_control must be an object with only allow_list and deny_list")]
    BadAccessControl,
    /// A list is not an array of strings.
    #[error("proxy_config.access_control.{list} must be an array of strings")]
    NotAList {
        /// `allow_list` or `deny_list`.
        list: &'static str,
    },
    /// A list has more than [`MAX_ENTRIES`] entries.
    #[error("proxy_config.access_control.{list} has more than {MAX_ENTRIES} entries")]
    TooManyEntries {
        /// `allow_list` or `deny_list`.
        list: &'static str,
    },
    /// One entry does not parse.
    #[error("invalid {list} entry {entry:?}: {source}")]
    BadEntry {
        /// `allow_list` or `deny_list`.
        list: &'static str,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        #[source]
        source: EntryError,
    },
}

/// Why a host given by a client is not a destination.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// The authority has no port and no default applies.
    #[error("missing port")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port")]
    BadPort,
    /// The host is neither an IP address nor an acceptable name.
    #[error("invalid host: {0}")]
    BadHost(#[from] NameError),
}

/// Where a client wants to go: a name or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A normalized DNS name (lowercase, no trailing dot).
    Name(String),
    /// An IP address, in canonical form (IPv4-mapped IPv6 becomes IPv4).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
        }
    }
}

/// A host and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    host: Host,
    port: u16,
}

impl Destination {
    /// A destination from a host (a name, an IP address, or a bracketed IPv6 address) and a
    /// port. Names that C resolvers would read as IPv4 addresses (`2130706433`, `127.1`) are
    /// refused rather than guessed at.
    pub fn new(host: &str, port: u16) -> Result<Self, DestinationError> {
        if port == 0 {
            return Err(DestinationError::BadPort);
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip.to_canonical()),
            Err(_) => Host::Name(normalize_name(host)?),
        };
        Ok(Self { host, port })
    }

    /// A destination from an authority (`host`, `host:port`, `[v6]:port`); `default_port`
    /// applies when it names no port.
    pub fn from_authority(
        authority: &str,
        default_port: Option<u16>,
    ) -> Result<Self, DestinationError> {
        let (host, port) = match authority.rsplit_once(':') {
            // A colon inside brackets belongs to an IPv6 address, not to a port.
            Some((host, port))
                if !port.contains(']') && (!host.contains(':') || host.ends_with(']')) =>
            {
                (
                    host,
                    Some(port.parse::<u16>().map_err(|_| DestinationError::BadPort)?),
                )
            }
            _ => (authority, None),
        };
        let port = port.or(default_port).ok_or(DestinationError::MissingPort)?;
        Self::new(host, port)
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What the policy says about a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The connection may proceed.
    Allow,
    /// The connection is refused; `rule` says why, for the client and the audit log.
    Deny {
        /// The rule that refused it (`deny_list entry "*.evil.com"`, `not in allow_list`,
        /// `127.0.0.1 is a loopback address (127.0.0.0/8)`).
        rule: String,
    },
}

/// A decision with the rule that made it: for an allow, the rule that let it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ruling {
    pub(crate) allowed: bool,
    pub(crate) rule: String,
}

impl Ruling {
    fn allow(rule: impl Into<String>) -> Self {
        Self {
            allowed: true,
            rule: rule.into(),
        }
    }

    fn deny(rule: impl Into<String>) -> Self {
        Self {
            allowed: false,
            rule: rule.into(),
        }
    }

    pub(crate) fn decision(&self) -> Decision {
        match self.allowed {
            true => Decision::Allow,
            false => Decision::Deny {
                rule: self.rule.clone(),
            },
        }
    }
}

/// Host-wide settings every sandbox's policy shares, set by the daemon, never by
/// `proxy_config`.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    host_addresses: Vec<IpAddr>,
    loopback_test_ports: Vec<u16>,
}

impl PolicyConfig {
    /// No extra addresses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also refuses these addresses: the host's own public addresses, which the range checks
    /// cannot know about.
    pub fn with_host_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.host_addresses
            .extend(addrs.into_iter().map(|a| a.to_canonical()));
        self
    }

    /// **FOR TESTS ONLY. NEVER CALL THIS IN THE DAEMON.** Lets connections to exactly
    /// 127.0.0.1 on `port` pass the always-refused address check, so tests (which may only use
    /// loopback) can run an upstream server. `proxy_config` cannot set this: it is not read
    /// from JSON, and the lists still apply on top of it. DNS answers are never exempt.
    pub fn allow_loopback_for_tests(mut self, port: u16) -> Self {
        self.loopback_test_ports.push(port);
        self
    }

    fn exempt_for_tests(&self, addr: IpAddr, port: Option<u16>) -> bool {
        port.is_some_and(|p| self.loopback_test_ports.contains(&p))
            && addr == IpAddr::from([127, 0, 0, 1])
    }
}

/// A sandbox's egress policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None` without an `allow_list`; `Some(empty)` allows nothing.
    allow: Option<Vec<Entry>>,
    deny: Vec<Entry>,
    config: Arc<PolicyConfig>,
}

impl Policy {
    /// The policy of a sandbox whose `proxy_config` is `proxy_config` (`None`: LangSmith's
    /// default egress). Only `access_control` is read here; `rules` and `callbacks` belong to
    /// credential injection.
    pub fn from_proxy_config(
        proxy_config: Option<&Value>,
        config: Arc<PolicyConfig>,
    ) -> Result<Self, PolicyError> {
        let mut policy = Self {
            allow: None,
            deny: Vec::new(),
            config,
        };
        let Some(pc) = proxy_config else {
            return Ok(policy);
        };
        let pc = pc.as_object().ok_or(PolicyError::NotAnObject)?;
        let Some(ac) = pc.get("access_control").filter(|v| !v.is_null()) else {
            return Ok(policy);
        };
        let ac = ac.as_object().ok_or(PolicyError::BadAccessControl)?;
        if ac.keys().any(|k| k != "allow_list" && k != "deny_list") {
            return Err(PolicyError::BadAccessControl);
        }
        if let Some(list) = ac.get("allow_list").filter(|v| !v.is_null()) {
            policy.allow = Some(parse_list("allow_list", list)?);
        }
        if let Some(list) = ac.get("deny_list").filter(|v| !v.is_null()) {
            policy.deny = parse_list("deny_list", list)?;
        }
        Ok(policy)
    }

    /// LangSmith's default egress: ports 80 and 443 to any public destination.
    pub fn default_egress(config: Arc<PolicyConfig>) -> Self {
        Self {
            allow: None,
            deny: Vec::new(),
            config,
        }
    }

    /// Whether a connection to `dest` may proceed. For a name this is the check before
    /// resolving it; every resolved address must then pass [`Policy::decide_address`].
    pub fn decide(&self, dest: &Destination) -> Decision {
        self.ruling(dest).decision()
    }

    /// Whether a connection to `dest` may go to `addr`, one of the addresses its name resolved
    /// to (or its own address, for an IP literal).
    pub fn decide_address(&self, dest: &Destination, addr: IpAddr) -> Decision {
        self.address_ruling(dest, addr).decision()
    }

    /// Whether the DNS server may answer for `name` (a name is answered if it could be
    /// allowed on some port). `name` must be normalized (see [`Destination::new`]).
    pub fn decide_name(&self, name: &str) -> Decision {
        self.name_ruling(name, None).decision()
    }

    /// Whether the DNS server may give `addr` as an answer for `name`.
    pub fn decide_name_address(&self, name: &str, addr: IpAddr) -> Decision {
        self.name_address_ruling(name, addr).decision()
    }

    pub(crate) fn name_address_ruling(&self, name: &str, addr: IpAddr) -> Ruling {
        let ruling = self.name_ruling(name, None);
        match ruling.allowed {
            true => self.addr_ruling(Some(name), addr.to_canonical(), None),
            false => ruling,
        }
    }

    pub(crate) fn ruling(&self, dest: &Destination) -> Ruling {
        match &dest.host {
            Host::Name(name) => self.name_ruling(name, Some(dest.port)),
            Host::Ip(ip) => self.addr_ruling(None, *ip, Some(dest.port)),
        }
    }

    pub(crate) fn address_ruling(&self, dest: &Destination, addr: IpAddr) -> Ruling {
        let addr = addr.to_canonical();
        match &dest.host {
            Host::Name(name) => {
                let ruling = self.name_ruling(name, Some(dest.port));
                match ruling.allowed {
                    true => self.addr_ruling(Some(name), addr, Some(dest.port)),
                    false => ruling,
                }
            }
            Host::Ip(ip) if *ip != addr => Ruling::deny(format!("{addr} is not {ip}")),
            Host::Ip(_) => self.addr_ruling(None, addr, Some(dest.port)),
        }
    }

    /// The check by name. `port` is `None` for DNS, where any port counts.
    fn name_ruling(&self, name: &str, port: Option<u16>) -> Ruling {
        // RFC 6761: localhost names are the host itself, however a resolver answers.
        if name == "localhost" || name.ends_with(".localhost") {
            return Ruling::deny(format!("{name} is the host itself"));
        }
        if let Some(e) = self
            .deny
            .iter()
            .find(|e| deny_port(e, port) && e.matches_name(name))
        {
            return Ruling::deny(format!("deny_list entry {:?}", e.text()));
        }
        match &self.allow {
            Some(allow) => {
                if let Some(e) = allow
                    .iter()
                    .find(|e| allow_port(e, port) && e.matches_name(name))
                {
                    return Ruling::allow(format!("allow_list entry {:?}", e.text()));
                }
                // Address entries may still let it through by what it resolves to.
                if allow.iter().any(|e| allow_port(e, port) && e.is_address()) {
                    return Ruling::allow("allow_list address entries");
                }
                Ruling::deny(not_in_allow_list(port))
            }
            None => default_ruling(port),
        }
    }

    /// The check of one address: `name` is what it was resolved from (`None` for a literal).
    fn addr_ruling(&self, name: Option<&str>, addr: IpAddr, port: Option<u16>) -> Ruling {
        if !self.config.exempt_for_tests(addr, port)
            && let Some(reason) = address::blocked_reason(addr)
        {
            return Ruling::deny(format!("{addr} is a {reason}"));
        }
        if self.config.host_addresses.contains(&addr) {
            return Ruling::deny(format!("{addr} is an address of this host"));
        }
        if let Some(e) = self
            .deny
            .iter()
            .find(|e| deny_port(e, port) && e.matches_addr(addr))
        {
            return Ruling::deny(format!("deny_list entry {:?}", e.text()));
        }
        match &self.allow {
            Some(allow) => {
                let by_name = name.and_then(|n| {
                    allow
                        .iter()
                        .find(|e| allow_port(e, port) && e.matches_name(n))
                });
                let by_addr = || {
                    allow
                        .iter()
                        .find(|e| allow_port(e, port) && e.matches_addr(addr))
                };
                match by_name.or_else(by_addr) {
                    Some(e) => Ruling::allow(format!("allow_list entry {:?}", e.text())),
                    None => Ruling::deny(not_in_allow_list(port)),
                }
            }
            None => default_ruling(port),
        }
    }
}

fn parse_list(list: &'static str, value: &Value) -> Result<Vec<Entry>, PolicyError> {
    let items = value.as_array().ok_or(PolicyError::NotAList { list })?;
    if items.len() > MAX_ENTRIES {
        return Err(PolicyError::TooManyEntries { list });
    }
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or(PolicyError::NotAList { list })?;
            Entry::parse(text).map_err(|source| PolicyError::BadEntry {
                list,
                entry: text.to_owned(),
                source,
            })
        })
        .collect()
}

/// A deny entry without a port denies every port; one with a port, that port. A DNS lookup
/// (`None`) is refused only by entries that deny every port.
fn deny_port(entry: &Entry, port: Option<u16>) -> bool {
    match entry.port() {
        None => true,
        Some(p) => port == Some(p),
    }
}

/// An allow entry without a port allows 80 and 443 only: any other port must be named. A
/// DNS lookup (`None`) is allowed by any entry.
fn allow_port(entry: &Entry, port: Option<u16>) -> bool {
    match (entry.port(), port) {
        (_, None) => true,
        (None, Some(p)) => HTTP_PORTS.contains(&p),
        (Some(e), Some(p)) => e == p,
    }
}

fn default_ruling(port: Option<u16>) -> Ruling {
    match port {
        None => Ruling::allow("default egress"),
        Some(p) if HTTP_PORTS.contains(&p) => Ruling::allow(format!("default egress (port {p})")),
        Some(p) => Ruling::deny(format!(
            "port {p} needs an allow_list entry naming host:{p}"
        )),
    }
}

fn not_in_allow_list(port: Option<u16>) -> String {
    match port {
        Some(p) if !HTTP_PORTS.contains(&p) => {
            format!("not in allow_list (port {p} needs an entry naming host:{p})")
        }
        _ => "not in allow_list".to_owned(),
    }
}

#[cfg(test)]
mod tests;

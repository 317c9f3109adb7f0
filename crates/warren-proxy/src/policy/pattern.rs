//! One `allow_list`/`deny_list` entry: what it matches and on which ports.
//!
//! Entry forms (LangSmith's `access_control` patterns):
//! - `example.com`: exactly that name (case-insensitive, a trailing dot ignored);
//! - `*.example.com`: a glob over names; `*` matches any run of characters, dots included,
//!   so it matches `a.b.example.com` but not `example.com` itself;
//! - `1.2.3.4`, `2606:4700::1111`: one address;
//! - `10.0.0.0/8`, `2001:db8::/32`: a CIDR block;
//! - `~regex`: a regular expression over the whole name (it is anchored at both ends, so
//!   `~api\.example\.com` cannot match `api.example.com.evil.net`), case-insensitive.
//!
//! Any form may end in `:PORT` (an IPv6 address or block then needs brackets: `[::1]:443`,
//! `[2001:db8::/32]:22`); for a regex, a final `:DIGITS` is always read as the port.
//! Name patterns match names only and address patterns match addresses only: an address
//! pattern applies to a name through the addresses the name resolves to.

use std::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

/// Longest entry accepted, in bytes: bounds regex compilation and log lines.
pub const MAX_ENTRY_LEN: usize = 1024;
/// Compiled-size bound for a `~regex` entry.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why an entry could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The entry is empty.
    #[error("entry is empty")]
    Empty,
    /// The entry is longer than [`MAX_ENTRY_LEN`].
    #[error("entry is longer than {MAX_ENTRY_LEN} bytes")]
    TooLong,
    /// The `:PORT` suffix is not a port number.
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    /// A bracketed IPv6 entry is not closed or is followed by something other than `:PORT`.
    #[error("unbalanced brackets: write an IPv6 address as [addr] or [addr]:PORT")]
    BadBrackets,
    /// The host part is not a valid name, glob, address or block.
    #[error("not a host name, glob, IP address or CIDR block: {0}")]
    BadHost(#[from] NameError),
    /// A CIDR block does not parse.
    #[error("invalid CIDR block: {0}")]
    BadCidr(#[from] ipnet::AddrParseError),
    /// A glob does not compile.
    #[error("invalid glob: {0}")]
    BadGlob(#[from] globset::Error),
    /// A `~regex` does not compile (or is too large).
    #[error("invalid regex: {0}")]
    BadRegex(#[from] regex::Error),
}

/// Why a string is not an acceptable host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or only a dot.
    #[error("empty name")]
    Empty,
    /// Longer than 253 characters, or a label longer than 63.
    #[error("name or label too long")]
    TooLong,
    /// An empty label (`a..b`).
    #[error("empty label")]
    EmptyLabel,
    /// A character outside letters, digits, `-` and `_` (names must be ASCII: send IDNs in
    /// their `xn--` form).
    #[error("character {0:?} is not allowed in a host name")]
    BadChar(char),
    /// The last label is numeric: C resolvers read such names (`2130706433`, `0x7f.1`,
    /// `127.1`) as IPv4 addresses, which would slip past a check by name.
    #[error("numeric last label: write IP addresses in dotted-quad or IPv6 form")]
    NumericName,
}

/// Lowercases `name`, drops one trailing dot and checks it is a plausible DNS name.
pub(crate) fn normalize_name(name: &str) -> Result<String, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 253 {
        return Err(NameError::TooLong);
    }
    let name = name.to_ascii_lowercase();
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::TooLong);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(NameError::BadChar(c));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(&name);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    if last.chars().all(|c| c.is_ascii_digit()) || hex {
        return Err(NameError::NumericName);
    }
    Ok(name)
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Glob(GlobMatcher),
    Regex(Regex),
    Cidr(IpNet),
}

/// One parsed entry of an `allow_list` or `deny_list`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The entry as written, for refusal messages and audit logs.
    text: String,
    matcher: Matcher,
    port: Option<u16>,
}

impl Entry {
    pub(crate) fn parse(text: &str) -> Result<Self, EntryError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(EntryError::Empty);
        }
        if trimmed.len() > MAX_ENTRY_LEN {
            return Err(EntryError::TooLong);
        }
        let matcher;
        let port;
        if let Some(re) = trimmed.strip_prefix('~') {
            let (re, p) = match re.rsplit_once(':') {
                Some((head, tail))
                    if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) =>
                {
                    (head, Some(parse_port(tail)?))
                }
                _ => (re, None),
            };
            let anchored = format!("^(?:{re})$");
            let regex = RegexBuilder::new(&anchored)
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()?;
            matcher = Matcher::Regex(regex);
            port = p;
        } else {
            let (host, p) = split_port(trimmed)?;
            matcher = parse_host(host)?;
            port = p;
        }
        Ok(Self {
            text: trimmed.to_owned(),
            matcher,
            port,
        })
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether this entry names addresses (an IP or a CIDR block) rather than names.
    pub(crate) fn is_address(&self) -> bool {
        matches!(self.matcher, Matcher::Cidr(_))
    }

    /// Whether the host part matches `name`, which must be normalized.
    pub(crate) fn matches_name(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(exact) => exact == name,
            Matcher::Glob(glob) => glob.is_match(name),
            Matcher::Regex(regex) => regex.is_match(name),
            Matcher::Cidr(_) => false,
        }
    }

    /// Whether the host part matches `addr`, which must be canonical (no IPv4-mapped form).
    pub(crate) fn matches_addr(&self, addr: IpAddr) -> bool {
        match &self.matcher {
            Matcher::Cidr(net) => net.contains(&addr),
            _ => false,
        }
    }
}

/// Splits `host:PORT`, `[v6]`, `[v6]:PORT`; a bare IPv6 address or block (two or more colons,
/// no brackets) has no port.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), EntryError> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(EntryError::BadBrackets)?;
        return match after {
            "" => Ok((host, None)),
            _ => {
                let port = after.strip_prefix(':').ok_or(EntryError::BadBrackets)?;
                Ok((host, Some(parse_port(port)?)))
            }
        };
    }
    match entry.matches(':').count() {
        0 => Ok((entry, None)),
        1 => {
            let (host, port) = entry.split_once(':').ok_or(EntryError::BadPort)?;
            Ok((host, Some(parse_port(port)?)))
        }
        _ => Ok((entry, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, EntryError> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(EntryError::BadPort),
        Ok(p) => Ok(p),
    }
}

fn parse_host(host: &str) -> Result<Matcher, EntryError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Matcher::Cidr(IpNet::from(ip.to_canonical())));
    }
    if host.contains('/') {
        let net: IpNet = host.parse()?;
        return Ok(Matcher::Cidr(canonical_net(net.trunc())));
    }
    if host.contains('*') {
        // Check the characters around the stars as a name, so a glob cannot smuggle in other
        // glob syntax (`?`, `[..]`, `{..}`) or characters no host name has.
        let probe = host.replace('*', "x");
        normalize_name(&probe)?;
        let glob = GlobBuilder::new(&host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
            .case_insensitive(true)
            .literal_separator(false)
            .build()?;
        return Ok(Matcher::Glob(glob.compile_matcher()));
    }
    Ok(Matcher::Exact(normalize_name(host)?))
}

/// `::ffff:10.0.0.0/104` is `10.0.0.0/8`: destinations are compared in canonical form.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> Entry {
        Entry::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn names_normalize() {
        assert_eq!(normalize_name("Example.COM.").unwrap(), "example.com");
        assert_eq!(normalize_name("a_b-c.example").unwrap(), "a_b-c.example");
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert_eq!(normalize_name("."), Err(NameError::Empty));
        assert_eq!(normalize_name("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(normalize_name("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(normalize_name("é.com"), Err(NameError::BadChar('é')));
        assert_eq!(normalize_name(&"a".repeat(64)), Err(NameError::TooLong));
    }

    #[test]
    fn numeric_names_are_refused() {
        for name in [
            "2130706433",
            "127.1",
            "0x7f.1",
            "0x7f000001",
            "017700000001",
            "1.2.3.4",
        ] {
            assert_eq!(normalize_name(name), Err(NameError::NumericName), "{name}");
        }
        assert!(normalize_name("0xdead.example").is_ok());
        assert!(normalize_name("123.example").is_ok());
    }

    #[test]
    fn exact_names() {
        let e = entry("API.Example.com");
        assert!(e.matches_name("api.example.com"));
        assert!(!e.matches_name("example.com"));
        assert!(!e.matches_name("xapi.example.com"));
        assert_eq!(e.port(), None);
        assert!(!e.is_address());
    }

    #[test]
    fn globs() {
        let e = entry("*.example.com");
        assert!(e.matches_name("api.example.com"));
        assert!(e.matches_name("a.b.example.com"));
        assert!(!e.matches_name("example.com"));
        assert!(!e.matches_name("example.com.evil.net"));
        assert!(!e.matches_name("evilexample.com"));
        let e = entry("api-*.example.com:8443");
        assert!(e.matches_name("api-eu.example.com"));
        assert_eq!(e.port(), Some(8443));
        assert!(Entry::parse("*.exa?ple.com").is_err());
        assert!(Entry::parse("{a,b}.example.com").is_err());
    }

    #[test]
    fn regexes_are_anchored_and_case_insensitive() {
        let e = entry(r"~(api|www)\.example\.com");
        assert!(e.matches_name("api.example.com"));
        assert!(e.matches_name("www.example.com"));
        assert!(!e.matches_name("api.example.com.evil.net"));
        assert!(!e.matches_name("xapi.example.com"));
        let e = entry(r"~API\.example\.com:5432");
        assert!(e.matches_name("api.example.com"));
        assert_eq!(e.port(), Some(5432));
        let e = entry(r"~(?:a|b)\.example\.com");
        assert_eq!(e.port(), None);
        assert!(e.matches_name("b.example.com"));
        assert!(matches!(
            Entry::parse("~(unclosed"),
            Err(EntryError::BadRegex(_))
        ));
    }

    #[test]
    fn addresses_and_blocks() {
        let e = entry("1.2.3.4");
        assert!(e.is_address());
        assert!(e.matches_addr("1.2.3.4".parse().unwrap()));
        assert!(!e.matches_addr("1.2.3.5".parse().unwrap()));
        assert!(!e.matches_name("1.2.3.4"));
        let e = entry("1.2.3.0/24:22");
        assert!(e.matches_addr("1.2.3.200".parse().unwrap()));
        assert!(!e.matches_addr("1.2.4.1".parse().unwrap()));
        assert_eq!(e.port(), Some(22));
        let e = entry("2001:db8::/32");
        assert!(e.matches_addr("2001:db8::1".parse().unwrap()));
        assert_eq!(e.port(), None);
        let e = entry("[2606:4700::1111]:443");
        assert!(e.matches_addr("2606:4700::1111".parse().unwrap()));
        assert_eq!(e.port(), Some(443));
        let e = entry("::ffff:8.8.8.8");
        assert!(e.matches_addr("8.8.8.8".parse().unwrap()));
        let e = entry("::ffff:8.8.0.0/112");
        assert!(e.matches_addr("8.8.1.1".parse().unwrap()));
        let e = entry("10.1.2.3/8");
        assert!(e.matches_addr("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn bad_entries() {
        assert!(matches!(Entry::parse("  "), Err(EntryError::Empty)));
        assert!(matches!(
            Entry::parse("example.com:0"),
            Err(EntryError::BadPort)
        ));
        assert!(matches!(
            Entry::parse("example.com:99999"),
            Err(EntryError::BadPort)
        ));
        assert!(matches!(
            Entry::parse("example.com:http"),
            Err(EntryError::BadPort)
        ));
        assert!(matches!(Entry::parse("[::1"), Err(EntryError::BadBrackets)));
        assert!(matches!(
            Entry::parse("[::1]x"),
            Err(EntryError::BadBrackets)
        ));
        assert!(matches!(
            Entry::parse("10.0.0.0/33"),
            Err(EntryError::BadCidr(_))
        ));
        assert!(matches!(
            Entry::parse("exa mple.com"),
            Err(EntryError::BadHost(_))
        ));
        assert!(matches!(
            Entry::parse("2130706433"),
            Err(EntryError::BadHost(_))
        ));
        assert!(matches!(
            Entry::parse(&"a".repeat(2000)),
            Err(EntryError::TooLong)
        ));
    }
}

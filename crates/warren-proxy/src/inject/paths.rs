//! `match_paths`: which request paths a rule applies to (LANGSMITH-API.md §13).
//!
//! A pattern is an exact path (`/v1/runs`), a prefix followed by `/*` or `/**` (`/v1/*`
//! matches any path starting with `/v1`, so `/v10` too), a suffix after `*/` (`*/runs`
//! matches any path ending with `runs`), or `*` alone for every path. A path that is not
//! canonical matches no pattern at all, so `/a/../secret` or `/a/%2e%2e/secret` can never
//! reach a path-scoped credential by being read one way by the rule and another by the server.

/// Most patterns in one rule's `match_paths`.
pub const MAX_PATHS: usize = 64;

/// One `match_paths` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    /// `*`: every (canonical) path.
    Any,
    /// An exact path.
    Exact(String),
    /// `PREFIX/*` or `PREFIX/**`: paths starting with `PREFIX`.
    Prefix(String),
    /// `*/SUFFIX`: paths ending with `SUFFIX`.
    Suffix(String),
}

impl PathPattern {
    /// Parses a pattern, or says why it is not one.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > 1024 {
            return Err("longer than 1024 characters");
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err("contains a space or a control character");
        }
        if text == "*" {
            return Ok(Self::Any);
        }
        let pattern = if let Some(suffix) = text.strip_prefix("*/") {
            Self::Suffix(suffix.to_owned())
        } else if let Some(prefix) = text.strip_suffix("/**").or_else(|| text.strip_suffix("/*")) {
            if !prefix.starts_with('/') && !prefix.is_empty() {
                return Err("a path must start with /");
            }
            Self::Prefix(prefix.to_owned())
        } else if text.starts_with('/') {
            Self::Exact(text.to_owned())
        } else {
            return Err("a path must start with / (or be *, PREFIX/*, or */SUFFIX)");
        };
        let rest = match &pattern {
            Self::Exact(s) | Self::Prefix(s) | Self::Suffix(s) => s,
            Self::Any => "",
        };
        if rest.contains('*') {
            return Err("a wildcard is allowed only as *, PREFIX/*, PREFIX/** or */SUFFIX");
        }
        Ok(pattern)
    }

    /// Whether `path` (canonical, no query) matches.
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Suffix(s) => path.ends_with(s.as_str()),
        }
    }
}

/// Whether a request path (without its query) is canonical: it starts with `/`; it has no
/// `.` or `..` segment and no empty segment (`//`); its characters are those RFC 3986 allows
/// in a path except `;` (path parameters, which some servers strip before routing: `/a/..;/b`);
/// and each percent escape is of a printable ASCII character other than `/`, `\`, `.`, `;`
/// and `%` (so no encoded separator, no double encoding, no NUL, no overlong UTF-8). Paths
/// outside this set match no pattern: a path-scoped credential fails closed for them.
pub(crate) fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let Some(decoded) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return false;
            };
            if !(0x20..0x7f).contains(&decoded) || b"/\\.;%".contains(&decoded) {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b);
        if !allowed {
            return false;
        }
        i += 1;
    }
    if rest.is_empty() {
        return true; // "/" itself
    }
    // A trailing slash is an empty last segment, which is allowed ("/v1/"): only empty
    // segments in the middle ("//") are path confusion.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Whether `path` is matched by `patterns`: an empty list matches every path, canonical or
/// not (the rule is not path-scoped); otherwise only a canonical path can match.
pub(crate) fn matches(patterns: &[PathPattern], path: &str) -> bool {
    if patterns.is_empty() {
        return true;
    }
    is_canonical(path) && patterns.iter().any(|p| p.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<PathPattern> {
        list.iter()
            .map(|p| PathPattern::parse(p).unwrap())
            .collect()
    }

    #[test]
    fn the_four_forms() {
        let exact = pats(&["/v1/runs"]);
        assert!(matches(&exact, "/v1/runs"));
        assert!(!matches(&exact, "/v1/runs/1"));
        let prefix = pats(&["/v1/*"]);
        assert!(matches(&prefix, "/v1/runs"));
        assert!(
            matches(&prefix, "/v10"),
            "documented: the prefix /v1 matches /v10"
        );
        assert!(!matches(&prefix, "/v2/runs"));
        assert_eq!(pats(&["/v1/**"]), prefix);
        let suffix = pats(&["*/runs"]);
        assert!(matches(&suffix, "/v1/runs"));
        assert!(
            matches(&suffix, "/v1/xruns"),
            "documented: ending runs matches xruns"
        );
        assert!(!matches(&suffix, "/v1/runs/2"));
        let any = pats(&["*"]);
        assert!(matches(&any, "/anything/at/all"));
        assert!(matches(&[], "/a/../b"), "an empty list is not path-scoped");
    }

    #[test]
    fn non_canonical_paths_match_nothing() {
        let all = pats(&["*", "/secret", "/a/*", "*/secret"]);
        for path in [
            "/a/../secret",
            "/a/./secret",
            "/a//secret",
            "//secret",
            "/a/%2e%2e/secret",
            "/a/%2E%2E/secret",
            "/%2e/secret",
            "/a%2fsecret",
            "/a%2Fsecret",
            "/a%5csecret",
            "/a\\secret",
            "/..",
            "/.",
            "/v1/..;/secret",
            "/v1/;x/secret",
            "/v1/%252e%252e/secret",
            "/v1/%c0%ae%c0%ae/secret",
            "/v1/%u002e%u002e/secret",
            "/v1/.%00./secret",
            "/v1/%00",
            "/v1/%3bx",
            "/v1/%zz",
            "/v1/%2",
            "/v1/\u{e9}",
            "secret",
            "",
        ] {
            assert!(!is_canonical(path), "{path} is not canonical");
            assert!(!matches(&all, path), "{path} must match nothing");
        }
        for path in [
            "/",
            "/secret",
            "/a/b/",
            "/a/b.c/d..e",
            "/a/%41",
            "/a/%20b",
            "/v1/a:b@c",
        ] {
            assert!(is_canonical(path), "{path} is canonical");
        }
    }

    #[test]
    fn bad_patterns() {
        for bad in ["v1/runs", "/v1/*/runs", "/v1*", "**", "/a b", "*/a/*"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} must be refused");
        }
    }
}

use serde_json::json;

use super::*;

fn config() -> Arc<PolicyConfig> {
    Arc::new(PolicyConfig::new())
}

fn policy(pc: Value) -> Policy {
    Policy::from_proxy_config(Some(&pc), config()).unwrap_or_else(|e| panic!("{pc}: {e}"))
}

fn dest(s: &str) -> Destination {
    Destination::from_authority(s, None).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn allowed(p: &Policy, d: &str) -> bool {
    p.decide(&dest(d)) == Decision::Allow
}

fn rule(decision: Decision) -> String {
    match decision {
        Decision::Allow => panic!("expected a refusal"),
        Decision::Deny { rule } => rule,
    }
}

#[test]
fn default_egress_allows_http_ports_only() {
    let p = Policy::from_proxy_config(None, config()).unwrap();
    assert!(allowed(&p, "example.com:443"));
    assert!(allowed(&p, "example.com:80"));
    assert!(allowed(&p, "1.1.1.1:443"));
    assert_eq!(
        rule(p.decide(&dest("example.com:22"))),
        "port 22 needs an allow_list entry naming host:22"
    );
    assert!(!allowed(&p, "1.1.1.1:5432"));
    // An empty proxy_config, or one with only rules, is the same default.
    let p = policy(json!({"rules": [], "no_proxy": ["x"]}));
    assert!(allowed(&p, "example.com:443"));
    assert!(!allowed(&p, "example.com:8443"));
}

#[test]
fn allow_list_only_lets_listed_destinations_through() {
    let p = policy(json!({"access_control": {"allow_list": [
        "api.example.com", "*.github.com", "db.example.com:5432", r"~pkg-\d+\.example\.org"
    ]}}));
    assert!(allowed(&p, "api.example.com:443"));
    assert!(allowed(&p, "api.example.com:80"));
    assert!(allowed(&p, "codeload.github.com:443"));
    assert!(allowed(&p, "pkg-12.example.org:443"));
    assert!(allowed(&p, "db.example.com:5432"));
    assert_eq!(
        rule(p.decide(&dest("example.org:443"))),
        "not in allow_list"
    );
    assert!(!allowed(&p, "github.com:443"));
    assert!(!allowed(&p, "pkg-x.example.org:443"));
    // An entry without a port covers 80 and 443 only; a named port covers only itself.
    assert_eq!(
        rule(p.decide(&dest("api.example.com:22"))),
        "not in allow_list (port 22 needs an entry naming host:22)"
    );
    assert!(!allowed(&p, "db.example.com:443"));
    assert!(!allowed(&p, "db.example.com:5433"));
    // Names only match name entries.
    assert!(!allowed(&p, "1.1.1.1:443"));
}

#[test]
fn empty_allow_list_allows_nothing() {
    let p = policy(json!({"access_control": {"allow_list": []}}));
    assert!(!allowed(&p, "example.com:443"));
    assert!(!allowed(&p, "1.1.1.1:443"));
}

#[test]
fn deny_wins() {
    let p = policy(json!({"access_control": {
        "allow_list": ["*.example.com", "1.1.1.0/24"],
        "deny_list": ["secret.example.com", "1.1.1.1", "*.internal.example.com:443"]
    }}));
    assert!(allowed(&p, "api.example.com:443"));
    assert_eq!(
        rule(p.decide(&dest("secret.example.com:443"))),
        r#"deny_list entry "secret.example.com""#
    );
    assert!(!allowed(&p, "1.1.1.1:443"));
    assert!(allowed(&p, "1.1.1.2:443"));
    // A deny entry with a port denies that port only.
    assert!(!allowed(&p, "a.internal.example.com:443"));
    assert!(allowed(&p, "a.internal.example.com:80"));
}

#[test]
fn deny_list_alone_keeps_the_default_ports() {
    let p = policy(json!({"access_control": {"deny_list": ["*.evil.com", "8.8.8.0/24:443"]}}));
    assert!(allowed(&p, "example.com:443"));
    assert!(!allowed(&p, "a.evil.com:443"));
    assert!(!allowed(&p, "A.EVIL.COM.:80"));
    assert!(!allowed(&p, "8.8.8.8:443"));
    assert!(allowed(&p, "8.8.8.8:80"));
    assert!(!allowed(&p, "example.com:22"));
}

#[test]
fn cidr_and_ip_entries_apply_to_resolved_addresses() {
    let p = policy(json!({"access_control": {
        "allow_list": ["93.184.0.0/16", "[2606:4700::1111]:853"],
        "deny_list": ["93.184.215.14"]
    }}));
    // The name is not listed, but address entries exist: resolution decides.
    let d = dest("example.com:443");
    assert_eq!(p.decide(&d), Decision::Allow);
    assert_eq!(p.decide_address(&d, ip("93.184.1.1")), Decision::Allow);
    assert_eq!(
        rule(p.decide_address(&d, ip("93.184.215.14"))),
        r#"deny_list entry "93.184.215.14""#
    );
    assert_eq!(
        rule(p.decide_address(&d, ip("1.1.1.1"))),
        "not in allow_list"
    );
    let d = dest("dns.example:853");
    assert_eq!(p.decide_address(&d, ip("2606:4700::1111")), Decision::Allow);
    assert!(!allowed(&p, "dns.example:22"));
    assert!(allowed(&p, "[2606:4700::1111]:853"));
}

#[test]
fn a_name_resolving_to_a_blocked_address_is_refused() {
    let p = policy(json!({"access_control": {"allow_list": ["rebind.example.com"]}}));
    let d = dest("rebind.example.com:443");
    assert_eq!(p.decide(&d), Decision::Allow);
    assert_eq!(
        rule(p.decide_address(&d, ip("127.0.0.1"))),
        "127.0.0.1 is a loopback address (127.0.0.0/8)"
    );
    assert!(p.decide_address(&d, ip("169.254.169.254")) != Decision::Allow);
    assert!(p.decide_address(&d, ip("::ffff:10.1.2.3")) != Decision::Allow);
    assert_eq!(p.decide_address(&d, ip("1.1.1.1")), Decision::Allow);
}

#[test]
fn blocked_addresses_are_refused_whatever_the_lists_say() {
    let p = policy(json!({"access_control": {"allow_list": [
        "0.0.0.0/0", "::/0", "0.0.0.0/0:22", "[::/0]:22", "localhost", "*"
    ]}}));
    for literal in [
        "127.0.0.1:443",
        "127.8.9.10:443",
        "[::1]:443",
        "0.0.0.0:443",
        "[::]:443",
        "169.254.169.254:80",
        "169.254.1.1:443",
        "[fd00:ec2::254]:80",
        "[fe80::1]:443",
        "10.0.0.1:443",
        "172.16.5.5:443",
        "172.31.0.1:443",
        "192.168.1.1:443",
        "[fc00::1]:443",
        "[fd12:3456::1]:443",
        "100.64.0.1:443",
        "100.100.100.100:443",
        "224.0.0.251:443",
        "255.255.255.255:443",
        "240.1.1.1:443",
        "[ff02::1]:443",
        "[::ffff:127.0.0.1]:443",
        "[::ffff:169.254.169.254]:80",
        "[::ffff:10.0.0.1]:443",
        "[::ffff:192.168.0.1]:22",
    ] {
        let d = dest(literal);
        let Decision::Deny { rule } = p.decide(&d) else {
            panic!("{literal} passed")
        };
        assert!(rule.contains(" is a "), "{literal}: {rule}");
    }
    assert!(allowed(&p, "1.1.1.1:22"));
    assert_eq!(
        rule(p.decide(&dest("localhost:443"))),
        "localhost is the host itself"
    );
    assert!(!allowed(&p, "foo.localhost:443"));
}

#[test]
fn mapped_literals_are_canonical() {
    let d = dest("[::ffff:127.0.0.1]:443");
    assert_eq!(d.host(), &Host::Ip(ip("127.0.0.1")));
    assert_eq!(d.to_string(), "127.0.0.1:443");
    assert_eq!(dest("[::1]:8080").to_string(), "[::1]:8080");
}

#[test]
fn numeric_name_tricks_are_not_destinations() {
    for host in [
        "2130706433",
        "0x7f000001",
        "127.1",
        "0177.0.0.1",
        "017700000001",
    ] {
        assert!(Destination::new(host, 443).is_err(), "{host}");
    }
}

#[test]
fn host_addresses_are_refused() {
    let cfg = Arc::new(PolicyConfig::new().with_host_addresses([ip("93.184.215.14")]));
    let p = Policy::default_egress(cfg);
    assert_eq!(
        rule(p.decide(&dest("93.184.215.14:443"))),
        "93.184.215.14 is an address of this host"
    );
    let d = dest("example.com:443");
    assert!(p.decide_address(&d, ip("::ffff:93.184.215.14")) != Decision::Allow);
}

#[test]
fn loopback_test_exemption_is_narrow() {
    let cfg = Arc::new(PolicyConfig::new().allow_loopback_for_tests(8080));
    let p = policy_with(
        &cfg,
        json!({"access_control": {"allow_list": ["upstream.test:8080"]}}),
    );
    let d = dest("upstream.test:8080");
    assert_eq!(p.decide_address(&d, ip("127.0.0.1")), Decision::Allow);
    // Other loopback addresses, other ports, other ranges and DNS answers stay refused.
    assert!(p.decide_address(&d, ip("127.0.0.2")) != Decision::Allow);
    assert!(p.decide_address(&d, ip("::1")) != Decision::Allow);
    assert!(p.decide_address(&d, ip("10.0.0.1")) != Decision::Allow);
    let d = dest("upstream.test:8081");
    assert!(p.decide_address(&d, ip("127.0.0.1")) != Decision::Allow);
    assert!(p.decide_name_address("upstream.test", ip("127.0.0.1")) != Decision::Allow);
    // The lists still apply on top of it.
    assert!(!allowed(&p, "127.0.0.1:8080"));
}

fn policy_with(cfg: &Arc<PolicyConfig>, pc: Value) -> Policy {
    Policy::from_proxy_config(Some(&pc), cfg.clone()).unwrap()
}

#[test]
fn dns_names_are_answered_when_some_port_could_pass() {
    let p = policy(json!({"access_control": {
        "allow_list": ["db.example.com:5432"],
        "deny_list": ["*.evil.com", "mail.example.com:25"]
    }}));
    assert_eq!(p.decide_name("db.example.com"), Decision::Allow);
    assert!(p.decide_name("other.example.com") != Decision::Allow);
    assert!(p.decide_name("x.evil.com") != Decision::Allow);
    assert!(p.decide_name("localhost") != Decision::Allow);
    assert_eq!(
        p.decide_name_address("db.example.com", ip("1.2.3.4")),
        Decision::Allow
    );
    assert!(p.decide_name_address("db.example.com", ip("127.0.0.1")) != Decision::Allow);
    assert!(p.decide_name_address("db.example.com", ip("169.254.169.254")) != Decision::Allow);
    let p = Policy::default_egress(config());
    assert_eq!(p.decide_name("anything.example"), Decision::Allow);
}

#[test]
fn parse_errors_name_the_bad_entry() {
    let err = Policy::from_proxy_config(
        Some(&json!({"access_control": {"allow_list": ["ok.example.com", "bad host"]}})),
        config(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PolicyError::BadEntry { list: "allow_list", entry, .. } if entry == "bad host")
    );
    assert!(err.to_string().contains("\"bad host\""), "{err}");

    let err = Policy::from_proxy_config(
        Some(&json!({"access_control": {"deny_list": ["x.com:99999"]}})),
        config(),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            PolicyError::BadEntry {
                list: "deny_list",
                ..
            }
        ),
        "{err}"
    );

    for (pc, want) in [
        (json!([]), "NotAnObject"),
        (json!({"access_control": "x"}), "BadAccessControl"),
        (json!({"access_control": {"allow": []}}), "BadAccessControl"),
        (
            json!({"access_control": {"allow_list": "x.com"}}),
            "NotAList",
        ),
        (json!({"access_control": {"deny_list": [1]}}), "NotAList"),
    ] {
        let err = Policy::from_proxy_config(Some(&pc), config()).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{pc}: {err:?}");
    }
    let many: Vec<String> = (0..=MAX_ENTRIES)
        .map(|i| format!("h{i}.example.com"))
        .collect();
    let err = Policy::from_proxy_config(
        Some(&json!({"access_control": {"allow_list": many}})),
        config(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PolicyError::TooManyEntries { list: "allow_list" }
    ));
}

#[test]
fn authorities_parse() {
    assert_eq!(dest("Example.COM:443").to_string(), "example.com:443");
    assert_eq!(
        Destination::from_authority("example.com", Some(80))
            .unwrap()
            .to_string(),
        "example.com:80"
    );
    assert!(matches!(
        Destination::from_authority("example.com", None),
        Err(DestinationError::MissingPort)
    ));
    assert!(matches!(
        Destination::from_authority("example.com:x", None),
        Err(DestinationError::BadPort)
    ));
    assert!(matches!(
        Destination::from_authority("example.com:0", None),
        Err(DestinationError::BadPort)
    ));
    assert_eq!(
        Destination::from_authority("[::1]", Some(80))
            .unwrap()
            .host(),
        &Host::Ip(ip("::1"))
    );
    assert!(Destination::from_authority("exa mple.com:80", None).is_err());
}

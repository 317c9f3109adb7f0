use super::*;
use serde_json::json;

fn secrets() -> Arc<dyn Secrets> {
    Arc::new(|key: &str| match key {
        "TOKEN" => Some(SecretValue {
            value: "s3cr3t".into(),
            hosts: vec![],
        }),
        "OPENAI" => Some(SecretValue {
            value: "sk-1".into(),
            hosts: vec!["api.openai.com".into(), "*.openai.azure.com".into()],
        }),
        _ => None,
    })
}

fn creds(rules: Value) -> Credentials {
    Credentials::from_proxy_config(Some(&json!({ "rules": rules })), secrets()).unwrap()
}

fn err(rules: Value) -> RuleError {
    Credentials::from_proxy_config(Some(&json!({ "rules": rules })), secrets()).unwrap_err()
}

fn apply(
    c: &Credentials,
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    hs: &mut HeaderMap,
) -> Result<Option<String>, InjectError> {
    let dest = Destination::new(host, port).unwrap();
    c.apply(
        RequestTarget {
            scheme,
            dest: &dest,
            path,
        },
        hs,
    )
    .map(|a| a.rule)
}

fn header_rule(extra: Value) -> Value {
    let mut rule = json!({
        "name": "api",
        "match_hosts": ["api.example.com", "*.svc.example.com"],
        "headers": [{"name": "Authorization", "type": "workspace_secret", "value": "Bearer {TOKEN}"}],
    });
    rule.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    rule
}

#[test]
fn a_matching_request_gets_the_secret_and_replaces_the_sandboxs_header() {
    let c = creds(json!([header_rule(json!({}))]));
    let mut hs = HeaderMap::new();
    hs.insert("authorization", HeaderValue::from_static("Bearer fake"));
    let rule = apply(&c, Scheme::Https, "API.example.com", 443, "/v1/x", &mut hs).unwrap();
    assert_eq!(rule.as_deref(), Some("api"));
    assert_eq!(hs.get_all("authorization").iter().count(), 1);
    assert_eq!(hs["authorization"], "Bearer s3cr3t");
    assert!(hs["authorization"].is_sensitive());
    assert!(c.intercepts(&Destination::new("a.svc.example.com", 443).unwrap()));
    assert!(!c.intercepts(&Destination::new("svc.example.com", 443).unwrap()));
    assert!(!c.intercepts(&Destination::new("pypi.org", 443).unwrap()));
    let mut other = HeaderMap::new();
    assert_eq!(
        apply(&c, Scheme::Https, "pypi.org", 443, "/", &mut other).unwrap(),
        None
    );
    assert!(other.is_empty());
    assert_eq!(c.secret_keys().iter().collect::<Vec<_>>(), ["TOKEN"]);
}

#[test]
fn port_scheme_paths_and_headers_narrow_a_rule() {
    let c = creds(json!([header_rule(json!({
        "match_port": 8443,
        "match_scheme": "https",
        "match_paths": ["/v1/*"],
        "match_headers": ["x-account: b"],
    }))]));
    let ok = |scheme, port, path: &str, acct: Option<&'static str>| {
        let mut hs = HeaderMap::new();
        if let Some(a) = acct {
            hs.insert("x-account", HeaderValue::from_static(a));
        }
        apply(&c, scheme, "api.example.com", port, path, &mut hs)
            .unwrap()
            .is_some()
    };
    assert!(ok(Scheme::Https, 8443, "/v1/runs", Some("b")));
    assert!(!ok(Scheme::Http, 8443, "/v1/runs", Some("b")), "https only");
    assert!(!ok(Scheme::Https, 443, "/v1/runs", Some("b")), "port");
    assert!(!ok(Scheme::Https, 8443, "/v2/runs", Some("b")), "path");
    assert!(
        !ok(Scheme::Https, 8443, "/v1/runs", Some("a")),
        "header value"
    );
    assert!(!ok(Scheme::Https, 8443, "/v1/runs", None), "header absent");
    assert!(
        !ok(Scheme::Https, 8443, "/v2/../v1/runs", Some("b")),
        "non-canonical"
    );
    assert!(
        !ok(Scheme::Https, 8443, "/v1/%2e%2e/secret", Some("b")),
        "encoded dots"
    );
    assert!(c.intercepts(&Destination::new("api.example.com", 8443).unwrap()));
    assert!(!c.intercepts(&Destination::new("api.example.com", 443).unwrap()));
}

#[test]
fn first_enabled_match_wins() {
    let c = creds(json!([
        {"name": "off", "enabled": false, "match_hosts": ["api.example.com"],
         "headers": [{"name": "x-k", "type": "plaintext", "value": "off"}]},
        {"name": "a", "match_hosts": ["api.example.com"], "match_paths": ["/a"],
         "headers": [{"name": "x-k", "type": "opaque", "value": "A"}]},
        {"name": "b", "match_hosts": ["api.example.com"],
         "headers": [{"name": "x-k", "type": "plaintext", "value": "B"}]},
    ]));
    for (path, want) in [("/a", "A"), ("/b", "B")] {
        let mut hs = HeaderMap::new();
        apply(&c, Scheme::Http, "api.example.com", 80, path, &mut hs).unwrap();
        assert_eq!(hs["x-k"], want);
    }
}

#[test]
fn secrets_missing_or_bound_to_other_hosts_refuse_the_request() {
    let c = creds(json!([
        {"name": "m", "match_hosts": ["missing.example.com"],
         "headers": [{"name": "x-k", "type": "workspace_secret", "value": "NOPE"}]},
        {"name": "o", "match_hosts": ["*.example.com", "api.openai.com"],
         "headers": [{"name": "authorization", "type": "workspace_secret", "value": "Bearer {OPENAI}"}]},
    ]));
    let mut hs = HeaderMap::new();
    let e = apply(&c, Scheme::Https, "missing.example.com", 443, "/", &mut hs).unwrap_err();
    assert!(matches!(e, InjectError::MissingSecret { .. }), "{e}");
    assert!(hs.is_empty());
    let e = apply(&c, Scheme::Https, "evil.example.com", 443, "/", &mut hs).unwrap_err();
    assert!(matches!(e, InjectError::HostNotAllowed { .. }), "{e}");
    assert!(!e.to_string().contains("sk-1"));
    apply(&c, Scheme::Https, "api.openai.com", 443, "/", &mut hs).unwrap();
    assert_eq!(hs["authorization"], "Bearer sk-1");
}

#[test]
fn attribution_goes_on_every_request() {
    let c = creds(json!([
        {"name": "attr", "type": "attribution", "enabled": true,
         "headers": [{"name": "X-Team", "type": "plaintext", "value": "blue"}]},
    ]));
    let mut hs = HeaderMap::new();
    assert_eq!(
        apply(&c, Scheme::Http, "pypi.org", 80, "/simple", &mut hs).unwrap(),
        None
    );
    assert_eq!(hs["x-team"], "blue");
    assert!(!c.intercepts(&Destination::new("pypi.org", 443).unwrap()));
}

#[test]
fn env_vars_of_enabled_rules() {
    let c = creds(json!([header_rule(
        json!({"env_vars": {"GH_TOKEN": "dummy"}})
    )]));
    assert_eq!(
        c.env_vars().get("GH_TOKEN").map(String::as_str),
        Some("dummy")
    );
}

#[test]
fn refusals() {
    let unsupported = [
        json!([{"name": "aws", "type": "aws", "enabled": true, "aws": {"role_arn": "arn:aws:iam::1:role/x"}}]),
        json!([{"name": "g", "gcp": {"service_account_json": {"type": "plaintext", "value": "{}"}}}]),
        json!([{"name": "r", "match_hosts": ["a.com"], "rewrite": {"port": 1}}]),
        json!([{"name": "r", "type": "relay", "match_hosts": ["a.com"]}]),
    ];
    for rules in unsupported {
        assert!(
            matches!(err(rules.clone()), RuleError::Unsupported(_)),
            "{rules}"
        );
    }
    let callback =
        |cb: Value| Credentials::from_proxy_config(Some(&json!({"callbacks": [cb]})), secrets());
    for bad in [
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 1}),
        json!({"url": "http://cb.example.com/x", "ttl_seconds": 1, "match_hosts": ["a.com"]}),
        json!({"url": "https://u:p@cb.example.com/x", "ttl_seconds": 1, "match_hosts": ["a.com"]}),
        json!({"url": "https://cb.example.com/x", "match_hosts": ["a.com"]}),
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 86401, "match_hosts": ["a.com"]}),
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 1, "match_hosts": ["a.com"], "attribution_headers": ["X-A"]}),
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 1, "attribution_headers": ["X-A"], "full_request": true}),
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 1, "attribution_headers": ["Host"]}),
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 1, "match_hosts": ["a.com:443"]}),
    ] {
        assert!(
            matches!(callback(bad.clone()), Err(RuleError::Invalid(_))),
            "{bad}"
        );
    }
    let ok = callback(
        json!({"url": "https://cb.example.com/x", "ttl_seconds": 60, "match_hosts": ["*.a.com"],
        "request_headers": [{"name": "X-Auth", "type": "workspace_secret", "value": "TOKEN"}]}),
    )
    .unwrap();
    assert!(ok.intercepts(&Destination::new("api.a.com", 443).unwrap()));
    assert!(!ok.intercepts(&Destination::new("a.com", 443).unwrap()));
    assert_eq!(ok.secret_keys().iter().collect::<Vec<_>>(), ["TOKEN"]);
    let invalid = [
        json!([{"match_hosts": ["a.com"], "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com:443"], "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": []}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": [{"name": "Host", "value": "b"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": [{"name": "x", "value": "a\r\nb: c"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": [{"name": "x", "type": "workspace_secret", "value": "{A"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": [{"name": "x", "type": "secret", "value": "A"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "match_scheme": "http", "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "match_port": 0, "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "match_paths": ["/a/*/b"], "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "match_headers": ["X-A: b"], "headers": [{"name": "x", "value": "1"}]}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": [{"name": "x", "type": "opaque", "is_set": true}]}]),
        json!([{"name": "a", "type": "attribution", "headers": [{"name": "Team", "type": "plaintext", "value": "1"}]}]),
        json!([{"name": "a", "type": "attribution", "match_hosts": ["a.com"], "headers": []}]),
        json!([{"name": "a", "type": "attribution", "headers": []}, {"name": "b", "type": "attribution", "headers": []}]),
        json!([{"name": "n", "match_hosts": ["a.com"], "headers": [{"name": "x", "value": "1"}]},
               {"name": "n", "match_hosts": ["b.com"], "headers": [{"name": "x", "value": "1"}]}]),
    ];
    for rules in invalid {
        assert!(
            matches!(err(rules.clone()), RuleError::Invalid(_)),
            "{rules}"
        );
    }
}

#[test]
fn debug_output_shows_no_values() {
    let c = creds(json!([{"name": "n", "match_hosts": ["a.com"],
        "headers": [{"name": "x", "type": "opaque", "value": "hunter2"}]}]));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn secret_host_patterns() {
    let name = |n: &str| Host::Name(n.into());
    assert!(host_pattern_matches(
        "*.example.com",
        &name("a.example.com")
    ));
    assert!(!host_pattern_matches("*.example.com", &name("example.com")));
    assert!(!host_pattern_matches(
        "*.example.com",
        &name("aexample.com")
    ));
    assert!(host_pattern_matches(
        "API.example.com",
        &name("api.example.com")
    ));
    assert!(host_pattern_matches(
        "198.51.100.2",
        &Host::Ip("198.51.100.2".parse().unwrap())
    ));
}

#[test]
fn aws_rules_cover_aws_hosts_and_sign_over_https_only() {
    let c = creds(
        json!([{"name": "aws", "type": "aws", "enabled": true, "aws": {
            "access_key_id": {"type": "plaintext", "value": "AKIDREAL"},
            "secret_access_key": {"type": "workspace_secret", "value": "TOKEN"},
        }}]),
    );
    assert!(c.intercepts(&Destination::new("s3.us-west-2.amazonaws.com", 443).unwrap()));
    assert!(!c.intercepts(&Destination::new("example.com", 443).unwrap()));
    assert_eq!(c.secret_keys().iter().collect::<Vec<_>>(), ["TOKEN"]);
    let dest = Destination::new("sqs.eu-west-1.amazonaws.com", 443).unwrap();
    let target = RequestTarget {
        scheme: Scheme::Https,
        dest: &dest,
        path: "/",
    };
    let applied = c.apply(target, &mut HeaderMap::new()).unwrap();
    let aws = applied.aws.expect("an aws rule signs");
    assert_eq!(aws.rule(), "aws");
    assert_eq!(
        (aws.access_key_id.as_str(), aws.secret_access_key.as_str()),
        ("AKIDREAL", "s3cr3t")
    );
    let plain = RequestTarget {
        scheme: Scheme::Http,
        ..target
    };
    assert!(matches!(
        c.apply(plain, &mut HeaderMap::new()),
        Err(InjectError::NotHttps { .. })
    ));
    // match_hosts narrows (or names an S3-compatible host instead).
    let minio = creds(json!([{"name": "minio", "aws": {
        "access_key_id": {"type": "plaintext", "value": "A"},
        "secret_access_key": {"type": "opaque", "value": "B"},
    }, "match_hosts": ["minio.example.com"]}]));
    assert!(minio.intercepts(&Destination::new("minio.example.com", 443).unwrap()));
    assert!(!minio.intercepts(&Destination::new("s3.amazonaws.com", 443).unwrap()));
    for bad in [
        json!([{"name": "a", "aws": {"access_key_id": {"type": "plaintext", "value": "A"}}}]),
        json!([{"name": "a", "match_paths": ["/x"], "aws": {
            "access_key_id": {"type": "plaintext", "value": "A"},
            "secret_access_key": {"type": "plaintext", "value": "B"}}}]),
        json!([{"name": "a", "type": "header", "aws": {}}]),
    ] {
        assert!(matches!(err(bad.clone()), RuleError::Invalid(_)), "{bad}");
    }
}

//! The credential values inside a stored `proxy_config` (LANGSMITH-API.md §2.7): what the API
//! shows of them, what an update keeps of them, and the environment their rules set.
//!
//! A value holder is any object `{"type": "plaintext" | "opaque" | "workspace_secret",
//! "value": ...}` (rule headers, provider blocks, callback headers). `opaque` values are kept
//! server-side and never shown; `plaintext` values and `workspace_secret` names are not
//! secrets and are shown. Every holder is shown with `is_set`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

const HOLDER_TYPES: [&str; 3] = ["plaintext", "opaque", "workspace_secret"];

fn is_holder(obj: &Map<String, Value>) -> bool {
    obj.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| HOLDER_TYPES.contains(&t))
}

fn is_opaque(obj: &Map<String, Value>) -> bool {
    obj.get("type").and_then(Value::as_str) == Some("opaque")
}

/// A `proxy_config` or `mount_config` (both keep credentials in the same value holders) as
/// the API shows it: opaque values removed, every value holder with `is_set`.
pub fn redact_credentials(pc: &Value) -> Value {
    let mut out = pc.clone();
    walk_mut(&mut out, &mut |obj| {
        if is_holder(obj) {
            let set = obj.get("value").is_some_and(|v| !v.is_null());
            if is_opaque(obj) {
                obj.remove("value");
            }
            obj.insert("is_set".into(), Value::Bool(set));
        }
    });
    out
}

/// Fills the opaque values an update leaves out (`is_set` without `value`, as the API shows
/// them) from the stored `proxy_config`: the same rule (by name), the same place in it.
pub fn carry_over_opaque(new: &mut Value, old: Option<&Value>) {
    let Some(old) = old else { return };
    let mut kept = HashMap::new();
    collect(old, String::new(), &mut kept);
    fill(new, String::new(), &kept);
}

/// A path segment for an array element: its `name` when it has one (rules, headers), so a
/// reordered list still finds the same element, with the element's `match_*` fields, so a
/// rule whose hosts, port, scheme, paths or headers changed does not inherit a value meant
/// for the old ones; its index otherwise. JSON-encoded, so no name can alias another path.
fn segment(i: usize, item: &Value) -> String {
    match item.get("name").and_then(Value::as_str) {
        Some(name) => {
            let scope: Map<String, Value> = item
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("match_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            format!("[{}{}]", Value::from(name), Value::Object(scope))
        }
        None => format!("[{i}]"),
    }
}

fn key(path: &str, k: &str) -> String {
    format!("{path}.{}", Value::from(k))
}

fn collect(v: &Value, path: String, out: &mut HashMap<String, Value>) {
    match v {
        Value::Object(obj) => {
            if is_opaque(obj)
                && let Some(value) = obj.get("value").filter(|v| !v.is_null())
            {
                out.insert(path.clone(), value.clone());
            }
            for (k, child) in obj {
                collect(child, key(&path, k), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, format!("{path}{}", segment(i, item)), out);
            }
        }
        _ => {}
    }
}

fn fill(v: &mut Value, path: String, kept: &HashMap<String, Value>) {
    match v {
        Value::Object(obj) => {
            if is_opaque(obj) && obj.get("value").is_none_or(Value::is_null) {
                if let Some(value) = kept.get(&path) {
                    obj.insert("value".into(), value.clone());
                }
                obj.remove("is_set");
            }
            for (k, child) in obj.iter_mut() {
                fill(child, key(&path, k), kept);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let seg = segment(i, item);
                fill(item, format!("{path}{seg}"), kept);
            }
        }
        _ => {}
    }
}

/// Whether a stored config (`proxy_config`, `mount_config`: both hold credentials in the same
/// value holders) holds a literal credential: an opaque value that is set (plaintext values
/// and workspace secret names are not secrets).
pub(crate) fn holds_opaque_values(pc: &Value) -> bool {
    match pc {
        Value::Object(obj) if is_holder(obj) => {
            is_opaque(obj) && obj.get("value").is_some_and(|v| !v.is_null())
        }
        Value::Object(obj) => obj.values().any(holds_opaque_values),
        Value::Array(items) => items.iter().any(holds_opaque_values),
        _ => false,
    }
}

fn walk_mut(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(obj) => {
            f(obj);
            for child in obj.values_mut() {
                walk_mut(child, f);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk_mut(i, f)),
        _ => {}
    }
}

/// The environment the enabled rules of `proxy_config` set in the sandbox (below the
/// sandbox's own `run_config`, which wins).
pub fn rule_env_vars(pc: Option<&Value>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let rules = pc
        .and_then(|pc| pc.get("rules"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for rule in rules {
        if rule.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        if let Some(vars) = rule.get("env_vars").and_then(Value::as_object) {
            for (k, v) in vars {
                if let Some(v) = v.as_str() {
                    env.insert(k.clone(), v.to_owned());
                }
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Value {
        json!({"rules": [
            {"name": "a", "match_hosts": ["a.com"], "headers": [
                {"name": "x-key", "type": "opaque", "value": "hunter2"},
                {"name": "x-team", "type": "plaintext", "value": "blue"},
                {"name": "authorization", "type": "workspace_secret", "value": "Bearer {TOKEN}"},
            ]},
            {"name": "b", "match_hosts": ["b.com"], "headers": [
                {"name": "x-key", "type": "opaque", "value": "b-secret"},
            ]},
        ]})
    }

    #[test]
    fn opaque_values_are_never_shown() {
        let shown = redact_credentials(&config());
        assert!(!shown.to_string().contains("hunter2"));
        assert!(!shown.to_string().contains("b-secret"));
        let h = &shown["rules"][0]["headers"];
        assert_eq!(
            h[0],
            json!({"name": "x-key", "type": "opaque", "is_set": true})
        );
        assert_eq!(h[1]["value"], "blue");
        assert_eq!(h[1]["is_set"], true);
        assert_eq!(h[2]["value"], "Bearer {TOKEN}");
    }

    #[test]
    fn an_update_keeps_the_opaque_values_it_leaves_out() {
        let old = config();
        // What a client sends back after reading the redacted config, with rules reordered
        // and one value replaced.
        let mut shown = redact_credentials(&old);
        let rules = shown["rules"].as_array_mut().unwrap();
        rules.reverse();
        rules[1]["headers"][1]["value"] = json!("green");
        let mut new = shown;
        carry_over_opaque(&mut new, Some(&old));
        assert_eq!(new["rules"][1]["headers"][0]["value"], "hunter2");
        assert_eq!(new["rules"][0]["headers"][0]["value"], "b-secret");
        assert_eq!(new["rules"][1]["headers"][1]["value"], "green");
        assert!(new["rules"][1]["headers"][0].get("is_set").is_none());
        // A new value wins; an unknown place stays without one (and is refused later).
        let mut fresh = json!({"rules": [{"name": "c", "headers": [
            {"name": "x-key", "type": "opaque", "is_set": true}]}]});
        carry_over_opaque(&mut fresh, Some(&old));
        assert!(fresh["rules"][0]["headers"][0].get("value").is_none());
    }

    #[test]
    fn a_value_never_follows_its_rule_to_other_hosts_or_paths() {
        let old = config();
        for change in [
            json!({"match_hosts": ["attacker.example"]}),
            json!({"match_port": 8080}),
            json!({"match_paths": ["/other/*"]}),
            json!({"match_headers": ["x-a: b"]}),
        ] {
            let mut new = redact_credentials(&old);
            let rule = new["rules"][0].as_object_mut().unwrap();
            rule.extend(change.as_object().unwrap().clone());
            carry_over_opaque(&mut new, Some(&old));
            assert!(
                new["rules"][0]["headers"][0].get("value").is_none(),
                "{change}: {new}"
            );
        }
        // A name that looks like a path finds nothing either.
        let mut odd =
            json!({"rules[name=a]": {"headers[name=x-key]": {"type": "opaque", "is_set": true}}});
        carry_over_opaque(&mut odd, Some(&old));
        assert!(!odd.to_string().contains("hunter2"));
    }

    #[test]
    fn env_vars_of_enabled_rules() {
        let pc = json!({"rules": [
            {"name": "a", "env_vars": {"GH_TOKEN": "dummy"}},
            {"name": "b", "enabled": false, "env_vars": {"OFF": "1"}},
        ]});
        let env = rule_env_vars(Some(&pc));
        assert_eq!(env.len(), 1);
        assert_eq!(env["GH_TOKEN"], "dummy");
    }
}

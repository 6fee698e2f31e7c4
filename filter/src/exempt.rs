//! `exempt_paths`: request paths that skip the check (health checks, well-known documents).
//!
//! A rule is an exact path (`/healthz`) or, with a trailing `*`, a prefix (`/.well-known/*`).
//! Matching looks at the path without its query string, byte for byte. A path that is not in
//! normal form (dot segments, `//`, percent-encoding, `\` or `;`) is never exempt: an upstream might
//! resolve it to another path than the one that matched, so such a request is checked.

use serde::{de, Deserialize, Deserializer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRule {
    Exact(String),
    Prefix(String),
}

impl<'de> Deserialize<'de> for PathRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let rule = match text.strip_suffix('*') {
            Some(prefix) => PathRule::Prefix(prefix.to_string()),
            None => PathRule::Exact(text.clone()),
        };
        let pattern = match &rule {
            PathRule::Exact(path) | PathRule::Prefix(path) => path,
        };
        if !pattern.starts_with('/') || pattern.contains('*') || !is_normal(pattern.as_bytes()) {
            return Err(de::Error::custom(format!(
                "{text:?} is not a path rule: use an exact path such as \"/healthz\" or a prefix \
                 such as \"/.well-known/*\" (normal form, no query string)"
            )));
        }
        Ok(rule)
    }
}

/// Whether a request's `:path` matches one of the rules.
pub fn is_exempt(rules: &[PathRule], path: &[u8]) -> bool {
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if !is_normal(path) {
        return false;
    }
    rules.iter().any(|rule| match rule {
        PathRule::Exact(exact) => path == exact.as_bytes(),
        PathRule::Prefix(prefix) => path.starts_with(prefix.as_bytes()),
    })
}

fn is_normal(path: &[u8]) -> bool {
    path.first() == Some(&b'/')
        && !path
            .iter()
            .any(|&b| matches!(b, b'%' | b'\\' | b';' | b'#' | b'?'))
        && !path.windows(2).any(|pair| pair == b"//")
        && !path
            .split(|&b| b == b'/')
            .any(|segment| segment == b"." || segment == b"..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<PathRule> {
        serde_json::from_value(serde_json::json!(list)).unwrap()
    }

    #[test]
    fn exact_and_prefix_rules() {
        let rules = rules(&["/healthz", "/.well-known/*"]);
        let table: &[(&str, bool)] = &[
            ("/healthz", true),
            ("/healthz?probe=1", true),
            ("/healthz/", false),
            ("/healthzz", false),
            ("/api/healthz", false),
            ("/.well-known/openid-configuration", true),
            ("/.well-known/", true),
            ("/.well-known", false),
            // Not in normal form: an upstream might resolve these elsewhere, so they are checked.
            ("/healthz/../admin", false),
            ("/.well-known/../admin", false),
            ("/.well-known/./x", false),
            ("/.well-known//x", false),
            ("/.well-known/%2e%2e/admin", false),
            ("/healthz;/../admin", false),
            ("/.well-known\\..\\admin", false),
            ("", false),
            ("*", false),
        ];
        for (path, expected) in table {
            assert_eq!(is_exempt(&rules, path.as_bytes()), *expected, "{path}");
        }
        assert!(!is_exempt(&[], b"/healthz"));
    }

    #[test]
    fn refuses_rules_that_are_not_paths() {
        for bad in ["healthz", "", "*", "/a*b*", "/a/../b*", "/x?y", "/a//b"] {
            let result: Result<PathRule, _> = serde_json::from_value(serde_json::json!(bad));
            assert!(result.is_err(), "{bad}");
        }
    }
}

//! The plugin configuration: JSON from the Envoy wasm plugin's `configuration` field, parsed once
//! at configure time into a typed, validated [`Config`].

use serde::{de, Deserialize, Deserializer};

use crate::confirmation::CnfEncoding;
use crate::exempt::PathRule;

/// Enforce denies; audit lets every request through and logs what it would have denied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// The validated configuration. Every field has a default, so an empty configuration is valid.
/// Values are validated while they are deserialised, so an error names its key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Deny requests that carry no token, or a token without `cnf.x5t#S256`.
    pub require_bound_token: bool,
    pub cnf_encoding: CnfEncoding,
    /// In audit mode, the request header that tells the upstream what would have been denied.
    /// `None` (configured as `""`) sends none.
    #[serde(deserialize_with = "optional_header_name")]
    pub audit_header: Option<String>,
    /// Paths that skip the check.
    pub exempt_paths: Vec<PathRule>,
    /// On a pass with a matching binding, this request header carries the thumbprint upstream.
    #[serde(deserialize_with = "optional_header_name")]
    pub forward_thumbprint_header: Option<String>,
    /// Publish the verdict and thumbprint as filter state for access logs.
    pub filter_state: bool,
    /// Read per-route overrides from the route's metadata (`filter_metadata.certbound`).
    pub route_overrides: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            require_bound_token: false,
            cnf_encoding: CnfEncoding::Auto,
            audit_header: Some(DEFAULT_AUDIT_HEADER.to_string()),
            exempt_paths: Vec::new(),
            forward_thumbprint_header: None,
            filter_state: false,
            route_overrides: false,
        }
    }
}

pub const DEFAULT_AUDIT_HEADER: &str = "x-certbound-audit";

/// A request header name: lower case (HTTP/2 requires it) and an RFC 9110 token. `""` means none.
fn optional_header_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() {
        return Ok(None);
    }
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(Some(name))
    } else {
        Err(de::Error::custom(format!(
            "{name:?} is not a lower-case HTTP header name"
        )))
    }
}

/// Why a configuration was refused. The message names the key and the offending value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Parses the plugin configuration. Absent or blank means all defaults.
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let trimmed = json.trim_ascii();
        if trimmed.is_empty() {
            return Ok(Self::default());
        }
        if trimmed.first() != Some(&b'{') {
            return Err(ConfigError(
                "the configuration must be a JSON object, e.g. {\"mode\": \"audit\"}".into(),
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(trimmed);
        let config: Config = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ConfigError(inner.to_string())
            } else {
                ConfigError(format!("`{path}`: {inner}"))
            }
        })?;
        deserializer.end().map_err(|e| ConfigError(e.to_string()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        for json in ["", "  \n", "{}"] {
            assert_eq!(Config::parse(json.as_bytes()), Ok(Config::default()));
        }
        let c = Config::default();
        assert_eq!(c.mode, Mode::Enforce);
        assert!(!c.require_bound_token);
        assert_eq!(c.cnf_encoding, CnfEncoding::Auto);
    }

    #[test]
    fn every_key_parses() {
        let c =
            Config::parse(br#"{"mode":"audit","require_bound_token":true,"cnf_encoding":"hex"}"#)
                .unwrap();
        assert_eq!(c.mode, Mode::Audit);
        assert!(c.require_bound_token);
        assert_eq!(c.cnf_encoding, CnfEncoding::Hex);
        assert_eq!(c.audit_header.as_deref(), Some(DEFAULT_AUDIT_HEADER));
        let c = Config::parse(
            br#"{"audit_header":"","exempt_paths":["/healthz","/.well-known/*"],
                "forward_thumbprint_header":"x-client-cert-thumbprint","filter_state":true}"#,
        )
        .unwrap();
        assert_eq!(c.audit_header, None);
        assert_eq!(c.exempt_paths.len(), 2);
        assert_eq!(
            c.forward_thumbprint_header.as_deref(),
            Some("x-client-cert-thumbprint")
        );
        assert!(c.filter_state);
        let c = Config::parse(br#"{"cnf_encoding":"base64url"}"#).unwrap();
        assert_eq!(c.cnf_encoding, CnfEncoding::Base64url);
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let table = [
            (r#"{"mode":"enforced"}"#, ["mode", "enforced"]),
            (
                r#"{"require_bound_token":"yes"}"#,
                ["require_bound_token", "yes"],
            ),
            (r#"{"cnf_encoding":"base64"}"#, ["cnf_encoding", "base64"]),
            (
                r#"{"requre_bound_token":true}"#,
                ["requre_bound_token", "unknown field"],
            ),
            (r#"{"mode":"audit","mode":"audit"}"#, ["mode", "duplicate"]),
            (r#"{"audit_header":"X-Audit"}"#, ["audit_header", "X-Audit"]),
            (
                r#"{"forward_thumbprint_header":"a b"}"#,
                ["forward_thumbprint_header", "a b"],
            ),
            (
                r#"{"exempt_paths":["/ok","health"]}"#,
                ["exempt_paths[1]", "health"],
            ),
            (
                r#"{"exempt_paths":"/healthz"}"#,
                ["exempt_paths", "/healthz"],
            ),
        ];
        for (json, needles) in table {
            let message = Config::parse(json.as_bytes()).unwrap_err().0;
            for needle in needles {
                assert!(message.contains(needle), "{json}: {message}");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for json in [
            "[]",
            r#"["audit"]"#,
            "true",
            "{",
            r#"{"mode":"audit"} {}"#,
            "{}}",
        ] {
            assert!(Config::parse(json.as_bytes()).is_err(), "{json}");
        }
    }
}

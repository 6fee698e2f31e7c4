//! The plugin configuration: JSON from the Envoy wasm plugin's `configuration` field, parsed once
//! at configure time into a typed, validated [`Config`].

use serde::Deserialize;

use crate::confirmation::CnfEncoding;

/// Enforce denies; audit lets every request through and logs what it would have denied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// The validated configuration. Every field has a default, so an empty configuration is valid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Deny requests that carry no token, or a token without `cnf.x5t#S256`.
    pub require_bound_token: bool,
    pub cnf_encoding: CnfEncoding,
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
        assert_eq!(
            c,
            Config {
                mode: Mode::Audit,
                require_bound_token: true,
                cnf_encoding: CnfEncoding::Hex
            }
        );
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

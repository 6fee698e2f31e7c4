//! The plugin configuration: JSON from the Envoy wasm plugin's `configuration` field, parsed once
//! at configure time into a typed, validated [`Config`].

use serde::{de, Deserialize, Deserializer};

use crate::ca::{self, CaBundle};
use crate::certificate::{HeaderFormat, MAX_HEADER_LEN};
use crate::confirmation::CnfEncoding;
use crate::exempt::PathRule;
use crate::introspection::{self, Introspection};
use crate::trust::{TrustedProxies, TrustedProxiesConfig};
use crate::xfcc::XfccElement;

/// Enforce denies; audit lets every request through and logs what it would have denied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// Where the token's claims come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsSource {
    /// Decode the payload of the token in the Authorization header.
    #[default]
    Header,
    /// Read the payload that Envoy's jwt_authn filter verified and stored in dynamic metadata
    /// (`payload_in_metadata`), so certbound judges exactly the claims whose signature was checked.
    JwtAuthn,
}

/// The validated configuration. Every field has a default, so an empty configuration is valid.
/// Values are validated while they are deserialised, so an error names its key.
#[derive(Clone, Debug, Deserialize)]
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
    pub claims_source: ClaimsSource,
    /// The `payload_in_metadata` name of the jwt_authn provider, with `claims_source: jwt_authn`.
    #[serde(deserialize_with = "optional_nonempty")]
    pub jwt_authn_payload_key: Option<String>,
    /// Longest bearer token judged; a longer one is denied before it is decoded.
    #[serde(deserialize_with = "size_limit")]
    pub max_token_bytes: usize,

    /// The request header in which a trusted TLS-terminating proxy forwards the client
    /// certificate. `None`: only the connection's own certificate counts.
    #[serde(deserialize_with = "optional_header_name")]
    pub certificate_header: Option<String>,
    pub certificate_header_format: HeaderFormat,
    /// Who may supply `certificate_header`.
    #[serde(deserialize_with = "trusted_proxies")]
    pub trusted_proxies: TrustedProxies,
    pub xfcc_element: XfccElement,
    /// Remove `certificate_header` before the request goes upstream. A header from a source
    /// that is not a trusted proxy is removed regardless.
    pub strip_certificate_header: bool,
    /// When set, a forwarded certificate must be issued by one of these CAs and valid now.
    #[serde(deserialize_with = "ca_bundle")]
    pub forwarded_certificate_ca: Option<CaBundle>,
    /// Longest `certificate_header` value read; a longer one is denied before it is decoded.
    #[serde(deserialize_with = "size_limit")]
    pub max_certificate_header_bytes: usize,

    /// RFC 7662 introspection of tokens certbound cannot read (opaque ones). `None`: no calls.
    #[serde(deserialize_with = "introspection::deserialize")]
    pub introspection: Option<Introspection>,
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
            claims_source: ClaimsSource::Header,
            jwt_authn_payload_key: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            certificate_header: None,
            certificate_header_format: HeaderFormat::Auto,
            trusted_proxies: TrustedProxies::default(),
            xfcc_element: XfccElement::Last,
            strip_certificate_header: true,
            forwarded_certificate_ca: None,
            max_certificate_header_bytes: DEFAULT_MAX_CERTIFICATE_HEADER_BYTES,
            introspection: None,
        }
    }
}

pub const DEFAULT_AUDIT_HEADER: &str = "x-certbound-audit";

/// Request headers certbound reads to judge a request.
const READ_HEADERS: [&str; 2] = ["authorization", "content-type"];
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_CERTIFICATE_HEADER_BYTES: usize = 32 * 1024;

/// A size limit in bytes: at least 1, at most the hard cap certbound never reads past.
fn size_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let limit = i64::deserialize(d)?;
    match usize::try_from(limit) {
        Ok(limit) if (1..=MAX_HEADER_LEN).contains(&limit) => Ok(limit),
        _ => Err(de::Error::custom(format!(
            "{limit} is not between 1 and {MAX_HEADER_LEN}"
        ))),
    }
}

fn optional_nonempty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(Some(text))
}

fn trusted_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<TrustedProxies, D::Error> {
    TrustedProxies::try_from(TrustedProxiesConfig::deserialize(d)?).map_err(de::Error::custom)
}

fn ca_bundle<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CaBundle>, D::Error> {
    let pem = String::deserialize(d)?;
    ca::parse_bundle(&pem).map(Some).map_err(de::Error::custom)
}

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
    /// Keys that only mean something together. A certificate header nobody may send would
    /// silently do nothing; trust with no header to apply it to is a misunderstanding.
    fn check_forwarding(&self) -> Result<(), ConfigError> {
        let refuse = |message: &str| Err(ConfigError(message.to_string()));
        match &self.certificate_header {
            Some(_) if self.trusted_proxies.trusts_nobody() => refuse(
                "`certificate_header` is set but `trusted_proxies` trusts no one: list the \
                 proxies' `cidrs` or `peer_identities`, or set `any: true` if only the proxy can \
                 reach Envoy",
            ),
            None if !self.trusted_proxies.trusts_nobody() => {
                refuse("`trusted_proxies` is set without `certificate_header`")
            }
            None if self.forwarded_certificate_ca.is_some() => {
                refuse("`forwarded_certificate_ca` is set without `certificate_header`")
            }
            _ => Ok(()),
        }
    }

    /// Headers certbound writes replace or remove the client's copies, so one of them named like
    /// a header certbound reads would erase what it is about to judge.
    fn check_header_names(&self) -> Result<(), ConfigError> {
        let named = [
            ("certificate_header", self.certificate_header.as_deref()),
            (
                "forward_thumbprint_header",
                self.forward_thumbprint_header.as_deref(),
            ),
            ("audit_header", self.audit_header.as_deref()),
        ];
        let named: Vec<(&str, &str)> = named
            .into_iter()
            .filter_map(|(key, name)| Some((key, name?)))
            .collect();
        for (position, (key, name)) in named.iter().enumerate() {
            if READ_HEADERS.contains(name) {
                return Err(ConfigError(format!(
                    "`{key}`: {name:?} is a header certbound reads; choose another name"
                )));
            }
            if let Some((other, _)) = named.iter().skip(position + 1).find(|(_, n)| n == name) {
                return Err(ConfigError(format!(
                    "`{key}` and `{other}` are both {name:?}; they must differ"
                )));
            }
        }
        Ok(())
    }

    fn check_claims_source(&self) -> Result<(), ConfigError> {
        match (self.claims_source, &self.jwt_authn_payload_key) {
            (ClaimsSource::JwtAuthn, None) => Err(ConfigError(
                "`claims_source` is \"jwt_authn\" but `jwt_authn_payload_key` is not set: give the \
                 provider's `payload_in_metadata` name"
                    .into(),
            )),
            (ClaimsSource::Header, Some(_)) => Err(ConfigError(
                "`jwt_authn_payload_key` is set but `claims_source` is not \"jwt_authn\"".into(),
            )),
            (ClaimsSource::JwtAuthn, _) if self.introspection.is_some() => Err(ConfigError(
                "`introspection` is set but `claims_source` is \"jwt_authn\": introspection \
                 judges the token in the Authorization header (claims_source \"header\")"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

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
        config.check_forwarding()?;
        config.check_claims_source()?;
        config.check_header_names()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        for json in ["", "  \n", "{}"] {
            let config = Config::parse(json.as_bytes()).unwrap();
            assert_eq!(config.mode, Mode::Enforce);
            assert_eq!(config.certificate_header, None);
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
            (r#"{"max_token_bytes":0}"#, ["max_token_bytes", "0"]),
            (r#"{"claims_source":"jwt"}"#, ["claims_source", "jwt"]),
            (
                r#"{"forward_thumbprint_header":"authorization"}"#,
                ["forward_thumbprint_header", "reads"],
            ),
            (
                r#"{"audit_header":"authorization"}"#,
                ["audit_header", "authorization"],
            ),
            (
                r#"{"certificate_header":"authorization","trusted_proxies":{"any":true}}"#,
                ["certificate_header", "authorization"],
            ),
            (
                r#"{"certificate_header":"x-c","trusted_proxies":{"any":true},"forward_thumbprint_header":"x-c"}"#,
                ["certificate_header", "forward_thumbprint_header"],
            ),
            (
                r#"{"audit_header":"x-t","forward_thumbprint_header":"x-t"}"#,
                ["forward_thumbprint_header", "audit_header"],
            ),
            (
                r#"{"claims_source":"jwt_authn"}"#,
                ["jwt_authn_payload_key", "not set"],
            ),
            (
                r#"{"jwt_authn_payload_key":"p"}"#,
                ["jwt_authn_payload_key", "claims_source"],
            ),
            (
                r#"{"claims_source":"jwt_authn","jwt_authn_payload_key":""}"#,
                ["jwt_authn_payload_key", "empty"],
            ),
            (r#"{"max_token_bytes":-1}"#, ["max_token_bytes", "-1"]),
            (
                r#"{"certificate_header":"x-client-cert"}"#,
                ["trusted_proxies", "trusts no one"],
            ),
            (
                r#"{"certificate_header":"x-client-cert","trusted_proxies":{"cidrs":["10.0.0.300/8"]}}"#,
                ["trusted_proxies.cidrs", "10.0.0.300/8"],
            ),
            (
                r#"{"certificate_header":"x","trusted_proxies":{"any":true,"anyone":true}}"#,
                ["trusted_proxies", "anyone"],
            ),
            (
                r#"{"trusted_proxies":{"any":true}}"#,
                ["trusted_proxies", "certificate_header"],
            ),
            (
                r#"{"certificate_header":"x","trusted_proxies":{"any":true},"certificate_header_format":"der"}"#,
                ["certificate_header_format", "der"],
            ),
            (
                r#"{"certificate_header":"x","trusted_proxies":{"any":true},"xfcc_element":"middle"}"#,
                ["xfcc_element", "middle"],
            ),
            (
                r#"{"certificate_header":"x","trusted_proxies":{"any":true},"forwarded_certificate_ca":"no pem"}"#,
                ["forwarded_certificate_ca", "CERTIFICATE"],
            ),
            (r#"{"introspection":{}}"#, ["introspection", "cluster"]),
            (
                r#"{"introspection":{"cluster":"as","timeout_ms":0}}"#,
                ["introspection.timeout_ms", "0"],
            ),
            (
                r#"{"introspection":{"cluster":"as","on_error_status":500}}"#,
                ["introspection.on_error_status", "500"],
            ),
            (
                r#"{"introspection":{"cluster":"as","client_id":"gw"}}"#,
                ["introspection", "client_secret"],
            ),
            (
                r#"{"introspection":{"cluster":"as","clientid":"gw"}}"#,
                ["introspection", "clientid"],
            ),
            (
                r#"{"claims_source":"jwt_authn","jwt_authn_payload_key":"p","introspection":{"cluster":"as"}}"#,
                ["introspection", "jwt_authn"],
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
    fn introspection_parses_and_never_echoes_a_secret() {
        let c = Config::parse(
            br#"{"introspection":{"cluster":"as","client_id":"gw","client_secret":"hunter2"}}"#,
        )
        .unwrap();
        let introspection = c.introspection.unwrap();
        assert_eq!(introspection.cluster, "as");
        assert!(!format!("{introspection:?}").contains("hunter2"));
        let json =
            br#"{"introspection":{"cluster":"as","client_id":"gw","client_secret":77665544}}"#;
        let message = Config::parse(json).unwrap_err().0;
        assert!(message.contains("introspection.client_secret"), "{message}");
        assert!(!message.contains("77665544"), "{message}");
        let json = br#"{"introspection":{"cluster":"as","bearer_token":"77665544 5"}}"#;
        let message = Config::parse(json).unwrap_err().0;
        assert!(message.contains("introspection.bearer_token"), "{message}");
        assert!(!message.contains("77665544"), "{message}");
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

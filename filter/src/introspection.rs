//! RFC 7662 token introspection for tokens certbound cannot read itself (opaque ones): the
//! `introspection` configuration, the request sent to the authorization server, the reading of
//! its answer (`active`, `exp`, `cnf.x5t#S256` per RFC 8705 §3.2), and the per-VM cache of those
//! answers. No proxy-wasm here: `host` makes the call and hands the answer in.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{de, Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::confirmation::{CnfEncoding, Confirmation};
use crate::token;
use crate::verdict::Denial;

pub const DEFAULT_PATH: &str = "/introspect";
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_CACHE_TTL_S: u64 = 60;
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;
/// An inactive answer is cached for at most this long: a token that was just issued may be
/// reported inactive by a lagging replica, and should not stay refused for a whole TTL.
pub const INACTIVE_TTL_S: u64 = 10;
/// Longest introspection response read; a longer one is a failure.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_CACHE_TTL_S: u64 = 86_400;
const MAX_CACHE_MAX_ENTRIES: usize = 1_000_000;

/// Which bearer tokens are introspected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokens {
    /// Only tokens that are not shaped like a JWS; JWTs are read as before.
    #[default]
    Opaque,
    /// Every bearer token, JWTs included: the authorization server's answer decides.
    All,
}

/// A credential from the configuration. Never printed: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The validated `introspection` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// The Envoy cluster of the authorization server.
    pub cluster: String,
    pub path: String,
    pub authority: String,
    /// The whole `Authorization` value sent to the endpoint (Basic or Bearer), if any.
    pub authorization: Option<Secret>,
    pub timeout: Duration,
    pub cache_ttl_s: u64,
    pub cache_max_entries: usize,
    pub tokens: Tokens,
    /// The status of the answer when the endpoint fails: 503 or 401.
    pub on_error_status: u32,
}

/// The object as written; [`Introspection::try_from`] checks the keys that go together.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(deserialize_with = "nonempty")]
    cluster: String,
    #[serde(default = "default_path", deserialize_with = "endpoint_path")]
    path: String,
    #[serde(default, deserialize_with = "authority")]
    authority: Option<String>,
    #[serde(default, deserialize_with = "client_id")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    client_secret: Option<Secret>,
    #[serde(default, deserialize_with = "bearer_secret")]
    bearer_token: Option<Secret>,
    #[serde(default = "default_timeout", deserialize_with = "timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_ttl", deserialize_with = "cache_ttl_s")]
    cache_ttl_s: u64,
    #[serde(
        default = "default_max_entries",
        deserialize_with = "cache_max_entries"
    )]
    cache_max_entries: usize,
    #[serde(default)]
    tokens: Tokens,
    #[serde(default = "default_error_status", deserialize_with = "error_status")]
    on_error_status: u32,
}

fn default_path() -> String {
    DEFAULT_PATH.to_string()
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_ttl() -> u64 {
    DEFAULT_CACHE_TTL_S
}

fn default_max_entries() -> usize {
    DEFAULT_CACHE_MAX_ENTRIES
}

fn default_error_status() -> u32 {
    503
}

fn nonempty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(text)
}

fn endpoint_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    let visible = path.bytes().all(|b| b.is_ascii_graphic());
    if path.starts_with('/') && visible {
        Ok(path)
    } else {
        Err(de::Error::custom(format!(
            "{path:?} is not a path starting with / (visible ASCII, no spaces)"
        )))
    }
}

fn authority<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let host = String::deserialize(d)?;
    let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if valid {
        Ok(Some(host))
    } else {
        Err(de::Error::custom(format!(
            "{host:?} is not a host[:port] authority"
        )))
    }
}

fn client_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    nonempty(d).map(Some)
}

/// A credential: any error about it says what is wrong but never shows the value, which serde's
/// own messages would ("invalid type: integer `1234`").
fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let hidden = |_| de::Error::custom("must be a non-empty string (the value is not shown)");
    let text = String::deserialize(d).map_err(hidden)?;
    if text.is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(Some(Secret(text)))
}

/// A bearer credential for the endpoint: it goes into a header as is, so it must be an RFC 6750
/// §2.1 `b64token`.
fn bearer_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let secret = secret(d)?;
    let valid = secret
        .as_ref()
        .is_some_and(|s| token::bearer(Some(format!("Bearer {}", s.0).as_bytes())).is_ok());
    if valid {
        Ok(secret)
    } else {
        Err(de::Error::custom(
            "is not an RFC 6750 b64token (the value is not shown)",
        ))
    }
}

fn bounded<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64) -> Result<u64, D::Error> {
    let value = i64::deserialize(d)?;
    match u64::try_from(value) {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(de::Error::custom(format!(
            "{value} is not between {min} and {max}"
        ))),
    }
}

fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, 1, MAX_TIMEOUT_MS)
}

fn cache_ttl_s<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, 0, MAX_CACHE_TTL_S)
}

fn cache_max_entries<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let max = u64::try_from(MAX_CACHE_MAX_ENTRIES).unwrap_or(u64::MAX);
    let value = bounded(d, 0, max)?;
    usize::try_from(value).map_err(de::Error::custom)
}

fn error_status<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let status = i64::deserialize(d)?;
    match status {
        401 | 503 => Ok(u32::try_from(status).unwrap_or(503)),
        _ => Err(de::Error::custom(format!("{status} is not 503 or 401"))),
    }
}

impl TryFrom<Raw> for Introspection {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Self, String> {
        let authorization = match (raw.client_id, raw.client_secret, raw.bearer_token) {
            (None, None, None) => None,
            (Some(id), Some(secret), None) => Some(basic(&id, secret.expose())),
            (None, None, Some(token)) => Some(Secret(format!("Bearer {}", token.expose()))),
            (Some(_), None, None) => {
                return Err("`client_id` is set without `client_secret`".into())
            }
            (None, Some(_), None) => {
                return Err("`client_secret` is set without `client_id`".into())
            }
            (_, _, Some(_)) => {
                return Err(
                    "`bearer_token` and `client_id`/`client_secret` are set: choose one".into(),
                )
            }
        };
        Ok(Self {
            authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
            cluster: raw.cluster,
            path: raw.path,
            authorization,
            timeout: Duration::from_millis(raw.timeout_ms),
            cache_ttl_s: raw.cache_ttl_s,
            cache_max_entries: raw.cache_max_entries,
            tokens: raw.tokens,
            on_error_status: raw.on_error_status,
        })
    }
}

/// Deserialises and checks an `introspection` object (for `config`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Introspection>, D::Error> {
    let raw = Raw::deserialize(d)?;
    Introspection::try_from(raw)
        .map(Some)
        .map_err(de::Error::custom)
}

/// HTTP Basic client authentication as RFC 6749 §2.3.1 specifies it: both parts form-urlencoded
/// before they are joined and base64-encoded.
fn basic(client_id: &str, client_secret: &str) -> Secret {
    let id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let secret: String = form_urlencoded::byte_serialize(client_secret.as_bytes()).collect();
    Secret(format!(
        "Basic {}",
        STANDARD.encode(format!("{id}:{secret}"))
    ))
}

impl Introspection {
    /// Whether this bearer token is introspected rather than read.
    pub fn applies_to(&self, token: &[u8]) -> bool {
        match self.tokens {
            Tokens::All => true,
            Tokens::Opaque => !token::is_jws(token),
        }
    }

    /// The headers of the introspection request (RFC 7662 §2.1).
    pub fn request_headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            (":method", "POST"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ];
        if let Some(authorization) = &self.authorization {
            headers.push(("authorization", authorization.expose()));
        }
        headers
    }
}

/// The body of the introspection request: the token, form-encoded, with its type hint.
pub fn request_body(token: &[u8]) -> String {
    let token: String = form_urlencoded::byte_serialize(token).collect();
    format!("token={token}&token_type_hint=access_token")
}

/// The cache key of a token: its SHA-256, so the cache never holds a usable token.
pub fn cache_key(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// What the authorization server said about a token, as certbound judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The token's confirmation, or why the token itself is refused (inactive, malformed `cnf`).
    pub claims: Result<Confirmation, Denial>,
    /// The token's `exp` (unix seconds), if the server gave one.
    pub exp: Option<u64>,
}

impl Answer {
    /// How long this answer may be reused: the TTL, no longer than the token lives, and at most
    /// [`INACTIVE_TTL_S`] for an inactive token.
    pub fn lifetime(&self, ttl_s: u64, now: u64) -> u64 {
        let ttl = match self.claims {
            Err(Denial::InactiveToken) => ttl_s.min(INACTIVE_TTL_S),
            _ => ttl_s,
        };
        match self.exp {
            Some(exp) => ttl.min(exp.saturating_sub(now)),
            None => ttl,
        }
    }
}

/// Why an introspection did not produce an answer. Shown in logs; holds nothing from the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No response at all: the callout failed without a status.
    NoResponse,
    /// Another status than 200, from the endpoint or from Envoy on its behalf (504 when the
    /// call ran past `timeout_ms`, 503 when it could not connect).
    Status(u32),
    TooLarge,
    /// The body is not a JSON object with a boolean `active`.
    Unparsable,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NoResponse => f.write_str("no response"),
            Failure::Status(status) => write!(f, "the endpoint answered {status}"),
            Failure::TooLarge => {
                write!(f, "the response is longer than {MAX_RESPONSE_BYTES} bytes")
            }
            Failure::Unparsable => {
                f.write_str("the response is not a JSON object with a boolean `active`")
            }
        }
    }
}

#[derive(Deserialize)]
struct Response<'a> {
    active: bool,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default, borrow, deserialize_with = "token::present")]
    cnf: Option<&'a RawValue>,
}

/// Reads an introspection response. `status` is the `:status` Envoy reported, `None` when the
/// call failed without one.
///
/// RFC 7662 §2.2: `active` is required; an active token whose `exp` has passed is taken as
/// inactive. RFC 8705 §3.2: the binding is `cnf.x5t#S256`, read exactly as from a JWT.
pub fn parse_response(
    status: Option<u32>,
    body: &[u8],
    encoding: CnfEncoding,
    now: u64,
) -> Result<Answer, Failure> {
    match status {
        None => return Err(Failure::NoResponse),
        Some(200) => {}
        Some(other) => return Err(Failure::Status(other)),
    }
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(Failure::TooLarge);
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Failure::Unparsable);
    }
    let response: Response<'_> = serde_json::from_slice(body).map_err(|_| Failure::Unparsable)?;

    // A negative or fractional exp is clamped to whole seconds; NaN cannot come out of JSON.
    let exp = response.exp.map(|exp| exp.max(0.0) as u64);
    let expired = exp.is_some_and(|exp| exp <= now);
    let claims = if !response.active || expired {
        Err(Denial::InactiveToken)
    } else {
        token::confirmation_of(response.cnf, encoding)
    };
    Ok(Answer { claims, exp })
}

/// Introspection answers by token hash, for one VM (one Envoy worker). Bounded: when full, expired
/// entries go first, then the one closest to expiry.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<[u8; 32], Entry>,
    max_entries: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    claims: Result<Confirmation, Denial>,
    expires_at: u64,
}

impl Cache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached claims for this key, if an entry is still alive at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<Result<Confirmation, Denial>> {
        self.entries
            .get(key)
            .filter(|entry| entry.expires_at > now)
            .map(|entry| entry.claims)
    }

    /// Stores an answer for `answer.lifetime(ttl_s, now)` seconds; a lifetime of 0 stores nothing.
    pub fn insert(&mut self, key: [u8; 32], answer: &Answer, ttl_s: u64, now: u64) {
        let lifetime = answer.lifetime(ttl_s, now);
        if lifetime == 0 || self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.entries.retain(|_, entry| entry.expires_at > now);
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.expires_at)
                .map(|(key, _)| *key);
            if let Some(soonest) = soonest {
                self.entries.remove(&soonest);
            }
        }
        let entry = Entry {
            claims: answer.claims,
            expires_at: now.saturating_add(lifetime),
        };
        self.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thumbprint::Thumbprint;

    const NOW: u64 = 1_700_000_000;

    fn parse(json: &str) -> Result<Introspection, String> {
        let mut d = serde_json::Deserializer::from_str(json);
        match deserialize(&mut d) {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err("none".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults_and_basic_authentication() {
        let i = parse(r#"{"cluster":"as"}"#).unwrap();
        assert_eq!(i.path, "/introspect");
        assert_eq!(i.authority, "as");
        assert_eq!(i.authorization, None);
        assert_eq!(i.timeout, Duration::from_millis(1000));
        assert_eq!((i.cache_ttl_s, i.cache_max_entries), (60, 10_000));
        assert_eq!((i.tokens, i.on_error_status), (Tokens::Opaque, 503));

        // RFC 6749 §2.3.1: form-urlencoded, then base64 of id:secret.
        let i = parse(r#"{"cluster":"as","client_id":"gw 1","client_secret":"s:e/c"}"#).unwrap();
        let expected = format!("Basic {}", STANDARD.encode("gw+1:s%3Ae%2Fc"));
        assert_eq!(i.authorization.unwrap().expose(), expected);
        let i = parse(r#"{"cluster":"as","bearer_token":"abc.def"}"#).unwrap();
        assert_eq!(i.authorization.unwrap().expose(), "Bearer abc.def");
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let i = parse(r#"{"cluster":"as","client_id":"gw","client_secret":"hunter2"}"#).unwrap();
        assert!(!format!("{i:?}").contains("hunter2"));
        assert!(!format!("{i:?}").contains(&STANDARD.encode("gw:hunter2")));
        for json in [
            r#"{"cluster":"as","client_id":"gw","client_secret":918273645}"#,
            r#"{"cluster":"as","client_id":"gw","client_secret":["918273645"]}"#,
            r#"{"cluster":"as","bearer_token":"918273645 with spaces"}"#,
            r#"{"cluster":"as","bearer_token":918273645}"#,
            r#"{"cluster":"as","bearer_token":"918273645","client_secret":"918273645"}"#,
        ] {
            let message = parse(json).unwrap_err();
            assert!(!message.contains("918273645"), "{message}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let table = [
            (r#"{}"#, "cluster"),
            (r#"{"cluster":""}"#, "empty"),
            (r#"{"cluster":"as","path":"introspect"}"#, "introspect"),
            (r#"{"cluster":"as","authority":"a b"}"#, "a b"),
            (r#"{"cluster":"as","timeout_ms":0}"#, "0 is not between"),
            (r#"{"cluster":"as","cache_ttl_s":-1}"#, "-1"),
            (r#"{"cluster":"as","cache_max_entries":2000000}"#, "2000000"),
            (r#"{"cluster":"as","tokens":"jwt"}"#, "jwt"),
            (r#"{"cluster":"as","on_error_status":500}"#, "500"),
            (r#"{"cluster":"as","client_id":"gw"}"#, "client_secret"),
            (r#"{"cluster":"as","client_secret":"x"}"#, "client_id"),
            (r#"{"cluster":"as","secret":"x"}"#, "unknown field `secret`"),
        ];
        for (json, needle) in table {
            let message = parse(json).unwrap_err();
            assert!(message.contains(needle), "{json}: {message}");
        }
    }

    #[test]
    fn which_tokens_are_introspected() {
        let opaque = parse(r#"{"cluster":"as"}"#).unwrap();
        let all = parse(r#"{"cluster":"as","tokens":"all"}"#).unwrap();
        assert!(opaque.applies_to(b"2YotnFZFEjr1zCsicMWpAA"));
        assert!(!opaque.applies_to(b"e30.e30.c2ln"));
        assert!(all.applies_to(b"e30.e30.c2ln"));
        assert_eq!(
            request_body(b"a+b/c=="),
            "token=a%2Bb%2Fc%3D%3D&token_type_hint=access_token"
        );
        let headers = opaque.request_headers();
        assert!(headers.contains(&(":method", "POST")));
        assert!(headers.contains(&("content-type", "application/x-www-form-urlencoded")));
    }

    #[test]
    fn responses() {
        let t = Thumbprint::of_der(b"client");
        let bound = format!(
            r#"{{"active":true,"exp":{},"cnf":{{"x5t#S256":"{}"}}}}"#,
            NOW + 30,
            t.to_base64url()
        );
        let parse =
            |status, body: &str| parse_response(status, body.as_bytes(), CnfEncoding::Auto, NOW);
        let claims = |status, body: &str| parse(status, body).map(|a| a.claims);
        assert_eq!(
            parse(Some(200), &bound),
            Ok(Answer {
                claims: Ok(Confirmation::X5tS256(t)),
                exp: Some(NOW + 30)
            })
        );
        type Expected = Result<Result<Confirmation, Denial>, Failure>;
        let table: [(Option<u32>, &str, Expected); 12] = [
            (
                Some(200),
                r#"{"active":true}"#,
                Ok(Ok(Confirmation::Unbound)),
            ),
            (
                Some(200),
                r#"{"active":true,"cnf":{"jkt":"x"}}"#,
                Ok(Ok(Confirmation::Unbound)),
            ),
            (
                Some(200),
                r#"{"active":false}"#,
                Ok(Err(Denial::InactiveToken)),
            ),
            (
                Some(200),
                r#"{"active":false,"cnf":{"x5t#S256":"bad"}}"#,
                Ok(Err(Denial::InactiveToken)),
            ),
            (
                Some(200),
                r#"{"active":true,"exp":1}"#,
                Ok(Err(Denial::InactiveToken)),
            ),
            (
                Some(200),
                r#"{"active":true,"cnf":{"x5t#S256":"bad"}}"#,
                Ok(Err(Denial::MalformedConfirmation)),
            ),
            (
                Some(200),
                r#"{"active":true,"cnf":null}"#,
                Ok(Err(Denial::MalformedConfirmation)),
            ),
            (Some(200), r#"{"active":"true"}"#, Err(Failure::Unparsable)),
            (Some(200), r#"{"scope":"x"}"#, Err(Failure::Unparsable)),
            (Some(200), "<html>ok</html>", Err(Failure::Unparsable)),
            (Some(500), r#"{"active":true}"#, Err(Failure::Status(500))),
            (None, "", Err(Failure::NoResponse)),
        ];
        for (status, body, expected) in table {
            assert_eq!(claims(status, body), expected, "{status:?} {body}");
        }
        let big = format!(
            r#"{{"active":true,"pad":"{}"}}"#,
            "x".repeat(MAX_RESPONSE_BYTES)
        );
        assert_eq!(claims(Some(200), &big), Err(Failure::TooLarge));
    }

    #[test]
    fn lifetimes() {
        let active = |exp| Answer {
            claims: Ok(Confirmation::Unbound),
            exp,
        };
        assert_eq!(active(None).lifetime(60, NOW), 60);
        assert_eq!(active(Some(NOW + 5)).lifetime(60, NOW), 5);
        assert_eq!(active(Some(NOW + 500)).lifetime(60, NOW), 60);
        assert_eq!(active(Some(NOW - 5)).lifetime(60, NOW), 0);
        let inactive = Answer {
            claims: Err(Denial::InactiveToken),
            exp: None,
        };
        assert_eq!(inactive.lifetime(60, NOW), INACTIVE_TTL_S);
        assert_eq!(inactive.lifetime(3, NOW), 3);
    }

    #[test]
    fn cache_is_keyed_by_hash_expires_and_stays_bounded() {
        let answer = Answer {
            claims: Ok(Confirmation::X5tS256(Thumbprint::of_der(b"a"))),
            exp: Some(NOW + 20),
        };
        let key = cache_key(b"token-1");
        assert_ne!(&key[..], b"token-1");
        let mut cache = Cache::new(2);
        cache.insert(key, &answer, 60, NOW);
        assert_eq!(cache.get(&key, NOW + 19), Some(answer.claims));
        assert_eq!(cache.get(&key, NOW + 20), None, "lives no longer than exp");

        // Full: the entry closest to expiry goes.
        cache.insert(
            cache_key(b"token-2"),
            &Answer {
                exp: None,
                ..answer
            },
            60,
            NOW,
        );
        cache.insert(
            cache_key(b"token-3"),
            &Answer {
                exp: None,
                ..answer
            },
            60,
            NOW,
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&key, NOW), None);
        assert!(cache.get(&cache_key(b"token-3"), NOW).is_some());

        // Expired entries go before live ones.
        let mut cache = Cache::new(2);
        cache.insert(cache_key(b"old"), &answer, 60, NOW);
        cache.insert(
            cache_key(b"live"),
            &Answer {
                exp: None,
                ..answer
            },
            60,
            NOW,
        );
        cache.insert(
            cache_key(b"new"),
            &Answer {
                exp: None,
                ..answer
            },
            60,
            NOW + 30,
        );
        assert!(cache.get(&cache_key(b"live"), NOW + 30).is_some());
        assert!(cache.get(&cache_key(b"new"), NOW + 30).is_some());

        // TTL 0 or no room: nothing stored.
        let mut cache = Cache::new(0);
        cache.insert(key, &answer, 60, NOW);
        assert!(cache.is_empty());
        let mut cache = Cache::new(5);
        cache.insert(key, &answer, 0, NOW);
        assert!(cache.is_empty());
    }
}

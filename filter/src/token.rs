//! The bearer token: where it is found in the request (RFC 6750 §2.1) and what its payload says
//! about the certificate it is bound to (RFC 8705 §3.1).

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::confirmation::{parse_x5t_s256, CnfEncoding, Confirmation};
use crate::verdict::Denial;

/// Extracts the credential from an `Authorization` header value.
///
/// `Ok(None)` when there is no header or it uses another scheme (Basic, DPoP, ...): there is no
/// bearer token to judge. The scheme name is case-insensitive (RFC 7235 §2.1); the credential
/// must be an RFC 6750 §2.1 `b64token`, which also refuses several tokens joined by commas.
pub fn bearer(authorization: Option<&[u8]>) -> Result<Option<&[u8]>, Denial> {
    let Some(value) = authorization else {
        return Ok(None);
    };
    let value = value.trim_ascii();
    let (scheme, rest) = split_scheme(value);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme, unless the word "bearer" stands anywhere in the value as a word of its
        // own: "Basic x,Bearer t" (Envoy joins repeated headers with commas), "Basic Bearer t",
        // "Bearer:t". Other parsers find a Bearer token there (jwt_authn looks for its prefix
        // anywhere in the value; upstreams strip "Bearer" and a separator), so certbound would
        // judge another credential than they use.
        return if mentions_bearer(value) {
            Err(Denial::MalformedAuthorization)
        } else {
            Ok(None)
        };
    }
    let token = rest.trim_ascii_start();
    if is_b64token(token) {
        Ok(Some(token))
    } else {
        Err(Denial::MalformedAuthorization)
    }
}

/// The credential of an Authorization value that [`bearer`] found no bearer token in, when it
/// has the shape of a JWS: the one word after another scheme (`DPoP <jws>`, `Token <jws>`), or a
/// bare value with no scheme at all. Such a token may still be certificate-bound, and an upstream
/// that takes the word after any scheme, or a bare JWT, would accept it.
pub fn other_scheme_jws(authorization: Option<&[u8]>) -> Option<&[u8]> {
    let (scheme, rest) = split_scheme(authorization?.trim_ascii());
    let credential = match rest.is_empty() {
        true => scheme,
        false => rest.trim_ascii_start(),
    };
    (is_b64token(credential) && is_jws(credential)).then_some(credential)
}

/// A trimmed Authorization value split where the scheme ends: at the first space or tab (many
/// upstreams split on any whitespace, so "Bearer<TAB>token" is the Bearer credential it is to
/// them). The rest keeps its leading blanks; without a blank it is empty.
fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    match value.iter().position(|&b| is_blank(b)) {
        Some(blank) => value.split_at(blank),
        None => (value, &b""[..]),
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether "bearer" (any case) occurs in the value at its start, or as a word not followed by a
/// letter or digit. Inside a base64 credential it is neither, as good as always.
fn mentions_bearer(value: &[u8]) -> bool {
    const WORD: &[u8] = b"bearer";
    value.windows(WORD.len()).enumerate().any(|(at, window)| {
        window.eq_ignore_ascii_case(WORD)
            && (at == 0
                || value
                    .get(at + WORD.len())
                    .is_none_or(|b| !b.is_ascii_alphanumeric()))
    })
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
///
/// Every byte of a token is looked at on every request (an RS256 token is about 600 bytes), so
/// this is one table load per byte and no branch until the end.
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    let (body, _padding) = token.split_at(body_len);
    !body.is_empty()
        && body.iter().fold(true, |valid, &b| {
            valid & (B64TOKEN.get(usize::from(b)) == Some(&true))
        })
}

/// `B64TOKEN[b]`: whether byte `b` may appear before the padding of a `b64token`.
#[allow(clippy::indexing_slicing)] // built at compile time; `b` runs over the 256 entries
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] =
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// Reads the confirmation out of a token.
///
/// A token of exactly three dot-separated segments is taken as a JWS (RFC 7515 §7.1) and its
/// payload must be a JSON object. Anything else is opaque to certbound and therefore unbound.
/// The signature is not checked here: that is the job of a filter in front (jwt_authn).
pub fn confirmation(token: &[u8], encoding: CnfEncoding) -> Result<Confirmation, Denial> {
    let Some(payload) = jws_payload(token) else {
        return Ok(Confirmation::Unbound);
    };

    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| Denial::MalformedToken)?;
    if !starts_object(&payload) {
        return Err(Denial::MalformedToken);
    }
    // RFC 8259 §8.1: JSON text is UTF-8. serde_json skips the members it ignores without
    // checking their bytes, so without this a payload that a strict parser in front refuses
    // (jwt_authn) could still be read here.
    let payload = std::str::from_utf8(&payload).map_err(|_| Denial::MalformedToken)?;
    let claims: Claims<'_> = serde_json::from_str(payload).map_err(|_| Denial::MalformedToken)?;

    confirmation_of(claims.cnf, encoding)
}

/// Whether a token has exactly three dot-separated segments, the shape of a JWS (RFC 7515 §7.1).
pub fn is_jws(token: &[u8]) -> bool {
    token.split(|&b| b == b'.').count() == 3
}

/// Reads a `cnf` member (raw JSON; `None` when absent), from a JWT's payload or an introspection
/// response (RFC 8705 §3.1, §3.2).
pub(crate) fn confirmation_of(
    cnf: Option<&RawValue>,
    encoding: CnfEncoding,
) -> Result<Confirmation, Denial> {
    let Some(cnf) = cnf else {
        return Ok(Confirmation::Unbound);
    };
    if !starts_object(cnf.get().as_bytes()) {
        return Err(Denial::MalformedConfirmation);
    }
    let cnf: Cnf<'_> =
        serde_json::from_str(cnf.get()).map_err(|_| Denial::MalformedConfirmation)?;
    let Some(x5t) = cnf.x5t_s256 else {
        // A cnf with another confirmation method (jkt, jwk, ...) is not ours to enforce.
        return Ok(Confirmation::Unbound);
    };
    // A thumbprint has no escapes, so it is borrowed; only an escaped one is copied.
    let text: Cow<'_, str> = match serde_json::from_str::<&str>(x5t.get()) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(
            serde_json::from_str::<String>(x5t.get()).map_err(|_| Denial::MalformedConfirmation)?,
        ),
    };
    parse_x5t_s256(&text, encoding)
        .map(Confirmation::X5tS256)
        .ok_or(Denial::MalformedConfirmation)
}

/// The payload segment of a token of exactly three dot-separated segments (RFC 7515 §7.1).
fn jws_payload(token: &[u8]) -> Option<&[u8]> {
    let header_end = find_dot(token)?;
    let rest = token.get(header_end + 1..)?;
    let payload_end = find_dot(rest)?;
    let (payload, signature) = rest.split_at(payload_end);
    // `contains` on bytes is the standard library's word-at-a-time memchr.
    (!signature.get(1..)?.contains(&b'.')).then_some(payload)
}

/// The index of the first `.`, eight bytes at a time: a JWS header and payload are hundreds of
/// bytes, and a byte-by-byte search was a measurable part of judging a token.
fn find_dot(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const DOTS: u64 = u64::from_le_bytes([b'.'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().ok()?) ^ DOTS;
        // Nonzero exactly when some byte of `word` is zero, i.e. some byte was a dot; the lowest
        // flagged byte is the first dot (higher flags may be false positives, never lower ones).
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(offset + (zero.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| b == b'.').map(|i| offset + i)
}

/// Serde would also build a struct from a JSON array; a payload or a `cnf` must be an object.
fn starts_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

/// Only the claim certbound needs. Other members are skipped without being built. A repeated
/// `cnf` is an error (serde refuses duplicate fields), so a token cannot say two things at once.
#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    cnf: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Cnf<'a> {
    #[serde(rename = "x5t#S256", default, borrow, deserialize_with = "present")]
    x5t_s256: Option<&'a RawValue>,
}

/// Maps a member that is present to `Some`, even when its value is `null`, so that `"cnf": null`
/// is judged malformed rather than absent.
pub(crate) fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thumbprint::Thumbprint;

    fn jwt(payload: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"at+jwt"}"#);
        format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    const B64: &str = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

    type Extracted<'a> = Result<Option<&'a [u8]>, Denial>;

    #[test]
    fn bearer_extraction() {
        let table: &[(Option<&[u8]>, Extracted<'_>)] = &[
            (None, Ok(None)),
            (Some(b"Bearer abc"), Ok(Some(b"abc"))),
            (Some(b"bearer abc"), Ok(Some(b"abc"))),
            (Some(b"BEARER  abc.def.ghi "), Ok(Some(b"abc.def.ghi"))),
            (Some(b"Bearer a+b/c=="), Ok(Some(b"a+b/c=="))),
            (Some(b"Basic dXNlcjpwYXNz"), Ok(None)),
            (Some(b"DPoP abc"), Ok(None)),
            // A tab separates the scheme as well as a space does.
            (Some(b"Bearer\tabc"), Ok(Some(b"abc"))),
            (Some(b"Bearer \t abc"), Ok(Some(b"abc"))),
            (
                Some(b"Basic eDp5,Bearer\tabc"),
                Err(Denial::MalformedAuthorization),
            ),
            (
                Some(b"Basic eDp5,\tBearer abc"),
                Err(Denial::MalformedAuthorization),
            ),
            (Some(b""), Ok(None)),
            (Some(b"Bearer"), Err(Denial::MalformedAuthorization)),
            (Some(b"Bearer "), Err(Denial::MalformedAuthorization)),
            (
                Some(b"Bearer a,Bearer b"),
                Err(Denial::MalformedAuthorization),
            ),
            (Some(b"Bearer a b"), Err(Denial::MalformedAuthorization)),
            (Some(b"Bearer ==="), Err(Denial::MalformedAuthorization)),
            (Some(b"Bearer a=b"), Err(Denial::MalformedAuthorization)),
            (
                Some(b"Bearer \xff\xfe"),
                Err(Denial::MalformedAuthorization),
            ),
            // Two headers, as Envoy joins them: a bearer token hides behind another scheme.
            (
                Some(b"Basic eDp5,Bearer abc"),
                Err(Denial::MalformedAuthorization),
            ),
            (
                Some(b"Basic eDp5, bearer abc"),
                Err(Denial::MalformedAuthorization),
            ),
            (
                Some(b"Basic eDp5,Bearer"),
                Err(Denial::MalformedAuthorization),
            ),
            (
                Some(b"Bearer abc,Basic eDp5"),
                Err(Denial::MalformedAuthorization),
            ),
            // "bearer" as a word anywhere: another parser finds a Bearer token there.
            (
                Some(b"Basic Bearer abc"),
                Err(Denial::MalformedAuthorization),
            ),
            (
                Some(b"DPoP Bearer abc"),
                Err(Denial::MalformedAuthorization),
            ),
            (
                Some(b"Basic YTpi\tBearer abc"),
                Err(Denial::MalformedAuthorization),
            ),
            (Some(b"Bearer:abc"), Err(Denial::MalformedAuthorization)),
            (Some(b"Bearer=abc"), Err(Denial::MalformedAuthorization)),
            (Some(b"Bearerabc"), Err(Denial::MalformedAuthorization)),
            (Some(b"Bearer\xa0abc"), Err(Denial::MalformedAuthorization)),
            (Some(b"NotBearer abc"), Err(Denial::MalformedAuthorization)),
            (Some(b"Basic eDpiZWFyZXJz"), Ok(None)),
            // Commas inside another scheme's parameters are not a second credential...
            (Some(b"Digest username=\"a\", realm=\"b\""), Ok(None)),
            // ...but a parameter named bearer is refused with the rest: better a 400 for a
            // contrived value than a token certbound did not judge.
            (
                Some(b"Digest username=\"a\", bearer=\"c\""),
                Err(Denial::MalformedAuthorization),
            ),
            (Some(b"Basic eDp5,Basic eDp5"), Ok(None)),
        ];
        for (header, expected) in table {
            assert_eq!(&bearer(*header), expected, "{header:?}");
        }
    }

    /// The word-at-a-time search agrees with a plain split, wherever the dots fall in a word.
    #[test]
    fn jws_payload_matches_split() {
        fn by_split(token: &[u8]) -> Option<&[u8]> {
            let mut segments = token.split(|&b| b == b'.');
            match (
                segments.next(),
                segments.next(),
                segments.next(),
                segments.next(),
            ) {
                (Some(_), Some(payload), Some(_), None) => Some(payload),
                _ => None,
            }
        }
        let mut tokens: Vec<Vec<u8>> = vec![b"".to_vec(), b".".to_vec(), b"..".to_vec()];
        tokens.extend([
            b"...".to_vec(),
            b"a.b".to_vec(),
            b"a.b.c".to_vec(),
            b"a..c".to_vec(),
        ]);
        for len in 0..40 {
            for first in 0..len {
                for second in first..len {
                    let mut token = vec![b'x'; len];
                    token[first] = b'.';
                    token[second] = b'.';
                    tokens.push(token.clone());
                    token.push(b'.');
                    tokens.push(token);
                }
            }
        }
        for token in &tokens {
            assert_eq!(
                jws_payload(token),
                by_split(token),
                "{:?}",
                String::from_utf8_lossy(token)
            );
        }
        assert_eq!(find_dot(b"\xae\xae\xae\xae\xae\xae\xae\xae."), Some(8));
    }

    #[test]
    fn confirmation_table() {
        let bound = Ok(Confirmation::X5tS256(Thumbprint::of_der(b"")));
        let table: Vec<(String, Result<Confirmation, Denial>)> = vec![
            (jwt(&format!(r#"{{"cnf":{{"x5t#S256":"{B64}"}}}}"#)), bound),
            (
                jwt(&format!(
                    r#"{{"sub":"a","cnf":{{"x5t\u0023S256":"{B64}"}}}}"#
                )),
                bound,
            ),
            (
                jwt(&format!(
                    r#" {{"cnf":{{"jkt":"x","x5t#S256":"{B64}"}},"n":[1,{{}}]}}"#
                )),
                bound,
            ),
            (jwt(r#"{"sub":"a"}"#), Ok(Confirmation::Unbound)),
            (jwt(r#"{"cnf":{"jkt":"abc"}}"#), Ok(Confirmation::Unbound)),
            ("opaque-token".into(), Ok(Confirmation::Unbound)),
            ("a.b".into(), Ok(Confirmation::Unbound)),
            ("a.b.c.d.e".into(), Ok(Confirmation::Unbound)),
            // Looks like a JWS, payload is not a JSON object.
            ("a.!!!.c".into(), Err(Denial::MalformedToken)),
            (jwt("[]"), Err(Denial::MalformedToken)),
            (
                jwt(&format!(r#"[{{"x5t#S256":"{B64}"}}]"#)),
                Err(Denial::MalformedToken),
            ),
            (jwt("not json"), Err(Denial::MalformedToken)),
            (jwt(r#"{"cnf":{}} trailing"#), Err(Denial::MalformedToken)),
            (jwt(r#"{"cnf":{},"cnf":{}}"#), Err(Denial::MalformedToken)),
            ("eyJ9.eyJ9=.c2ln".into(), Err(Denial::MalformedToken)),
            // Not UTF-8 inside a claim certbound does not read: still not JSON text.
            (
                format!(
                    "e30.{}.c2ln",
                    URL_SAFE_NO_PAD.encode(b"{\"sub\":\"\xff\xfe\",\"cnf\":{}}")
                ),
                Err(Denial::MalformedToken),
            ),
            // Confirmation present but not a well-formed thumbprint.
            (jwt(r#"{"cnf":null}"#), Err(Denial::MalformedConfirmation)),
            (jwt(r#"{"cnf":"abc"}"#), Err(Denial::MalformedConfirmation)),
            (
                jwt(r#"{"cnf":{"x5t#S256":null}}"#),
                Err(Denial::MalformedConfirmation),
            ),
            (
                jwt(r#"{"cnf":{"x5t#S256":""}}"#),
                Err(Denial::MalformedConfirmation),
            ),
            (
                jwt(r#"{"cnf":{"x5t#S256":42}}"#),
                Err(Denial::MalformedConfirmation),
            ),
            (
                jwt(r#"{"cnf":{"x5t#S256":"abc"}}"#),
                Err(Denial::MalformedConfirmation),
            ),
            (
                jwt(&format!(r#"{{"cnf":{{"x5t#S256":"{B64}=" }}}}"#)),
                Err(Denial::MalformedConfirmation),
            ),
            (
                jwt(&format!(
                    r#"{{"cnf":{{"x5t#S256":"{B64}","x5t#S256":"{B64}"}}}}"#
                )),
                Err(Denial::MalformedConfirmation),
            ),
            // Member names are case-sensitive: this is another member, so the token is unbound.
            (
                jwt(&format!(r#"{{"cnf":{{"x5t#s256":"{B64}"}}}}"#)),
                Ok(Confirmation::Unbound),
            ),
        ];
        for (token, expected) in table {
            assert_eq!(
                confirmation(token.as_bytes(), CnfEncoding::Auto),
                expected,
                "{token}"
            );
        }
    }
}

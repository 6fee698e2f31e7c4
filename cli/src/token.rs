//! A token argument: a bare token or an `Authorization` header value, turned into the header
//! value the filter would see. Never shown back in full.

use crate::input::Failure;

const HEADER_NAME: &[u8] = b"authorization:";

/// Characters of the credential shown when a token is named in output.
const SHOWN: usize = 6;

/// The `Authorization` header value this argument stands for.
///
/// A value with a space in it is a header value (`Bearer eyJ...`, or another scheme), optionally
/// with the `Authorization:` name in front; a value without one is a bare token, sent as
/// `Bearer <token>`. A b64token (RFC 6750 §2.1) never holds a space, so no token is misread.
pub fn authorization(bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut value = bytes.trim_ascii();
    if value
        .get(..HEADER_NAME.len())
        .is_some_and(|name| name.eq_ignore_ascii_case(HEADER_NAME))
    {
        value = value
            .get(HEADER_NAME.len()..)
            .unwrap_or_default()
            .trim_ascii();
    }
    if value.is_empty() {
        return Err(Failure("the token is empty".into()));
    }

    if value.iter().any(|b| matches!(b, b' ' | b'\t')) {
        Ok(value.to_vec())
    } else {
        Ok([b"Bearer ".as_slice(), value].concat())
    }
}

/// The header value with its credential cut short: enough to recognise, not enough to use.
pub fn redacted(authorization: &[u8]) -> String {
    let text = String::from_utf8_lossy(authorization);
    let (scheme, credential) = text.split_once(' ').unwrap_or(("", &text));
    let credential = credential.trim_start();
    let count = credential.chars().count();
    let shown: String = credential.chars().take(SHOWN).collect();
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme} ")
    };
    if count <= SHOWN * 2 {
        // Too short to show any of it safely.
        format!("{scheme}({count} characters)")
    } else {
        format!("{scheme}{shown}… ({count} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_tokens_become_bearer_header_values() {
        let table: &[(&str, &str)] = &[
            ("abc.def.ghi", "Bearer abc.def.ghi"),
            ("  abc\n", "Bearer abc"),
            ("Bearer abc", "Bearer abc"),
            ("bearer  abc", "bearer  abc"),
            ("Authorization: Bearer abc", "Bearer abc"),
            ("authorization:abc", "Bearer abc"),
            ("Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
            ("Bearer a b", "Bearer a b"),
        ];
        for (input, expected) in table {
            let got = authorization(input.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), *expected, "{input}");
        }
        assert!(authorization(b"  ").is_err());
        assert!(authorization(b"Authorization:").is_err());
    }

    #[test]
    fn redaction_never_shows_the_whole_credential() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        let shown = redacted(format!("Bearer {token}").as_bytes());
        assert_eq!(shown, "Bearer eyJhbG… (41 characters)");
        assert_eq!(redacted(b"Bearer short"), "Bearer (5 characters)");
        assert!(!redacted(token.as_bytes()).contains("c2ln"));
    }
}

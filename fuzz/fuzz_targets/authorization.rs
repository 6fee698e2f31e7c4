//! The Authorization header and the token payload: `token::bearer` (or, under another scheme,
//! `token::other_scheme_jws`), then `token::confirmation`.
//!
//! The input is read twice: as an Authorization header value, and as the JSON payload of a JWS.
//! Properties: an extracted token is an RFC 6750 `b64token` taken from the header; a token that
//! certbound reads as bound is a JSON object whose `cnf.x5t#S256` a plain JSON parser reads as
//! the same thumbprint (no parser differential on what the binding is).
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use certbound::confirmation::{parse_x5t_s256, CnfEncoding, Confirmation};
use certbound::token;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ENCODINGS: [CnfEncoding; 3] = [CnfEncoding::Auto, CnfEncoding::Base64url, CnfEncoding::Hex];

fuzz_target!(|data: &[u8]| {
    header(data);
    payload(data);
});

fn header(value: &[u8]) {
    let token = match token::bearer(Some(value)) {
        Ok(Some(token)) => token,
        // Another scheme (or none): what certbound still reads there is a JWS from the header.
        Ok(None) => match token::other_scheme_jws(Some(value)) {
            Some(jws) => {
                assert!(token::is_jws(jws));
                jws
            }
            None => return,
        },
        Err(_) => return,
    };
    assert!(!token.is_empty());
    assert!(token
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)));
    assert!(
        value.windows(token.len()).any(|w| w == token),
        "the token comes from the header"
    );
    for encoding in ENCODINGS {
        let _ = token::confirmation(token, encoding);
    }
}

fn payload(payload: &[u8]) {
    let jws = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload));
    let parsed: Result<Value, _> = serde_json::from_slice(payload);
    // serde_json's Value refuses a number beyond f64's range ("number out of range"), which
    // certbound skips unread in members it ignores. That leaves how cnf is read unchanged, so
    // such payloads are left out of the "malformed" property (SECURITY.md says so).
    if parsed
        .as_ref()
        .is_err_and(|e| e.to_string().contains("number out of range"))
    {
        return;
    }
    let plain: Option<Value> = parsed.ok();
    for encoding in ENCODINGS {
        let verdict = token::confirmation(jws.as_bytes(), encoding);
        if let Ok(Confirmation::X5tS256(thumbprint)) = verdict {
            let text = plain
                .as_ref()
                .and_then(|v| v.get("cnf"))
                .and_then(|cnf| cnf.get("x5t#S256"))
                .and_then(Value::as_str)
                .expect("a bound token is a JSON object with a string cnf.x5t#S256");
            assert_eq!(parse_x5t_s256(text, encoding), Some(thumbprint));
        }
        if let Some(Value::Object(claims)) = &plain {
            if !claims.contains_key("cnf") {
                assert_eq!(verdict, Ok(Confirmation::Unbound), "no cnf is unbound");
            }
        }
        if !matches!(plain, Some(Value::Object(_))) {
            assert!(
                verdict.is_err(),
                "a payload that is not a JSON object is malformed"
            );
        }
    }
}

//! `policy::decide`: the certificate is looked up only for a token bound by `cnf.x5t#S256`, a
//! `Bound` verdict names the presented certificate and only when it equals the token's binding,
//! and `Unbound` never comes out of `require_bound_token`.
#![no_main]

use std::cell::Cell;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use certbound::confirmation::{CnfEncoding, Confirmation};
use certbound::policy::{decide, Rules};
use certbound::thumbprint::Thumbprint;
use certbound::token;
use certbound::verdict::{Denial, Verdict};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Presented {
    None,
    Certificate([u8; 32]),
    Unreadable,
}

#[derive(Arbitrary, Debug)]
enum Header<'a> {
    Absent,
    Raw(&'a [u8]),
    /// A JWS bound to `thumbprint` (or to the presented certificate), `extra` spliced in.
    Bound {
        to_presented: bool,
        thumbprint: [u8; 32],
        hex: bool,
        scheme: &'a str,
        extra: &'a str,
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    require_bound_token: bool,
    encoding: u8,
    presented: Presented,
    header: Header<'a>,
}

fuzz_target!(|input: Input<'_>| {
    let rules = Rules {
        require_bound_token: input.require_bound_token,
        cnf_encoding: match input.encoding % 3 {
            0 => CnfEncoding::Auto,
            1 => CnfEncoding::Base64url,
            _ => CnfEncoding::Hex,
        },
        max_token_bytes: certbound::config::DEFAULT_MAX_TOKEN_BYTES,
    };
    let presented = match input.presented {
        Presented::None => Ok(None),
        Presented::Certificate(bytes) => Ok(Some(Thumbprint::from_bytes(bytes))),
        Presented::Unreadable => Err(Denial::Internal),
    };
    let header: Option<Vec<u8>> = match input.header {
        Header::Absent => None,
        Header::Raw(bytes) => Some(bytes.to_vec()),
        Header::Bound {
            to_presented,
            thumbprint,
            hex,
            scheme,
            extra,
        } => {
            let t = match (&presented, to_presented) {
                (Ok(Some(p)), true) => *p,
                _ => Thumbprint::from_bytes(thumbprint),
            };
            let text = if hex { t.to_hex() } else { t.to_base64url() };
            let claims = format!(r#"{{"cnf":{{"x5t#S256":"{text}"{extra}}}}}"#);
            let jws = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims));
            Some(format!("{scheme} {jws}").into_bytes())
        }
    };

    // What the token says, read independently of `decide`: a bearer token, or a JWS under
    // another scheme (or none), which counts only when it is bound by x5t#S256.
    let token = match token::bearer(header.as_deref()) {
        Ok(Some(token)) => Some(token),
        Ok(None) => token::other_scheme_jws(header.as_deref()),
        Err(_) => None,
    };
    let bound_to = token.and_then(
        |token| match token::confirmation(token, rules.cnf_encoding) {
            Ok(Confirmation::X5tS256(t)) => Some(t),
            _ => None,
        },
    );

    let looked_up = Cell::new(false);
    let verdict = decide(rules, header.as_deref(), || {
        looked_up.set(true);
        presented
    });

    assert_eq!(
        looked_up.get(),
        bound_to.is_some(),
        "lookup only for bound tokens"
    );
    match verdict {
        Verdict::Bound(t) => {
            assert_eq!(presented, Ok(Some(t)));
            assert!(
                bound_to.is_some_and(|b| b == t),
                "bound only on equal thumbprints"
            );
        }
        Verdict::Unbound => {
            assert!(!rules.require_bound_token);
            assert!(bound_to.is_none());
        }
        Verdict::Deny(Denial::ThumbprintMismatch) => {
            let (Some(b), Ok(Some(p))) = (bound_to, presented) else {
                panic!("a mismatch needs a binding and a certificate");
            };
            assert_ne!(b, p);
        }
        Verdict::Deny(_) => {}
    }
});

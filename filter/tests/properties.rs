//! Property tests (proptest): every certificate header shape round-trips to the certificate's
//! thumbprint, arbitrary XFCC and token input never panics, and `policy::decide` agrees with a
//! reference model of the README's decision table written here, independently of policy.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use certbound::certificate::{forwarded_certificate, HeaderFormat};
use certbound::confirmation::CnfEncoding;
use certbound::policy::{decide, Rules};
use certbound::thumbprint::Thumbprint;
use certbound::token;
use certbound::verdict::{Denial, Verdict};
use certbound::xfcc::{self, XfccElement};
use proptest::prelude::*;
use rcgen::{CertificateParams, DnType, KeyPair, SignatureAlgorithm};

// ---------------------------------------------------------------------------------------------
// Certificate shapes

struct Cert {
    pem: String,
    der: Vec<u8>,
}

fn certificates() -> &'static [Cert] {
    static CERTS: OnceLock<Vec<Cert>> = OnceLock::new();
    CERTS.get_or_init(|| {
        let algs: [&'static SignatureAlgorithm; 3] = [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ];
        algs.iter()
            .map(|alg| {
                let key = KeyPair::generate_for(alg).unwrap();
                let mut params = CertificateParams::new(Vec::new()).unwrap();
                params
                    .distinguished_name
                    .push(DnType::CommonName, "property client");
                let cert = params.self_signed(&key).unwrap();
                Cert {
                    pem: cert.pem(),
                    der: cert.der().to_vec(),
                }
            })
            .collect()
    })
}

fn base64(bytes: &[u8], url_safe: bool, padded: bool) -> String {
    match (url_safe, padded) {
        (false, true) => STANDARD.encode(bytes),
        (false, false) => STANDARD_NO_PAD.encode(bytes),
        (true, true) => URL_SAFE.encode(bytes),
        (true, false) => URL_SAFE_NO_PAD.encode(bytes),
    }
}

/// Percent-encodes every byte outside the unreserved set, with hex digits in either case.
fn escaped(text: &str, lower: bool) -> String {
    text.bytes()
        .map(|b| match b {
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => char::from(b).to_string(),
            b if lower => format!("%{b:02x}"),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// One certificate in one header shape: the value and the format that names it.
fn shape(cert: &Cert, which: u8, flags: [bool; 3]) -> (String, HeaderFormat) {
    let [x, y, z] = flags;
    let pem = &cert.pem;
    let der = &cert.der;
    match which % 8 {
        0 => {
            let breaks = if x {
                "\r\n"
            } else if y {
                " "
            } else {
                "\n"
            };
            (pem.trim_end().replace('\n', breaks), HeaderFormat::Pem)
        }
        1 => (escaped(pem, x), HeaderFormat::UrlEncodedPem),
        2 => (
            pem.replace(' ', "%20").replace('\n', "%0A"),
            HeaderFormat::UrlEncodedPem,
        ),
        3 => (
            format!(":{}:", base64(der, false, x)),
            HeaderFormat::Rfc9440,
        ),
        4 => {
            let text = base64(der, x, y);
            let text = if z { format!("\"{text}\"") } else { text };
            (text, HeaderFormat::Base64Der)
        }
        5 => {
            let text = base64(pem.as_bytes(), x, y);
            let text = if z { format!("\"{text}\"") } else { text };
            (text, HeaderFormat::Base64Pem)
        }
        6 => {
            let hash = Thumbprint::of_der(der).to_hex();
            let hash = if x { hash.to_uppercase() } else { hash };
            let cert = escaped(pem, y);
            let value = if z {
                format!("Hash={hash};Cert=\"{cert}\";Subject=\"CN=a, O=b\"")
            } else {
                format!("By=spiffe://a/b;Cert={cert}")
            };
            (value, HeaderFormat::Xfcc)
        }
        _ => {
            let hash = Thumbprint::of_der(der).to_hex();
            (format!("Hash={hash}"), HeaderFormat::Xfcc)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_shape_round_trips_to_the_thumbprint(
        index in 0usize..3,
        which in 0u8..8,
        flags in any::<[bool; 3]>(),
        before in "[ \t]{0,3}",
        after in "[ \t\r\n]{0,3}",
    ) {
        let cert = &certificates()[index];
        let (value, format) = shape(cert, which, flags);
        let value = format!("{before}{value}{after}");
        for format in [format, HeaderFormat::Auto] {
            let got = forwarded_certificate(value.as_bytes(), format, XfccElement::Last, None);
            let got = got.unwrap().unwrap();
            prop_assert_eq!(got.thumbprint, Thumbprint::of_der(&cert.der));
            if let Some(der) = got.der {
                prop_assert_eq!(der, cert.der.clone());
            }
        }
    }

    /// A quoted XFCC value holds any bytes once `"` and `\` are escaped, and reads back as itself.
    #[test]
    fn quoted_xfcc_values_round_trip(subject in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut header = b"By=a;Subject=\"".to_vec();
        for &b in &subject {
            if b == b'"' || b == b'\\' {
                header.push(b'\\');
            }
            header.push(b);
        }
        header.extend_from_slice(b"\";Hash=00");
        let elements = xfcc::parse(&header).unwrap();
        prop_assert_eq!(elements.len(), 1);
        prop_assert_eq!(elements[0].get("subject"), Some(&subject[..]));
        prop_assert_eq!(elements[0].get("hash"), Some(&b"00"[..]));
    }

    #[test]
    fn arbitrary_xfcc_never_panics(
        value in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            "[A-Za-z=;,\" \\\\%0-9-]{0,200}".prop_map(String::into_bytes),
        ],
        first in any::<bool>(),
    ) {
        let element = if first { XfccElement::First } else { XfccElement::Last };
        let _ = xfcc::parse(&value);
        let _ = xfcc::client_certificate(&value, element, None);
        for format in [HeaderFormat::Auto, HeaderFormat::Xfcc, HeaderFormat::UrlEncodedPem] {
            let _ = forwarded_certificate(&value, format, element, None);
        }
    }

    #[test]
    fn arbitrary_tokens_never_panic(
        header in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            "(?i:bearer)[ ,]{0,2}[A-Za-z0-9._~+/=, -]{0,120}".prop_map(String::into_bytes),
        ],
        payload in "[{}\\[\\]\":,a-z0-9#\\\\ ]{0,120}",
    ) {
        if let Ok(Some(token)) = token::bearer(Some(&header)) {
            for encoding in [CnfEncoding::Auto, CnfEncoding::Base64url, CnfEncoding::Hex] {
                let _ = token::confirmation(token, encoding);
            }
        }
        let jws = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(&payload));
        let _ = token::confirmation(jws.as_bytes(), CnfEncoding::Auto);
    }
}

// ---------------------------------------------------------------------------------------------
// The decision table, as the README states it, over abstract requests

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    A,
    B,
}

/// What the Authorization header holds, described rather than written out.
#[derive(Clone, Copy, Debug)]
enum Auth {
    Absent,
    /// Another scheme: Basic, DPoP.
    OtherScheme,
    /// `Bearer` with no credential.
    EmptyBearer,
    /// A credential that is not a `b64token` (a space or a comma in it).
    NotB64Token,
    /// Envoy's join of two headers: Basic first, then a Bearer credential.
    BearerBehindBasic,
    Token(Token),
}

#[derive(Clone, Copy, Debug)]
enum Token {
    Opaque,
    UnboundJwt,
    /// `cnf` with another confirmation method (`jkt`).
    OtherMethod,
    BoundBase64url(Who),
    BoundHex(Who),
    PayloadNotObject,
    PayloadNotBase64,
    DuplicateCnf,
    CnfNotObject,
    X5tNotString,
    X5tWrongLength,
    DuplicateX5t,
}

#[derive(Clone, Copy, Debug)]
enum Presented {
    Nothing,
    Certificate(Who),
    Unreadable,
}

fn thumbprint(who: Who) -> Thumbprint {
    Thumbprint::of_der(match who {
        Who::A => b"client a",
        Who::B => b"client b",
    })
}

/// The README's table, row by row.
fn expected(require: bool, encoding: CnfEncoding, auth: Auth, presented: Presented) -> Verdict {
    let not_bound = |denial| {
        if require {
            Verdict::Deny(denial)
        } else {
            Verdict::Unbound
        }
    };
    let token = match auth {
        Auth::Absent | Auth::OtherScheme => return not_bound(Denial::NoToken),
        Auth::EmptyBearer | Auth::NotB64Token | Auth::BearerBehindBasic => {
            return Verdict::Deny(Denial::MalformedAuthorization)
        }
        Auth::Token(token) => token,
    };
    let bound_to = match (token, encoding) {
        (Token::Opaque | Token::UnboundJwt | Token::OtherMethod, _) => {
            return not_bound(Denial::UnboundToken)
        }
        (Token::PayloadNotObject | Token::PayloadNotBase64 | Token::DuplicateCnf, _) => {
            return Verdict::Deny(Denial::MalformedToken)
        }
        (Token::CnfNotObject | Token::X5tNotString | Token::X5tWrongLength, _)
        | (Token::DuplicateX5t, _)
        | (Token::BoundBase64url(_), CnfEncoding::Hex)
        | (Token::BoundHex(_), CnfEncoding::Base64url) => {
            return Verdict::Deny(Denial::MalformedConfirmation)
        }
        (Token::BoundBase64url(who) | Token::BoundHex(who), _) => who,
    };
    match presented {
        Presented::Unreadable => Verdict::Deny(Denial::Internal),
        Presented::Nothing => Verdict::Deny(Denial::NoClientCertificate),
        Presented::Certificate(who) if who == bound_to => Verdict::Bound(thumbprint(who)),
        Presented::Certificate(_) => Verdict::Deny(Denial::ThumbprintMismatch),
    }
}

/// Writes the described header out, with the variation a client may use (scheme case, spaces,
/// other claims, hex case).
fn render(auth: Auth, style: &Style) -> Option<String> {
    let scheme = if style.upper { "BEARER" } else { "Bearer" };
    let spaces = " ".repeat(style.spaces);
    let jws = |payload: &str| format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload));
    let sub = format!(r#""sub":{}"#, serde_json::json!(style.sub));
    let bound = |text: String| jws(&format!(r#"{{{sub},"cnf":{{"x5t#S256":"{text}"}}}}"#));
    let token = match auth {
        Auth::Absent => return None,
        Auth::OtherScheme => return Some("Basic dXNlcjpwYXNz".into()),
        Auth::EmptyBearer => return Some(format!("{scheme}{spaces}")),
        Auth::NotB64Token => return Some(format!("{scheme} abc, def")),
        Auth::BearerBehindBasic => return Some(format!("Basic eDp5,{scheme} abc")),
        Auth::Token(token) => match token {
            Token::Opaque => "2YotnFZFEjr1zCsicMWpAA".to_string(),
            Token::UnboundJwt => jws(&format!("{{{sub}}}")),
            Token::OtherMethod => jws(&format!(r#"{{{sub},"cnf":{{"jkt":"abc"}}}}"#)),
            Token::BoundBase64url(who) => bound(thumbprint(who).to_base64url()),
            Token::BoundHex(who) => {
                let hex = thumbprint(who).to_hex();
                bound(if style.upper { hex.to_uppercase() } else { hex })
            }
            Token::PayloadNotObject => jws(&format!("[{sub}]")),
            // `+` and `/` are b64token characters but not base64url.
            Token::PayloadNotBase64 => "e30.ab+/.c2ln".to_string(),
            Token::DuplicateCnf => jws(r#"{"cnf":{},"cnf":{}}"#),
            Token::CnfNotObject => jws(&format!(r#"{{{sub},"cnf":"x"}}"#)),
            Token::X5tNotString => jws(r#"{"cnf":{"x5t#S256":7}}"#),
            Token::X5tWrongLength => jws(r#"{"cnf":{"x5t#S256":"abc"}}"#),
            Token::DuplicateX5t => {
                let t = thumbprint(Who::A).to_base64url();
                jws(&format!(
                    r#"{{"cnf":{{"x5t#S256":"{t}","x5t#S256":"{t}"}}}}"#
                ))
            }
        },
    };
    Some(format!("{scheme} {spaces}{token}"))
}

#[derive(Debug)]
struct Style {
    upper: bool,
    spaces: usize,
    sub: String,
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::A), Just(Who::B)]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        Just(Token::Opaque),
        Just(Token::UnboundJwt),
        Just(Token::OtherMethod),
        who().prop_map(Token::BoundBase64url),
        who().prop_map(Token::BoundHex),
        Just(Token::PayloadNotObject),
        Just(Token::PayloadNotBase64),
        Just(Token::DuplicateCnf),
        Just(Token::CnfNotObject),
        Just(Token::X5tNotString),
        Just(Token::X5tWrongLength),
        Just(Token::DuplicateX5t),
    ]
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        Just(Auth::Absent),
        Just(Auth::OtherScheme),
        Just(Auth::EmptyBearer),
        Just(Auth::NotB64Token),
        Just(Auth::BearerBehindBasic),
        token().prop_map(Auth::Token),
        token().prop_map(Auth::Token),
    ]
}

fn presented() -> impl Strategy<Value = Presented> {
    prop_oneof![
        Just(Presented::Nothing),
        who().prop_map(Presented::Certificate),
        Just(Presented::Unreadable),
    ]
}

fn encoding() -> impl Strategy<Value = CnfEncoding> {
    prop_oneof![
        Just(CnfEncoding::Auto),
        Just(CnfEncoding::Base64url),
        Just(CnfEncoding::Hex),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decide_agrees_with_the_reference_model(
        require in any::<bool>(),
        encoding in encoding(),
        auth in auth(),
        presented in presented(),
        upper in any::<bool>(),
        spaces in 0usize..3,
        sub in "\\PC{0,12}",
    ) {
        let style = Style { upper, spaces, sub };
        let header = render(auth, &style);
        let rules = Rules {
            require_bound_token: require,
            cnf_encoding: encoding,
            max_token_bytes: certbound::config::DEFAULT_MAX_TOKEN_BYTES,
        };
        let certificate = || match presented {
            Presented::Nothing => Ok(None),
            Presented::Certificate(who) => Ok(Some(thumbprint(who))),
            Presented::Unreadable => Err(Denial::Internal),
        };
        let got = decide(rules, header.as_deref().map(str::as_bytes), certificate);
        prop_assert_eq!(got, expected(require, encoding, auth, presented), "{:?}", header);
    }
}

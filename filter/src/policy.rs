//! The decision table: from what the request carries to a [`Verdict`].

use crate::certificate;
use crate::config::Config;
use crate::confirmation::{CnfEncoding, Confirmation};
use crate::thumbprint::Thumbprint;
use crate::token;
use crate::verdict::{Denial, Verdict};

/// What decides a request's verdict: the plugin configuration, possibly overridden per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub require_bound_token: bool,
    pub cnf_encoding: CnfEncoding,
    pub max_token_bytes: usize,
}

impl From<&Config> for Rules {
    fn from(config: &Config) -> Self {
        Self {
            require_bound_token: config.require_bound_token,
            cnf_encoding: config.cnf_encoding,
            max_token_bytes: config.max_token_bytes,
        }
    }
}

/// Judges one request.
///
/// `client_certificate` yields the thumbprint of the certificate the client presented, `Ok(None)`
/// when it presented none. It is called only for a bound token, so the common unbound case never
/// pays for the lookup.
pub fn decide(
    rules: Rules,
    authorization: Option<&[u8]>,
    client_certificate: impl FnOnce() -> Result<Option<Thumbprint>, Denial>,
) -> Verdict {
    decide_confirmation(
        rules,
        read_authorization(rules, authorization),
        client_certificate,
    )
}

/// The part of [`decide`] that depends on the Authorization header alone: what its bearer token
/// confirms, `Ok(None)` without one. It reads only the plugin-wide [`Rules::cnf_encoding`] and
/// [`Rules::max_token_bytes`], so the filter keeps its answers by the header's bytes.
///
/// A JWS under another scheme, or with none ([`token::other_scheme_jws`]), is judged as a bearer
/// token is when it is bound by `cnf.x5t#S256` (RFC 8705 §3 binds the token, whatever carries
/// it), and a binding there that cannot be read denies. Anything else under another scheme is
/// that scheme's business and counts as no token: a credential that is not a JWT, or one without
/// `x5t#S256` (a DPoP token's `jkt`).
pub fn read_authorization(
    rules: Rules,
    authorization: Option<&[u8]>,
) -> Result<Option<Confirmation>, Denial> {
    let (token, bearer) = match token::bearer(authorization)? {
        Some(token) => (token, true),
        None => match token::other_scheme_jws(authorization) {
            Some(jws) => (jws, false),
            None => return Ok(None),
        },
    };
    if token.len() > rules.max_token_bytes {
        return Err(Denial::TokenTooLarge);
    }
    let confirmation = token::confirmation(token, rules.cnf_encoding);
    if bearer {
        return confirmation.map(Some);
    }
    match confirmation {
        Ok(bound @ Confirmation::X5tS256(_)) => Ok(Some(bound)),
        Err(Denial::MalformedConfirmation) => Err(Denial::MalformedConfirmation),
        Ok(_) | Err(_) => Ok(None),
    }
}

/// Judges one request whose claims were read elsewhere (from jwt_authn's verified payload):
/// `Ok(None)` means no token, otherwise the rest of the table applies as in [`decide`].
pub fn decide_confirmation(
    rules: Rules,
    confirmation: Result<Option<Confirmation>, Denial>,
    client_certificate: impl FnOnce() -> Result<Option<Thumbprint>, Denial>,
) -> Verdict {
    match confirmation.and_then(|c| judge_confirmation(rules, c, client_certificate)) {
        Ok(verdict) => verdict,
        Err(denial) => Verdict::Deny(denial),
    }
}

fn judge_confirmation(
    rules: Rules,
    confirmation: Option<Confirmation>,
    client_certificate: impl FnOnce() -> Result<Option<Thumbprint>, Denial>,
) -> Result<Verdict, Denial> {
    let Some(confirmation) = confirmation else {
        return unbound(rules, Denial::NoToken);
    };
    let Confirmation::X5tS256(bound_to) = confirmation else {
        return unbound(rules, Denial::UnboundToken);
    };

    let presented = client_certificate()?.ok_or(Denial::NoClientCertificate)?;
    if bound_to.matches(&presented) {
        Ok(Verdict::Bound(presented))
    } else {
        Err(Denial::ThumbprintMismatch)
    }
}

/// The thumbprint of the client certificate a trusted proxy forwarded in `header`.
///
/// `Ok(None)` when the header is absent or empty: the client presented no certificate to the
/// proxy. `proxy` is the thumbprint of the proxy's own certificate on this connection, so that an
/// XFCC element this Envoy appended about the proxy is not taken for the client's. With
/// `forwarded_certificate_ca`, the certificate must be issued by one of those CAs and valid at
/// `now` (unix seconds).
pub fn forwarded_thumbprint(
    config: &Config,
    header: Option<&[u8]>,
    proxy: Option<Thumbprint>,
    now: u64,
) -> Result<Option<Thumbprint>, Denial> {
    let Some(value) = header else {
        return Ok(None);
    };
    if value.len() > config.max_certificate_header_bytes {
        return Err(Denial::CertificateHeaderTooLarge);
    }
    let format = config.certificate_header_format;
    let Some(forwarded) =
        certificate::forwarded_certificate(value, format, config.xfcc_element, proxy)?
    else {
        return Ok(None);
    };
    if let Some(cas) = &config.forwarded_certificate_ca {
        cas.verify(&forwarded, now)?;
    }
    Ok(Some(forwarded.thumbprint))
}

fn unbound(rules: Rules, denial: Denial) -> Result<Verdict, Denial> {
    if rules.require_bound_token {
        Err(denial)
    } else {
        Ok(Verdict::Unbound)
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use super::*;

    fn bearer_jwt(payload: &str) -> String {
        format!("Bearer e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    /// A token bound to a certificate is judged whatever scheme carries it, and with none.
    #[test]
    fn bound_tokens_under_other_schemes_are_judged() {
        let a = Thumbprint::of_der(b"client a");
        let b = Thumbprint::of_der(b"client b");
        let rules = Rules::from(&Config::default());
        let jws = bound_to(&a, false);
        let jws = jws.trim_start_matches("Bearer ");
        let unbound = bearer_jwt(r#"{"sub":"a"}"#);
        let unbound = unbound.trim_start_matches("Bearer ");
        let dpop = bearer_jwt(r#"{"sub":"a","cnf":{"jkt":"abc"}}"#);
        let dpop = dpop.trim_start_matches("Bearer ");
        let malformed = bearer_jwt(r#"{"sub":"a","cnf":{"x5t#S256":7}}"#);
        let malformed = malformed.trim_start_matches("Bearer ");

        for value in [
            format!("DPoP {jws}"),
            format!("Token\t{jws}"),
            jws.to_string(),
        ] {
            let judge = |presented| decide(rules, Some(value.as_bytes()), || Ok(presented));
            assert_eq!(judge(Some(a)), Verdict::Bound(a), "{value}");
            assert_eq!(
                judge(Some(b)),
                Verdict::Deny(Denial::ThumbprintMismatch),
                "{value}"
            );
            assert_eq!(
                judge(None),
                Verdict::Deny(Denial::NoClientCertificate),
                "{value}"
            );
        }
        let unread = |value: String| decide(rules, Some(value.as_bytes()), || Ok(Some(b)));
        assert_eq!(
            unread(format!("DPoP {malformed}")),
            Verdict::Deny(Denial::MalformedConfirmation)
        );
        // Still the other scheme's business: not a JWT, not bound, or bound another way.
        for value in [
            "Basic dXNlcjpwYXNz".to_string(),
            format!("DPoP {unbound}"),
            format!("DPoP {dpop}"),
            format!("DPoP e30.{}.c2ln", URL_SAFE_NO_PAD.encode("not json")),
            format!("Digest a={jws}, b=c"),
        ] {
            assert_eq!(unread(value.clone()), Verdict::Unbound, "{value}");
        }
        let too_large = format!("DPoP {jws}{}", "a".repeat(rules.max_token_bytes));
        assert_eq!(unread(too_large), Verdict::Deny(Denial::TokenTooLarge));
    }

    fn bound_to(t: &Thumbprint, hex: bool) -> String {
        let text = if hex { t.to_hex() } else { t.to_base64url() };
        bearer_jwt(&format!(r#"{{"sub":"a","cnf":{{"x5t#S256":"{text}"}}}}"#))
    }

    /// The decision table of the README, row by row, in both modes of `require_bound_token`.
    #[test]
    fn decision_table() {
        let a = Thumbprint::of_der(b"client a");
        let b = Thumbprint::of_der(b"client b");
        let lenient = Rules::from(&Config::default());
        let strict = Rules {
            require_bound_token: true,
            ..lenient
        };

        type Cert = Result<Option<Thumbprint>, Denial>;
        let rows: Vec<(&str, Option<String>, Cert, Verdict, Verdict)> = vec![
            (
                "match",
                Some(bound_to(&a, false)),
                Ok(Some(a)),
                Verdict::Bound(a),
                Verdict::Bound(a),
            ),
            (
                "match, hex",
                Some(bound_to(&a, true)),
                Ok(Some(a)),
                Verdict::Bound(a),
                Verdict::Bound(a),
            ),
            (
                "other certificate",
                Some(bound_to(&a, false)),
                Ok(Some(b)),
                Verdict::Deny(Denial::ThumbprintMismatch),
                Verdict::Deny(Denial::ThumbprintMismatch),
            ),
            (
                "no certificate",
                Some(bound_to(&a, false)),
                Ok(None),
                Verdict::Deny(Denial::NoClientCertificate),
                Verdict::Deny(Denial::NoClientCertificate),
            ),
            (
                "certificate unreadable",
                Some(bound_to(&a, false)),
                Err(Denial::Internal),
                Verdict::Deny(Denial::Internal),
                Verdict::Deny(Denial::Internal),
            ),
            (
                "malformed confirmation",
                Some(bearer_jwt(r#"{"cnf":{"x5t#S256":"short"}}"#)),
                Ok(Some(a)),
                Verdict::Deny(Denial::MalformedConfirmation),
                Verdict::Deny(Denial::MalformedConfirmation),
            ),
            (
                "payload not an object",
                Some(bearer_jwt("[1]")),
                Ok(Some(a)),
                Verdict::Deny(Denial::MalformedToken),
                Verdict::Deny(Denial::MalformedToken),
            ),
            (
                "unbound JWT",
                Some(bearer_jwt(r#"{"sub":"a"}"#)),
                Ok(Some(a)),
                Verdict::Unbound,
                Verdict::Deny(Denial::UnboundToken),
            ),
            (
                "opaque token",
                Some("Bearer 2YotnFZFEjr1zCsicMWpAA".into()),
                Ok(None),
                Verdict::Unbound,
                Verdict::Deny(Denial::UnboundToken),
            ),
            (
                "no header",
                None,
                Ok(Some(a)),
                Verdict::Unbound,
                Verdict::Deny(Denial::NoToken),
            ),
            (
                "other scheme",
                Some("Basic dXNlcjpwYXNz".into()),
                Ok(None),
                Verdict::Unbound,
                Verdict::Deny(Denial::NoToken),
            ),
            (
                "malformed header",
                Some("Bearer a,Bearer b".into()),
                Ok(Some(a)),
                Verdict::Deny(Denial::MalformedAuthorization),
                Verdict::Deny(Denial::MalformedAuthorization),
            ),
        ];
        for (name, header, cert, expect_lenient, expect_strict) in rows {
            let header = header.as_deref().map(str::as_bytes);
            assert_eq!(
                decide(lenient, header, || cert),
                expect_lenient,
                "{name}, lenient"
            );
            assert_eq!(
                decide(strict, header, || cert),
                expect_strict,
                "{name}, strict"
            );
        }
    }

    #[test]
    fn certificate_is_looked_up_only_for_bound_tokens() {
        let config = Config::default();
        let header = bearer_jwt(r#"{"sub":"a"}"#);
        let verdict = decide(
            Rules::from(&config),
            Some(header.as_bytes()),
            || -> Result<_, Denial> { panic!("looked up the certificate for an unbound token") },
        );
        assert_eq!(verdict, Verdict::Unbound);
    }

    #[test]
    fn cnf_encoding_restricts_the_accepted_form() {
        let a = Thumbprint::of_der(b"client a");
        let lenient = Rules::from(&Config::default());
        let hex_only = Rules {
            cnf_encoding: CnfEncoding::Hex,
            ..lenient
        };
        let b64_only = Rules {
            cnf_encoding: CnfEncoding::Base64url,
            ..lenient
        };
        let (b64, hex) = (bound_to(&a, false), bound_to(&a, true));
        let cert = || Ok(Some(a));
        assert_eq!(
            decide(hex_only, Some(hex.as_bytes()), cert),
            Verdict::Bound(a)
        );
        assert_eq!(
            decide(hex_only, Some(b64.as_bytes()), cert),
            Verdict::Deny(Denial::MalformedConfirmation)
        );
        assert_eq!(
            decide(b64_only, Some(b64.as_bytes()), cert),
            Verdict::Bound(a)
        );
        assert_eq!(
            decide(b64_only, Some(hex.as_bytes()), cert),
            Verdict::Deny(Denial::MalformedConfirmation)
        );
    }
}

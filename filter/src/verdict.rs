//! What certbound decides about a request, and how a denial is answered (RFC 6750 §3).

use crate::thumbprint::Thumbprint;

/// The outcome of checking one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The token is bound to the certificate the client presented.
    Bound(Thumbprint),
    /// No certificate binding to check: a plain bearer token, or no token at all, and
    /// `require_bound_token` is off.
    Unbound,
    /// The request must not reach the upstream.
    Deny(Denial),
}

/// Why a request was denied. Each reason has one status, one RFC 6750 error code, one description
/// and one name used in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// `require_bound_token` is on and the request carries no bearer token.
    NoToken,
    /// The Authorization header claims the Bearer scheme but its credential is not a b64token.
    MalformedAuthorization,
    /// The token has three segments like a JWS, but its payload is not a base64url JSON object.
    MalformedToken,
    /// `cnf` is present but holds no well-formed `x5t#S256` thumbprint.
    MalformedConfirmation,
    /// `require_bound_token` is on and the token has no `cnf.x5t#S256`.
    UnboundToken,
    /// The token is bound, but the request came without a client certificate.
    NoClientCertificate,
    /// The token is bound to another certificate than the one presented.
    ThumbprintMismatch,
    /// `claims_source` is `jwt_authn` but jwt_authn stored no verified payload for this request.
    NoVerifiedClaims,
    /// The bearer token is longer than `max_token_bytes`; it was not decoded.
    TokenTooLarge,
    /// The certificate header is longer than `max_certificate_header_bytes`; it was not decoded.
    CertificateHeaderTooLarge,
    /// A trusted proxy forwarded a certificate header that is not a parsable X.509 certificate
    /// in the configured shape.
    MalformedCertificate,
    /// A forwarded certificate is not signed by a configured CA or is outside its validity.
    UntrustedCertificate,
    /// The authorization server reported the token inactive (RFC 7662 §2.2), or its `exp` has
    /// passed.
    InactiveToken,
    /// The introspection endpoint gave no usable answer (timeout, failed connection, a status
    /// other than 200, a body that is not an introspection response). Answered with
    /// `on_error_status`.
    IntrospectionFailed,
    /// certbound could not read what it needs from Envoy. Denied rather than guessed.
    Internal,
}

impl Denial {
    pub const ALL: [Denial; 15] = [
        Denial::NoToken,
        Denial::MalformedAuthorization,
        Denial::MalformedToken,
        Denial::MalformedConfirmation,
        Denial::UnboundToken,
        Denial::NoClientCertificate,
        Denial::ThumbprintMismatch,
        Denial::NoVerifiedClaims,
        Denial::TokenTooLarge,
        Denial::CertificateHeaderTooLarge,
        Denial::MalformedCertificate,
        Denial::UntrustedCertificate,
        Denial::InactiveToken,
        Denial::IntrospectionFailed,
        Denial::Internal,
    ];

    /// Position in [`Denial::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short snake_case name for logs, metrics and filter state.
    pub fn name(self) -> &'static str {
        match self {
            Denial::NoToken => "no_token",
            Denial::MalformedAuthorization => "malformed_authorization",
            Denial::MalformedToken => "malformed_token",
            Denial::MalformedConfirmation => "malformed_confirmation",
            Denial::UnboundToken => "unbound_token",
            Denial::NoClientCertificate => "no_client_certificate",
            Denial::ThumbprintMismatch => "thumbprint_mismatch",
            Denial::NoVerifiedClaims => "no_verified_claims",
            Denial::TokenTooLarge => "token_too_large",
            Denial::CertificateHeaderTooLarge => "certificate_header_too_large",
            Denial::MalformedCertificate => "malformed_certificate",
            Denial::UntrustedCertificate => "untrusted_certificate",
            Denial::InactiveToken => "inactive_token",
            Denial::IntrospectionFailed => "introspection_failed",
            Denial::Internal => "internal_error",
        }
    }

    /// The default status. `IntrospectionFailed` is answered with `on_error_status` instead, which
    /// the `_at` methods take.
    pub fn status(self) -> u32 {
        match self {
            Denial::MalformedAuthorization => 400,
            Denial::Internal => 500,
            Denial::IntrospectionFailed => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 §3.1 error code. `None` for a request with no token at all, which per §3.1
    /// SHOULD NOT get one.
    pub fn error_code(self) -> Option<&'static str> {
        self.error_code_at(self.status())
    }

    /// The error code when answered with `status`: a server error is not the token's fault.
    pub fn error_code_at(self, status: u32) -> Option<&'static str> {
        match self {
            Denial::NoToken => None,
            Denial::MalformedAuthorization => Some("invalid_request"),
            Denial::Internal => Some("server_error"),
            Denial::IntrospectionFailed if status >= 500 => Some("server_error"),
            _ => Some("invalid_token"),
        }
    }

    /// Human-readable reason. Never includes anything taken from the request.
    pub fn description(self) -> &'static str {
        match self {
            Denial::NoToken => "a certificate-bound access token is required",
            Denial::MalformedAuthorization => {
                "the Authorization header is not a well-formed Bearer credential"
            }
            Denial::MalformedToken => "the access token's payload is not a JSON object",
            Denial::MalformedConfirmation => {
                "the access token's cnf claim has no well-formed x5t#S256 thumbprint"
            }
            Denial::UnboundToken => "the access token is not bound to a client certificate",
            Denial::NoClientCertificate => {
                "the access token is bound to a client certificate, but none was presented"
            }
            Denial::ThumbprintMismatch => {
                "the access token is bound to a different client certificate"
            }
            Denial::NoVerifiedClaims => "no verified access token claims for this request",
            Denial::TokenTooLarge => "the access token is longer than this server accepts",
            Denial::CertificateHeaderTooLarge => {
                "the forwarded client certificate is longer than this server accepts"
            }
            Denial::MalformedCertificate => "malformed client certificate",
            Denial::UntrustedCertificate => {
                "the forwarded client certificate is not issued by a trusted CA or is not valid now"
            }
            Denial::InactiveToken => "the access token is not active",
            Denial::IntrospectionFailed => {
                "the access token could not be checked with the authorization server"
            }
            Denial::Internal => "the client certificate could not be checked",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3). Descriptions hold no `"` or `\`, so they
    /// need no quoting beyond the surrounding quotes.
    pub fn www_authenticate(self) -> String {
        self.www_authenticate_at(self.status())
    }

    /// The challenge when answered with `status`.
    pub fn www_authenticate_at(self, status: u32) -> String {
        match self.error_code_at(status) {
            None => "Bearer".to_string(),
            Some(code) => format!(
                "Bearer error=\"{code}\", error_description=\"{}\"",
                self.description()
            ),
        }
    }

    /// The JSON body of the local reply.
    pub fn body(self) -> String {
        self.body_at(self.status())
    }

    /// The body when answered with `status`.
    pub fn body_at(self, status: u32) -> String {
        let body = serde_json::json!({
            "error": self.error_code_at(status).unwrap_or("unauthorized"),
            "error_description": self.description(),
        });
        body.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_has_a_distinct_name_and_a_clean_challenge() {
        let mut names: Vec<_> = Denial::ALL.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Denial::ALL.len());
        for denial in Denial::ALL {
            assert!(!denial.description().contains(['"', '\\']));
            let body: serde_json::Value = serde_json::from_str(&denial.body()).unwrap();
            assert_eq!(body["error_description"], denial.description());
            assert!(denial.www_authenticate().starts_with("Bearer"));
        }
    }

    #[test]
    fn all_lists_every_reason_in_declaration_order() {
        for (position, denial) in Denial::ALL.iter().enumerate() {
            assert_eq!(denial.index(), position, "{denial:?}");
        }
    }

    #[test]
    fn no_token_gets_a_bare_challenge() {
        assert_eq!(Denial::NoToken.www_authenticate(), "Bearer");
        assert_eq!(Denial::NoToken.status(), 401);
        assert_eq!(
            Denial::ThumbprintMismatch.www_authenticate(),
            "Bearer error=\"invalid_token\", error_description=\"the access token is bound to \
             a different client certificate\""
        );
        assert_eq!(Denial::MalformedAuthorization.status(), 400);
    }

    #[test]
    fn introspection_failure_is_a_server_error_unless_answered_401() {
        let failed = Denial::IntrospectionFailed;
        assert_eq!(failed.status(), 503);
        assert_eq!(failed.error_code(), Some("server_error"));
        assert_eq!(failed.error_code_at(401), Some("invalid_token"));
        assert!(failed.body_at(401).contains("invalid_token"));
        assert!(failed.www_authenticate_at(401).contains("invalid_token"));
        assert_eq!(Denial::InactiveToken.status(), 401);
        assert_eq!(Denial::InactiveToken.error_code(), Some("invalid_token"));
    }
}

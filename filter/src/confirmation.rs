//! The token's confirmation claim (RFC 7800 `cnf`) and its `x5t#S256` member (RFC 8705 §3.1).

use serde::Deserialize;

use crate::thumbprint::Thumbprint;

/// Which text forms of `x5t#S256` are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CnfEncoding {
    /// base64url or hex: the two forms differ in length (43 and 64), so neither can be mistaken
    /// for the other.
    #[default]
    Auto,
    /// base64url without padding, as RFC 8705 §3.1 specifies.
    Base64url,
    /// 64 hexadecimal digits, as some WSO2 API Manager versions issue it.
    Hex,
}

/// What a token says about the certificate it is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// No `cnf.x5t#S256`: a plain bearer token.
    Unbound,
    /// Bound to the certificate with this thumbprint.
    X5tS256(Thumbprint),
}

/// Parses the text of `x5t#S256`; `None` when it is not a well-formed SHA-256 thumbprint in an
/// accepted encoding.
pub fn parse_x5t_s256(text: &str, encoding: CnfEncoding) -> Option<Thumbprint> {
    let bytes = text.as_bytes();
    match encoding {
        CnfEncoding::Base64url => Thumbprint::from_base64url(bytes),
        CnfEncoding::Hex => Thumbprint::from_hex(bytes),
        CnfEncoding::Auto => match bytes.len() {
            Thumbprint::BASE64URL_LEN => Thumbprint::from_base64url(bytes),
            Thumbprint::HEX_LEN => Thumbprint::from_hex(bytes),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn encodings_accept_what_they_name() {
        let t = Thumbprint::of_der(b"");
        let table = [
            (B64, CnfEncoding::Auto, Some(t)),
            (HEX, CnfEncoding::Auto, Some(t)),
            (B64, CnfEncoding::Base64url, Some(t)),
            (HEX, CnfEncoding::Base64url, None),
            (HEX, CnfEncoding::Hex, Some(t)),
            (B64, CnfEncoding::Hex, None),
            ("", CnfEncoding::Auto, None),
            ("not a thumbprint", CnfEncoding::Auto, None),
        ];
        for (text, encoding, expected) in table {
            assert_eq!(
                parse_x5t_s256(text, encoding),
                expected,
                "{text} {encoding:?}"
            );
        }
    }
}

//! The SHA-256 thumbprint of a client certificate: what RFC 8705 §3.1 calls `x5t#S256`, and what
//! Envoy reports as `connection.sha256_peer_certificate_digest`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A SHA-256 digest of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    /// Length of the base64url form without padding.
    pub const BASE64URL_LEN: usize = 43;
    /// Length of the hexadecimal form.
    pub const HEX_LEN: usize = 64;

    /// RFC 8705 §3.1: the hash is over the DER encoding of the whole certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hexadecimal digits in either case.
    pub fn from_hex(text: &[u8]) -> Option<Self> {
        if text.len() != Self::HEX_LEN {
            return None;
        }
        let mut bytes = [0u8; 32];
        base16ct::mixed::decode(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Parses base64url without padding (RFC 7515 §2), refusing non-canonical trailing bits.
    pub fn from_base64url(text: &[u8]) -> Option<Self> {
        if text.len() != Self::BASE64URL_LEN {
            return None;
        }
        let mut bytes = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(32) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// Compares in constant time, so a timing side channel says nothing about how close a guess was.
    pub fn matches(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn to_hex(&self) -> String {
        base16ct::lower::encode_string(&self.0)
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({})", self.to_base64url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SHA-256 of the empty string, a well-known vector.
    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_B64: &str = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

    #[test]
    fn digest_of_der_matches_both_encodings() {
        let t = Thumbprint::of_der(b"");
        assert_eq!(t.to_hex(), EMPTY_HEX);
        assert_eq!(t.to_base64url(), EMPTY_B64);
        assert_eq!(Thumbprint::from_hex(EMPTY_HEX.as_bytes()), Some(t));
        assert_eq!(
            Thumbprint::from_hex(EMPTY_HEX.to_uppercase().as_bytes()),
            Some(t)
        );
        assert_eq!(Thumbprint::from_base64url(EMPTY_B64.as_bytes()), Some(t));
    }

    #[test]
    fn refuses_malformed_text() {
        let cases: &[&[u8]] = &[
            b"",
            &EMPTY_HEX.as_bytes()[..63],
            b"g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &EMPTY_B64.as_bytes()[..42],
            b"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
            // Standard alphabet instead of base64url.
            b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            // Same length, last character carries non-zero trailing bits.
            b"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFV",
        ];
        for case in cases {
            assert_eq!(Thumbprint::from_hex(case), None, "{case:?}");
            assert_eq!(Thumbprint::from_base64url(case), None, "{case:?}");
        }
    }

    #[test]
    fn matches_only_itself() {
        let a = Thumbprint::of_der(b"a");
        let b = Thumbprint::of_der(b"b");
        assert!(a.matches(&a));
        assert!(!a.matches(&b));
    }
}

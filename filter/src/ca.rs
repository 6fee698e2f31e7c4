//! `forwarded_certificate_ca`: the CAs a forwarded leaf certificate must be issued by, and the
//! check that it was (signature and validity period).
//!
//! Each configured certificate is a trust anchor (RFC 5280 §6.1.1 (d)): the leaf must be signed
//! directly by one of them, its issuer Name equal to the anchor's subject Name. Anchors are not
//! themselves checked for validity or basic constraints, and intermediates are not chained: to
//! accept leaves of an intermediate CA, configure the intermediate.

use der::asn1::ObjectIdentifier;
use der::{Decode as _, Encode as _, Header, Reader as _, SliceReader};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::pkcs1::{DecodeRsaPublicKey as _, RsaPssParamsOwned, TrailerField};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::{Pkcs1v15Sign, Pss, PublicKey as RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::certificate::{pem_certificates, Forwarded};
use crate::verdict::Denial;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// The CAs of `forwarded_certificate_ca`, parsed once at configure time.
#[derive(Clone, Debug)]
pub struct CaBundle {
    cas: Vec<Ca>,
}

#[derive(Clone, Debug)]
struct Ca {
    /// The subject Name, DER-encoded, to compare with a leaf's issuer.
    subject: Vec<u8>,
    key: PublicKey,
}

#[derive(Clone, Debug)]
enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Parses a PEM bundle of CA certificates. Text outside the `CERTIFICATE` blocks is ignored
/// (RFC 7468 §5.2). The error names the certificate by its position and, when readable, its
/// subject.
pub fn parse_bundle(pem: &str) -> Result<CaBundle, String> {
    let ders = pem_certificates(pem.as_bytes()).map_err(|_| {
        "forwarded_certificate_ca: a CERTIFICATE block is not valid PEM".to_string()
    })?;
    if ders.is_empty() {
        return Err("forwarded_certificate_ca: no PEM CERTIFICATE block found".to_string());
    }
    let cas = ders
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let position = i + 1;
            let cert = Certificate::from_der(der).map_err(|e| {
                format!("forwarded_certificate_ca: certificate {position} is not X.509: {e}")
            })?;
            let tbs = cert.tbs_certificate();
            let subject = tbs.subject();
            let key = public_key(tbs.subject_public_key_info()).ok_or_else(|| {
                format!(
                    "forwarded_certificate_ca: certificate {position} has a key \
                     certbound cannot verify with (supported: RSA, ECDSA P-256 and P-384, Ed25519)"
                )
            })?;
            let subject = subject
                .to_der()
                .map_err(|e| format!("forwarded_certificate_ca: certificate {position}: {e}"))?;
            Ok(Ca { subject, key })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CaBundle { cas })
}

/// Decodes a CA's SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) with the key crate's own decoder.
fn public_key(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Option<PublicKey> {
    let der = spki.to_der().ok()?;
    match spki.algorithm.oid {
        RSA_ENCRYPTION => RsaPublicKey::from_public_key_der(&der)
            .ok()
            .map(PublicKey::Rsa),
        // RFC 4055 §1.2: an id-RSASSA-PSS key may carry parameters that rsa's SPKI decoder
        // refuses; the key itself is still an RFC 8017 RSAPublicKey.
        RSASSA_PSS => RsaPublicKey::from_pkcs1_der(spki.subject_public_key.as_bytes()?)
            .ok()
            .map(PublicKey::Rsa),
        EC_PUBLIC_KEY => p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map(PublicKey::P256)
            .or_else(|_| p384::ecdsa::VerifyingKey::from_public_key_der(&der).map(PublicKey::P384))
            .ok(),
        ED25519 => ed25519_dalek::VerifyingKey::from_public_key_der(&der)
            .ok()
            .map(PublicKey::Ed25519),
        _ => None,
    }
}

impl CaBundle {
    pub fn len(&self) -> usize {
        self.cas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Whether `forwarded` was issued by one of the CAs and `now` (unix seconds) lies within
    /// its validity period. A forwarded thumbprint without the certificate (XFCC `Hash` alone)
    /// cannot be checked and is refused.
    pub fn verify(&self, forwarded: &Forwarded, now: u64) -> Result<(), Denial> {
        let der = forwarded
            .der
            .as_deref()
            .ok_or(Denial::UntrustedCertificate)?;
        if self.issued(der, now).unwrap_or(false) {
            Ok(())
        } else {
            Err(Denial::UntrustedCertificate)
        }
    }

    fn issued(&self, der: &[u8], now: u64) -> Option<bool> {
        let cert = Certificate::from_der(der).ok()?;
        let tbs = cert.tbs_certificate();

        // RFC 5280 §4.1.2.5: the period includes both notBefore and notAfter.
        let validity = tbs.validity();
        let not_before = validity.not_before.to_unix_duration().as_secs();
        let not_after = validity.not_after.to_unix_duration().as_secs();
        if now < not_before || now > not_after {
            return Some(false);
        }

        // RFC 5280 §4.1.1.2: the outer algorithm must equal the one inside the signed part.
        if cert.signature_algorithm() != tbs.signature() {
            return Some(false);
        }
        let signed = tbs_bytes(der)?;
        let signature = cert.signature().as_bytes()?;
        let issuer = tbs.issuer().to_der().ok()?;

        let verified = self
            .cas
            .iter()
            .filter(|ca| ca.subject == issuer)
            .any(|ca| verify(&ca.key, cert.signature_algorithm(), signed, signature));
        Some(verified)
    }
}

/// The TBSCertificate exactly as received: the signature covers these bytes, not a
/// re-encoding of what was decoded.
fn tbs_bytes(der: &[u8]) -> Option<&[u8]> {
    let mut reader = SliceReader::new(der).ok()?;
    Header::decode(&mut reader).ok()?;
    reader.tlv_bytes().ok()
}

fn verify(
    key: &PublicKey,
    algorithm: &AlgorithmIdentifierOwned,
    signed: &[u8],
    signature: &[u8],
) -> bool {
    match (key, algorithm.oid) {
        // RFC 4055 §5: sha*WithRSAEncryption is RSASSA-PKCS1-v1_5.
        (PublicKey::Rsa(key), SHA256_WITH_RSA) => {
            let hashed = Sha256::digest(signed);
            key.verify(Pkcs1v15Sign::new::<Sha256>(), &hashed, signature)
                .is_ok()
        }
        (PublicKey::Rsa(key), SHA384_WITH_RSA) => {
            let hashed = Sha384::digest(signed);
            key.verify(Pkcs1v15Sign::new::<Sha384>(), &hashed, signature)
                .is_ok()
        }
        (PublicKey::Rsa(key), SHA512_WITH_RSA) => {
            let hashed = Sha512::digest(signed);
            key.verify(Pkcs1v15Sign::new::<Sha512>(), &hashed, signature)
                .is_ok()
        }
        (PublicKey::Rsa(key), RSASSA_PSS) => verify_pss(key, algorithm, signed, signature),
        // RFC 5758 §3.2: ecdsa-with-SHA*, the signature a DER Ecdsa-Sig-Value.
        (PublicKey::P256(key), ECDSA_SHA256 | ECDSA_SHA384) => {
            let Ok(signature) = p256::ecdsa::Signature::from_der(signature) else {
                return false;
            };
            key.verify_prehash(&ecdsa_prehash(algorithm.oid, signed), &signature)
                .is_ok()
        }
        (PublicKey::P384(key), ECDSA_SHA256 | ECDSA_SHA384) => {
            let Ok(signature) = p384::ecdsa::Signature::from_der(signature) else {
                return false;
            };
            key.verify_prehash(&ecdsa_prehash(algorithm.oid, signed), &signature)
                .is_ok()
        }
        // RFC 8410 §6: the signature is the 64-byte RFC 8032 signature over the whole message.
        // Strict verification refuses small-order keys and non-canonical signatures.
        (PublicKey::Ed25519(key), ED25519) => {
            let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
                return false;
            };
            key.verify_strict(signed, &signature).is_ok()
        }
        _ => false,
    }
}

fn ecdsa_prehash(algorithm: ObjectIdentifier, signed: &[u8]) -> Vec<u8> {
    if algorithm == ECDSA_SHA384 {
        Sha384::digest(signed).to_vec()
    } else {
        Sha256::digest(signed).to_vec()
    }
}

/// RFC 4055 §3.1: RSASSA-PSS-params name the hash, MGF1 with the same hash (the only mask
/// rsa implements), the salt length and trailer field 1.
fn verify_pss(
    key: &RsaPublicKey,
    algorithm: &AlgorithmIdentifierOwned,
    signed: &[u8],
    signature: &[u8],
) -> bool {
    let Some(Ok(parameters)) = algorithm.parameters.as_ref().map(|p| p.to_der()) else {
        return false;
    };
    let Ok(params) = RsaPssParamsOwned::from_der(&parameters) else {
        return false;
    };
    let mgf_hash = params.mask_gen.parameters.as_ref().map(|hash| hash.oid);
    if params.mask_gen.oid != MGF1
        || mgf_hash != Some(params.hash.oid)
        || params.trailer_field != TrailerField::BC
    {
        return false;
    }
    let salt = usize::from(params.salt_len);
    let result = match params.hash.oid {
        SHA256 => key.verify(
            Pss::<Sha256>::new_with_salt(salt),
            &Sha256::digest(signed),
            signature,
        ),
        SHA384 => key.verify(
            Pss::<Sha384>::new_with_salt(salt),
            &Sha384::digest(signed),
            signature,
        ),
        SHA512 => key.verify(
            Pss::<Sha512>::new_with_salt(salt),
            &Sha512::digest(signed),
            signature,
        ),
        _ => return false,
    };
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use rcgen::{
        SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
        PKCS_RSA_SHA256, PKCS_RSA_SHA384, PKCS_RSA_SHA512,
    };

    use super::*;
    use crate::testpki::{rsa_pss_pair, Pki, NOW};

    fn forwarded(der: &[u8]) -> Forwarded {
        Forwarded::from_der(der.to_vec()).unwrap()
    }

    fn bundle(pems: &[&str]) -> CaBundle {
        parse_bundle(&pems.concat()).unwrap()
    }

    #[test]
    fn verifies_every_signature_algorithm() {
        let algorithms: [(&str, &'static SignatureAlgorithm); 6] = [
            ("rsa pkcs1 sha256", &PKCS_RSA_SHA256),
            ("rsa pkcs1 sha384", &PKCS_RSA_SHA384),
            ("rsa pkcs1 sha512", &PKCS_RSA_SHA512),
            ("ecdsa p-256 sha256", &PKCS_ECDSA_P256_SHA256),
            ("ecdsa p-384 sha384", &PKCS_ECDSA_P384_SHA384),
            ("ed25519", &PKCS_ED25519),
        ];
        for (name, algorithm) in algorithms {
            let pki = Pki::with(algorithm, name);
            let leaf = pki.ec_leaf();
            let cas = bundle(&[&pki.ca_pem()]);
            assert_eq!(cas.verify(&forwarded(&leaf.der), NOW), Ok(()), "{name}");
        }
    }

    #[test]
    fn verifies_rsa_pss() {
        let (ca, leaf) = rsa_pss_pair();
        let cas = bundle(&[&ca.pem]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(cas.verify(&forwarded(&leaf.der), now), Ok(()));

        let other = bundle(&[&Pki::new().ca_pem()]);
        assert_eq!(
            other.verify(&forwarded(&leaf.der), now),
            Err(Denial::UntrustedCertificate)
        );
    }

    #[test]
    fn any_ca_of_the_bundle_may_issue() {
        let (a, b) = (Pki::new(), Pki::with(&PKCS_ED25519, "second CA"));
        let cas = bundle(&["# comment\n", &a.ca_pem(), "\n", &b.ca_pem()]);
        assert_eq!(cas.len(), 2);
        for leaf in [a.rsa_leaf(), b.ec_leaf(), b.ed25519_leaf()] {
            assert_eq!(cas.verify(&forwarded(&leaf.der), NOW), Ok(()));
        }
    }

    #[test]
    fn refuses_what_the_cas_did_not_issue_or_is_not_valid_now() {
        let pki = Pki::new();
        let leaf = pki.leaf_of(&PKCS_ECDSA_P256_SHA256, 2020, 2030);
        let cas = bundle(&[&pki.ca_pem()]);
        let start = 1_577_836_800; // 2020-01-01T00:00:00Z
        let end = 1_893_456_000; // 2030-01-01T00:00:00Z
        assert_eq!(cas.verify(&forwarded(&leaf.der), start), Ok(()));
        assert_eq!(cas.verify(&forwarded(&leaf.der), end), Ok(()));

        // Same subject name, other key: the name matches, the signature does not.
        let impostor = Pki::with(&PKCS_ECDSA_P256_SHA256, "certbound test CA");
        let other = Pki::with(&PKCS_ECDSA_P256_SHA256, "other CA");
        let wrong_cas = bundle(&[&impostor.ca_pem(), &other.ca_pem()]);

        let mut tampered = leaf.der.clone();
        let last = tampered.len() - 3;
        tampered[last] ^= 0x01;
        let mut tampered_tbs = leaf.der.clone();
        let pos = leaf
            .der
            .windows(14)
            .position(|w| w == b"client.example")
            .unwrap();
        tampered_tbs[pos] = b'C';

        let rows: Vec<(&str, &CaBundle, Forwarded, u64)> = vec![
            ("wrong CA", &wrong_cas, forwarded(&leaf.der), NOW),
            ("tampered signature", &cas, forwarded(&tampered), NOW),
            ("tampered tbs", &cas, forwarded(&tampered_tbs), NOW),
            ("expired", &cas, forwarded(&leaf.der), end + 1),
            ("not yet valid", &cas, forwarded(&leaf.der), start - 1),
            (
                "the CA itself",
                &cas,
                forwarded(&pki.ca_der()),
                NOW + 1_000_000_000,
            ),
            (
                "expired leaf",
                &cas,
                forwarded(&pki.leaf_of(&PKCS_ECDSA_P256_SHA256, 2000, 2001).der),
                NOW,
            ),
            (
                "future leaf",
                &cas,
                forwarded(&pki.leaf_of(&PKCS_ECDSA_P256_SHA256, 2100, 2101).der),
                NOW,
            ),
            (
                "thumbprint only",
                &cas,
                Forwarded {
                    thumbprint: crate::thumbprint::Thumbprint::of_der(&leaf.der),
                    der: None,
                },
                NOW,
            ),
        ];
        for (name, cas, leaf, now) in rows {
            assert_eq!(
                cas.verify(&leaf, now),
                Err(Denial::UntrustedCertificate),
                "{name}"
            );
        }
    }

    #[test]
    fn bundle_errors_are_clear() {
        let pki = Pki::new();
        let rows = [
            ("", "no PEM CERTIFICATE block"),
            ("just text", "no PEM CERTIFICATE block"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "not valid PEM",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
                "certificate 1 is not X.509",
            ),
        ];
        for (pem, needle) in rows {
            let message = parse_bundle(pem).unwrap_err();
            assert!(
                message.starts_with("forwarded_certificate_ca: "),
                "{message}"
            );
            assert!(message.contains(needle), "{pem}: {message}");
        }
        let two = format!(
            "{}-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
            pki.ca_pem()
        );
        assert!(parse_bundle(&two).unwrap_err().contains("certificate 2"));
    }
}

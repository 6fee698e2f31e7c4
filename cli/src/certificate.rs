//! Reads a client certificate from a command-line argument: a PEM or DER file, standard input,
//! or a header value in any shape the filter reads.

use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use certbound::certificate::{forwarded_certificate, HeaderFormat};
use certbound::thumbprint::Thumbprint;
use certbound::xfcc::XfccElement;
use der::Decode as _;
use x509_cert::Certificate;

use crate::input::{self, Failure, Origin};

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";

const SHAPES: &str = "PEM, URL-encoded PEM, base64 PEM or DER, RFC 9440 Client-Cert, or XFCC";

/// The certificate that counts: the leaf.
#[derive(Debug)]
pub struct Leaf {
    pub thumbprint: Thumbprint,
    /// RFC 4514 subject; `None` when the input carries only a thumbprint (XFCC `Hash`).
    pub subject: Option<String>,
    /// How many certificates the input holds, the leaf included.
    pub certificates: usize,
}

/// Reads the certificate that `arg` names (see [`input::file_or_value`]).
pub fn read(arg: &str) -> Result<Leaf, Failure> {
    let (bytes, origin) = input::file_or_value(arg)?;

    if origin != Origin::Argument && bytes.first() == Some(&0x30) {
        return der_file(&bytes, &origin);
    }

    header_value(&bytes, &origin)
}

/// A DER file: one certificate, or several concatenated, the leaf first.
fn der_file(bytes: &[u8], origin: &Origin) -> Result<Leaf, Failure> {
    let mut rest = bytes;
    let mut leaf: Option<&[u8]> = None;
    let mut certificates = 0;
    while !rest.is_empty() {
        let (_, after) = Certificate::from_der_partial(rest)
            .map_err(|e| Failure(format!("{origin} is not a DER certificate: {e}")))?;
        // RFC 8705 §3.1: the thumbprint is over the bytes as they are, never a re-encoding.
        let this = rest.get(..rest.len() - after.len()).unwrap_or_default();
        leaf = leaf.or(Some(this));
        certificates += 1;
        rest = after;
    }
    let der = leaf.ok_or_else(|| Failure(format!("{origin} is empty")))?;

    // Through the filter's own reader, so both apply the same limits and compute alike.
    let encoded = STANDARD.encode(der);
    let forwarded = forwarded_certificate(
        encoded.as_bytes(),
        HeaderFormat::Base64Der,
        XfccElement::Last,
        None,
    )
    .map_err(|denial| Failure(format!("{origin}: {}", denial.description())))?
    .ok_or_else(|| Failure(format!("{origin} is empty")))?;

    Ok(Leaf {
        thumbprint: forwarded.thumbprint,
        subject: subject(der),
        certificates,
    })
}

/// A header value, or a text file holding one (PEM above all): read exactly as the filter reads
/// a forwarded certificate header in `auto` format.
fn header_value(bytes: &[u8], origin: &Origin) -> Result<Leaf, Failure> {
    let read = forwarded_certificate(bytes, HeaderFormat::Auto, XfccElement::Last, None);
    let forwarded = match read {
        Ok(Some(forwarded)) => forwarded,
        Ok(None) => return Err(Failure(format!("{origin} holds no certificate"))),
        Err(_) if *origin == Origin::Argument => {
            return Err(Failure(format!(
                "the argument is not a file, and as a header value it is not a certificate in \
                 any shape certbound reads ({SHAPES})"
            )))
        }
        Err(_) => {
            return Err(Failure(format!(
                "{origin} is not a certificate in any shape certbound reads (DER, {SHAPES})"
            )))
        }
    };

    Ok(Leaf {
        thumbprint: forwarded.thumbprint,
        subject: forwarded.der.as_deref().and_then(subject),
        certificates: count_certificates(bytes),
    })
}

fn subject(der: &[u8]) -> Option<String> {
    let certificate = Certificate::from_der(der).ok()?;
    Some(certificate.tbs_certificate().subject().to_string())
}

/// How many PEM certificates a value holds, looking through the encodings the filter unwraps
/// (URL encoding, base64). At least one: the value was already read as a certificate.
fn count_certificates(value: &[u8]) -> usize {
    let readings = [
        value.to_vec(),
        percent_decoded(value),
        base64_decoded(value),
    ];
    readings
        .iter()
        .map(|text| text.windows(BEGIN.len()).filter(|w| *w == BEGIN).count())
        .max()
        .unwrap_or_default()
        .max(1)
}

/// `%XX` escapes decoded, anything else (a broken escape included) kept as it is.
fn percent_decoded(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&byte, after)) = rest.split_first() {
        let escaped = after
            .get(..2)
            .filter(|_| byte == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = after.get(2..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = after;
            }
        }
    }
    out
}

const ANY_PAD: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PAD);
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PAD);

/// The value as base64 (either alphabet, optionally quoted); empty when it is not.
fn base64_decoded(value: &[u8]) -> Vec<u8> {
    let value = value.trim_ascii();
    let value = value
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .unwrap_or(value);
    STANDARD_ANY_PAD
        .decode(value)
        .or_else(|_| URL_SAFE_ANY_PAD.decode(value))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        let table: &[(&str, &[u8])] = &[
            ("a%20b", b"a b"),
            ("%2D%2d", b"--"),
            ("a+b", b"a+b"),
            ("100%", b"100%"),
            ("%zz%4", b"%zz%4"),
        ];
        for (input, expected) in table {
            assert_eq!(percent_decoded(input.as_bytes()), *expected, "{input}");
        }
    }

    #[test]
    fn counts_certificates_through_the_encodings() {
        let one = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let two = one.repeat(2);
        assert_eq!(count_certificates(one.as_bytes()), 1);
        assert_eq!(count_certificates(two.as_bytes()), 2);
        let escaped = two.replace(' ', "%20").replace('\n', "%0A");
        assert_eq!(count_certificates(escaped.as_bytes()), 2);
        let encoded = STANDARD.encode(&two);
        assert_eq!(count_certificates(encoded.as_bytes()), 2);
        assert_eq!(count_certificates(b":MAA=:"), 1);
    }
}

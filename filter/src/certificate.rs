//! The client certificate that a trusted proxy forwards in a request header: the header shapes
//! front proxies use, how `auto` tells them apart, and the leaf certificate they carry.
//!
//! Detection order of [`HeaderFormat::Auto`], on the value with surrounding whitespace removed.
//! Each step looks at a prefix that no later shape can start with, so no value is read two ways:
//!
//! | value starts with                                   | shape                 |
//! |-----------------------------------------------------|-----------------------|
//! | `-----` and holds a `%` anywhere                    | URL-encoded PEM       |
//! | `%2D` (a fully percent-encoded armour)              | URL-encoded PEM       |
//! | `-----`                                             | PEM (any whitespace)  |
//! | `:`                                                 | RFC 9440 byte sequence|
//! | an XFCC key (`By`, `Hash`, `Cert`, ...) and `=`     | XFCC                  |
//! | anything else                                       | base64, then by the decoded first byte: `-` PEM, `0x30` DER |
//!
//! PEM's alphabet (base64, whitespace, armour letters) has no `%`, so a `%` means URL encoding.
//! Base64 has no `:` and no `-----`; and valid base64 never has a `=` before its last two
//! characters, so a value that opens with `Key=` and goes on is never a base64 certificate.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use der::Decode as _;
use serde::Deserialize;
use x509_cert::Certificate;

use crate::thumbprint::Thumbprint;
use crate::verdict::Denial;
use crate::xfcc::{self, XfccElement};

/// Longest header value looked at. Every decoding step only shrinks its input, so this also
/// bounds what is allocated for hostile input.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// Longest leaf certificate accepted, in DER bytes.
pub const MAX_DER_LEN: usize = 16 * 1024;

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END: &[u8] = b"-----END CERTIFICATE-----";

/// How the configured certificate header is encoded (`certificate_header_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderFormat {
    /// Any of the shapes below, told apart as the module documentation describes.
    #[default]
    Auto,
    /// Envoy and Istio `x-forwarded-client-cert`.
    Xfcc,
    /// RFC 9440 `Client-Cert`: a structured-field byte sequence holding the DER.
    Rfc9440,
    /// PEM, multi-line or flattened to one line.
    Pem,
    /// URL-encoded PEM: nginx `$ssl_client_escaped_cert`, AWS ALB `X-Amzn-Mtls-Clientcert`.
    UrlEncodedPem,
    /// Base64 of the whole PEM text (WSO2 `X-WSO2-CLIENT-CERTIFICATE`).
    Base64Pem,
    /// Base64 of the DER: HAProxy, Azure `X-ARR-ClientCert`, Traefik.
    Base64Der,
}

/// The leaf certificate a trusted proxy forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    pub thumbprint: Thumbprint,
    /// The leaf's DER as received. `None` when the header carries only a thumbprint (an XFCC
    /// `Hash` without `Cert`), which then cannot be checked against `forwarded_certificate_ca`.
    pub der: Option<Vec<u8>>,
}

impl Forwarded {
    /// RFC 8705 §3.1: the thumbprint is over the DER as received, never over a re-encoding; the
    /// bytes must be one X.509 certificate and nothing after it.
    pub fn from_der(der: Vec<u8>) -> Result<Self, Denial> {
        if der.len() > MAX_DER_LEN || Certificate::from_der(&der).is_err() {
            return Err(Denial::MalformedCertificate);
        }
        Ok(Self {
            thumbprint: Thumbprint::of_der(&der),
            der: Some(der),
        })
    }
}

/// Reads the forwarded client certificate from a header value.
///
/// `Ok(None)` when the value is empty or blank, or when an XFCC header holds only the element
/// this Envoy appended about the trusted proxy itself (`proxy` is that proxy's thumbprint).
/// Anything that is not one certificate in the expected shape is
/// [`Denial::MalformedCertificate`].
pub fn forwarded_certificate(
    value: &[u8],
    format: HeaderFormat,
    element: XfccElement,
    proxy: Option<Thumbprint>,
) -> Result<Option<Forwarded>, Denial> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_HEADER_LEN {
        return Err(Denial::MalformedCertificate);
    }

    let forwarded = match format {
        HeaderFormat::Auto => return auto(value, element, proxy),
        HeaderFormat::Xfcc => return xfcc::client_certificate(value, element, proxy),
        HeaderFormat::Rfc9440 => rfc9440(value)?,
        HeaderFormat::Pem => pem_leaf(value)?,
        HeaderFormat::UrlEncodedPem => pem_leaf(&percent_decode(value)?)?,
        HeaderFormat::Base64Pem => pem_leaf(&lenient_base64(value)?)?,
        HeaderFormat::Base64Der => Forwarded::from_der(lenient_base64(value)?)?,
    };
    Ok(Some(forwarded))
}

fn auto(
    value: &[u8],
    element: XfccElement,
    proxy: Option<Thumbprint>,
) -> Result<Option<Forwarded>, Denial> {
    let forwarded = if value.starts_with(b"-----") {
        if value.contains(&b'%') {
            pem_leaf(&percent_decode(value)?)?
        } else {
            pem_leaf(value)?
        }
    } else if starts_with_ignore_case(value, b"%2D") {
        pem_leaf(&percent_decode(value)?)?
    } else if value.starts_with(b":") {
        rfc9440(value)?
    } else if xfcc::starts_with_key(value) {
        return xfcc::client_certificate(value, element, proxy);
    } else {
        let decoded = lenient_base64(value)?;
        if decoded.starts_with(b"-") {
            pem_leaf(&decoded)?
        } else {
            Forwarded::from_der(decoded)?
        }
    };
    Ok(Some(forwarded))
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// RFC 9440 §2.2: `Client-Cert` is an RFC 8941 §3.3.5 byte sequence, `:` standard base64 `:`.
/// RFC 8941 §4.2.7 asks parsers not to fail when the `=` padding is missing.
fn rfc9440(value: &[u8]) -> Result<Forwarded, Denial> {
    let inner = value
        .strip_prefix(b":")
        .and_then(|rest| rest.strip_suffix(b":"))
        .ok_or(Denial::MalformedCertificate)?;
    let der = STANDARD_ANY_PAD
        .decode(inner)
        .map_err(|_| Denial::MalformedCertificate)?;
    Forwarded::from_der(der)
}

/// The first certificate of PEM text (RFC 7468 §5) whose line breaks may have been kept,
/// replaced by spaces or tabs, or dropped. A chain's later certificates are not read: only
/// the leaf counts.
///
/// `pem-rfc7468` insists on line breaks inside the armour, so it cannot read the flattened
/// shapes; this finds the armour and hands the base64 body to the `base64` crate.
pub(crate) fn pem_leaf(text: &[u8]) -> Result<Forwarded, Denial> {
    let rest = text
        .trim_ascii()
        .strip_prefix(BEGIN)
        .ok_or(Denial::MalformedCertificate)?;
    let end = rest
        .windows(END.len())
        .position(|window| window == END)
        .ok_or(Denial::MalformedCertificate)?;
    let (body, after) = rest.split_at(end);

    let after = after.get(END.len()..).unwrap_or_default().trim_ascii();
    if !after.is_empty() && !after.starts_with(b"-----BEGIN ") {
        return Err(Denial::MalformedCertificate);
    }

    Forwarded::from_der(pem_body(body)?)
}

/// Every `CERTIFICATE` block of a PEM bundle, in order, as DER. Text between blocks is
/// ignored (RFC 7468 §5.2).
pub(crate) fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, Denial> {
    let mut ders = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.windows(BEGIN.len()).position(|w| w == BEGIN) {
        let after_begin = rest.get(begin + BEGIN.len()..).unwrap_or_default();
        let end = after_begin
            .windows(END.len())
            .position(|w| w == END)
            .ok_or(Denial::MalformedCertificate)?;
        let (body, after) = after_begin.split_at(end);
        ders.push(pem_body(body)?);
        rest = after.get(END.len()..).unwrap_or_default();
    }
    Ok(ders)
}

/// How many PEM certificates a value holds, looking through the encodings `auto` unwraps (URL
/// encoding, base64). At least one: it is asked of a value already read as a certificate. Only
/// the leaf counts for the binding; this tells a person that a chain was seen.
pub fn chain_length(value: &[u8]) -> usize {
    let readings = [
        Ok(value.to_vec()),
        percent_decode(value),
        lenient_base64(value.trim_ascii()),
    ];
    readings
        .iter()
        .filter_map(|reading| pem_certificates(reading.as_deref().ok()?).ok())
        .map(|certificates| certificates.len())
        .max()
        .unwrap_or_default()
        .max(1)
}

/// The base64 between the armour lines, whatever whitespace it was broken with.
fn pem_body(body: &[u8]) -> Result<Vec<u8>, Denial> {
    let body: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    STANDARD_ANY_PAD
        .decode(body)
        .map_err(|_| Denial::MalformedCertificate)
}

/// Decodes `%XX` escapes and nothing else: a literal `+` stays `+`, because AWS ALB leaves the
/// base64 characters `+`, `/` and `=` unescaped and a form decoder would turn `+` into a space.
pub(crate) fn percent_decode(value: &[u8]) -> Result<Vec<u8>, Denial> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let high = bytes.next().and_then(hex_digit);
        let low = bytes.next().and_then(hex_digit);
        match (high, low) {
            (Some(high), Some(low)) => out.push(high << 4 | low),
            _ => return Err(Denial::MalformedCertificate),
        }
    }
    Ok(out)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

const ANY_PAD: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PAD);
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PAD);

/// Base64 as the proxies send it: standard (RFC 4648 §4) or URL-safe (§5) alphabet, padded or
/// not, optionally inside one pair of double quotes. The two alphabets differ only in `+/`
/// against `-_`, so a value holding `-` or `_` is read as URL-safe.
fn lenient_base64(value: &[u8]) -> Result<Vec<u8>, Denial> {
    let value = value
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .unwrap_or(value);
    let engine = if value.iter().any(|&b| b == b'-' || b == b'_') {
        &URL_SAFE_ANY_PAD
    } else {
        &STANDARD_ANY_PAD
    };
    engine
        .decode(value)
        .map_err(|_| Denial::MalformedCertificate)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    #[test]
    fn counts_certificates_through_the_encodings() {
        let one = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let two = one.repeat(2);
        assert_eq!(super::chain_length(one.as_bytes()), 1);
        assert_eq!(super::chain_length(two.as_bytes()), 2);
        let escaped = two.replace(' ', "%20").replace('\n', "%0A");
        assert_eq!(super::chain_length(escaped.as_bytes()), 2);
        let encoded = STANDARD.encode(&two);
        assert_eq!(super::chain_length(encoded.as_bytes()), 2);
        assert_eq!(super::chain_length(b":MAA=:"), 1);
    }

    use super::*;
    use crate::testpki::{self, Pki};

    fn read(value: &str, format: HeaderFormat) -> Result<Option<Forwarded>, Denial> {
        forwarded_certificate(value.as_bytes(), format, XfccElement::Last, None)
    }

    /// nginx `$ssl_client_escaped_cert`: every byte outside the unreserved set is escaped.
    fn nginx_escaped(pem: &str) -> String {
        let mut out = String::new();
        for byte in pem.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    /// AWS ALB: only what is not base64 or armour is escaped, so `+`, `/` and `=` stay.
    fn alb_escaped(pem: &str) -> String {
        pem.replace(' ', "%20").replace('\n', "%0A")
    }

    /// Every shape `auto` must recognise, with the format that names it explicitly.
    fn shapes(pem: &str, der: &[u8]) -> Vec<(&'static str, String, HeaderFormat)> {
        let one_line_spaces = pem.trim_end().replace('\n', " ");
        let one_line_tabs = pem.trim_end().replace('\n', "\t");
        let no_newlines = pem.replace('\n', "");
        vec![
            ("pem", pem.to_string(), HeaderFormat::Pem),
            ("pem crlf", pem.replace('\n', "\r\n"), HeaderFormat::Pem),
            ("pem spaces", one_line_spaces, HeaderFormat::Pem),
            ("pem tabs", one_line_tabs, HeaderFormat::Pem),
            ("pem no newlines", no_newlines, HeaderFormat::Pem),
            (
                "nginx escaped",
                nginx_escaped(pem),
                HeaderFormat::UrlEncodedPem,
            ),
            ("alb escaped", alb_escaped(pem), HeaderFormat::UrlEncodedPem),
            (
                "rfc9440",
                format!(":{}:", STANDARD.encode(der)),
                HeaderFormat::Rfc9440,
            ),
            (
                "rfc9440 unpadded",
                format!(":{}:", STANDARD_NO_PAD.encode(der)),
                HeaderFormat::Rfc9440,
            ),
            ("base64 der", STANDARD.encode(der), HeaderFormat::Base64Der),
            (
                "base64 der unpadded",
                STANDARD_NO_PAD.encode(der),
                HeaderFormat::Base64Der,
            ),
            (
                "base64url der",
                URL_SAFE.encode(der),
                HeaderFormat::Base64Der,
            ),
            (
                "base64url der unpadded",
                URL_SAFE_NO_PAD.encode(der),
                HeaderFormat::Base64Der,
            ),
            (
                "quoted base64 der",
                format!("\"{}\"", STANDARD.encode(der)),
                HeaderFormat::Base64Der,
            ),
            ("base64 pem", STANDARD.encode(pem), HeaderFormat::Base64Pem),
            (
                "base64url pem unpadded",
                URL_SAFE_NO_PAD.encode(pem),
                HeaderFormat::Base64Pem,
            ),
            (
                "quoted base64 pem",
                format!("\"{}\"", STANDARD.encode(pem)),
                HeaderFormat::Base64Pem,
            ),
            (
                "xfcc",
                format!("Hash={};Cert=\"{}\"", testpki::hex(der), nginx_escaped(pem)),
                HeaderFormat::Xfcc,
            ),
            (
                "xfcc hash only",
                format!("Hash={}", testpki::hex(der)),
                HeaderFormat::Xfcc,
            ),
        ]
    }

    #[test]
    fn every_shape_gives_the_same_thumbprint_in_auto_and_explicit_format() {
        let pki = Pki::new();
        for leaf in [pki.rsa_leaf(), pki.ec_leaf()] {
            let expected = Thumbprint::of_der(&leaf.der);
            for (name, value, format) in shapes(&leaf.pem, &leaf.der) {
                for format in [format, HeaderFormat::Auto] {
                    let got = read(&value, format)
                        .unwrap_or_else(|e| panic!("{name} {format:?}: {e:?}"))
                        .unwrap_or_else(|| panic!("{name} {format:?}: no certificate"));
                    assert_eq!(got.thumbprint, expected, "{name} {format:?}");
                    if !name.contains("hash only") {
                        assert_eq!(got.der.as_deref(), Some(&leaf.der[..]), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_plus_in_url_encoded_pem_stays_a_plus() {
        let pki = Pki::new();
        let leaf = pki.leaf_with_plus_in_base64();
        let value = alb_escaped(&leaf.pem);
        assert!(value.contains('+'), "the test needs a + in the base64");
        for format in [HeaderFormat::UrlEncodedPem, HeaderFormat::Auto] {
            let got = read(&value, format).unwrap().unwrap();
            assert_eq!(got.thumbprint, Thumbprint::of_der(&leaf.der));
        }
        // A form decoder would have turned it into a space: that is not the same certificate.
        let spaced = value.replace('+', "%20");
        assert_eq!(
            read(&spaced, HeaderFormat::UrlEncodedPem),
            Err(Denial::MalformedCertificate)
        );
    }

    #[test]
    fn only_the_leaf_of_a_chain_counts() {
        let pki = Pki::new();
        let leaf = pki.ec_leaf();
        let chain = format!("{}{}", leaf.pem, pki.ca_pem());
        let intermediate = Thumbprint::of_der(&pki.ca_der());
        let flattened = chain.replace('\n', " ");
        let values = [
            (chain.clone(), HeaderFormat::Pem),
            (flattened, HeaderFormat::Pem),
            (nginx_escaped(&chain), HeaderFormat::UrlEncodedPem),
            (alb_escaped(&chain), HeaderFormat::UrlEncodedPem),
            (STANDARD.encode(&chain), HeaderFormat::Base64Pem),
        ];
        for (value, format) in values {
            for format in [format, HeaderFormat::Auto] {
                let got = read(&value, format).unwrap().unwrap();
                assert_eq!(got.thumbprint, Thumbprint::of_der(&leaf.der), "{format:?}");
                assert!(!got.thumbprint.matches(&intermediate));
            }
        }
    }

    #[test]
    fn empty_means_no_certificate() {
        for value in ["", " ", "\t \r\n"] {
            for format in [HeaderFormat::Auto, HeaderFormat::Pem, HeaderFormat::Xfcc] {
                assert_eq!(read(value, format), Ok(None), "{value:?} {format:?}");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_one_certificate() {
        let pki = Pki::new();
        let leaf = pki.ec_leaf();
        let der = &leaf.der;
        let mut trailing = der.clone();
        trailing.push(0);
        let truncated = der.get(..der.len() - 1).unwrap();
        let body = leaf
            .pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        let huge = "A".repeat(MAX_HEADER_LEN + 4);
        let big_der = STANDARD.encode(vec![0x30; MAX_DER_LEN + 1]);
        let cases: Vec<(&str, String, HeaderFormat)> = vec![
            ("not base64", "not a certificate".into(), HeaderFormat::Auto),
            (
                "base64 of text",
                STANDARD.encode("hello"),
                HeaderFormat::Auto,
            ),
            (
                "trailing byte",
                STANDARD.encode(&trailing),
                HeaderFormat::Auto,
            ),
            ("truncated", STANDARD.encode(truncated), HeaderFormat::Auto),
            (
                "both alphabets",
                format!("{}-_+/", STANDARD.encode(der)),
                HeaderFormat::Auto,
            ),
            (
                "unbalanced quote",
                format!("\"{}", STANDARD.encode(der)),
                HeaderFormat::Auto,
            ),
            (
                "two quote pairs",
                format!("\"\"{}\"\"", STANDARD.encode(der)),
                HeaderFormat::Auto,
            ),
            (
                "rfc9440 open",
                format!(":{}", STANDARD.encode(der)),
                HeaderFormat::Auto,
            ),
            (
                "rfc9440 url-safe",
                format!(":{}:", URL_SAFE.encode(der)),
                HeaderFormat::Rfc9440,
            ),
            (
                "rfc9440 spaces",
                format!(": {} :", STANDARD.encode(der)),
                HeaderFormat::Rfc9440,
            ),
            ("pem without armour", body.clone(), HeaderFormat::Pem),
            (
                "pem without end",
                format!("{}\n{body}", "-----BEGIN CERTIFICATE-----"),
                HeaderFormat::Auto,
            ),
            (
                "pem other label",
                leaf.pem.replace("CERTIFICATE", "PUBLIC KEY"),
                HeaderFormat::Auto,
            ),
            (
                "pem text before",
                format!("subject=CN=a\n{}", leaf.pem),
                HeaderFormat::Pem,
            ),
            (
                "pem junk after",
                format!("{}junk", leaf.pem),
                HeaderFormat::Auto,
            ),
            (
                "pem broken body",
                leaf.pem.replacen("MII", "MI!", 1),
                HeaderFormat::Auto,
            ),
            (
                "bad escape",
                nginx_escaped(&leaf.pem)
                    .replacen("%20", "%2", 1)
                    .replacen("%0A", "%G", 1),
                HeaderFormat::Auto,
            ),
            (
                "der given as pem",
                STANDARD.encode(der),
                HeaderFormat::Base64Pem,
            ),
            (
                "pem given as der",
                STANDARD.encode(&leaf.pem),
                HeaderFormat::Base64Der,
            ),
            ("pem given as xfcc", leaf.pem.clone(), HeaderFormat::Xfcc),
            (
                "xfcc given as pem",
                format!("Hash={}", testpki::hex(der)),
                HeaderFormat::Pem,
            ),
            ("over the header cap", huge, HeaderFormat::Auto),
            ("over the der cap", big_der, HeaderFormat::Base64Der),
        ];
        for (name, value, format) in cases {
            assert_eq!(
                read(&value, format),
                Err(Denial::MalformedCertificate),
                "{name}"
            );
        }
    }

    #[test]
    fn format_names_deserialise() {
        let table = [
            ("auto", HeaderFormat::Auto),
            ("xfcc", HeaderFormat::Xfcc),
            ("rfc9440", HeaderFormat::Rfc9440),
            ("pem", HeaderFormat::Pem),
            ("url-encoded-pem", HeaderFormat::UrlEncodedPem),
            ("base64-pem", HeaderFormat::Base64Pem),
            ("base64-der", HeaderFormat::Base64Der),
        ];
        for (name, format) in table {
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::from_str::<HeaderFormat>(&json).unwrap(), format);
        }
        for bad in ["\"PEM\"", "\"base64\"", "\"url_encoded_pem\""] {
            assert!(serde_json::from_str::<HeaderFormat>(bad).is_err(), "{bad}");
        }
        assert_eq!(HeaderFormat::default(), HeaderFormat::Auto);
    }

    #[test]
    fn percent_decoding_touches_only_escapes() {
        let table: &[(&str, Option<&[u8]>)] = &[
            ("a+b/c=", Some(b"a+b/c=")),
            ("%2B%2b%20%0A", Some(b"++ \n")),
            ("%", None),
            ("%4", None),
            ("%zz", None),
            ("%%41", None),
        ];
        for (input, expected) in table {
            assert_eq!(
                percent_decode(input.as_bytes()).ok().as_deref(),
                *expected,
                "{input}"
            );
        }
    }
}

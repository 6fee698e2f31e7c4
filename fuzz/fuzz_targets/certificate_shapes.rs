//! Structure-aware: a fixed set of certificates (made once per process), each encoded in every
//! header shape a front proxy uses, then optionally damaged. Undamaged, every shape yields the
//! certificate's thumbprint and DER, in its explicit format and in `auto`. Damaged, a result is
//! always the thumbprint of the DER it carries.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use certbound::certificate::{forwarded_certificate, HeaderFormat};
use certbound::thumbprint::Thumbprint;
use certbound::xfcc::XfccElement;
use libfuzzer_sys::fuzz_target;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};

struct Cert {
    pem: String,
    der: Vec<u8>,
}

/// Leaves of three key types and their CA, so `pem + ca` is a chain.
fn certificates() -> &'static (Vec<Cert>, String) {
    static CERTS: OnceLock<(Vec<Cert>, String)> = OnceLock::new();
    CERTS.get_or_init(|| {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "fuzz CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(params, ca_key);
        let algs: [&'static SignatureAlgorithm; 3] = [
            &PKCS_ECDSA_P256_SHA256,
            &PKCS_ECDSA_P384_SHA384,
            &PKCS_ED25519,
        ];
        let leaves = algs
            .iter()
            .enumerate()
            .map(|(i, alg)| {
                let key = KeyPair::generate_for(alg).expect("leaf key");
                let mut params = CertificateParams::new(Vec::new()).expect("leaf params");
                let name = format!("fuzz client {i}, \"quoted\"; O=x");
                params.distinguished_name.push(DnType::CommonName, name);
                let cert = params.signed_by(&key, &issuer).expect("leaf");
                Cert {
                    pem: cert.pem(),
                    der: cert.der().to_vec(),
                }
            })
            .collect();
        (leaves, ca.pem())
    })
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Lines {
    Lf,
    Crlf,
    Spaces,
    Tabs,
    None,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Shape {
    Pem(Lines),
    NginxEscaped {
        lower_hex: bool,
    },
    AlbEscaped,
    Rfc9440 {
        padded: bool,
    },
    Base64Der {
        url_safe: bool,
        padded: bool,
        quoted: bool,
    },
    Base64Pem {
        url_safe: bool,
        padded: bool,
        quoted: bool,
    },
    Xfcc {
        with_hash: bool,
        upper_hex: bool,
        quoted: bool,
        earlier: bool,
    },
    XfccHashOnly {
        upper_hex: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip { at: u16, xor: u8 },
    Truncate { at: u16 },
    Insert { at: u16, byte: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    cert: u8,
    shape: Shape,
    chain: bool,
    leading_space: bool,
    trailing_newline: bool,
    damage: Vec<Damage>,
}

fn base64(bytes: &[u8], url_safe: bool, padded: bool) -> String {
    match (url_safe, padded) {
        (false, true) => STANDARD.encode(bytes),
        (false, false) => STANDARD_NO_PAD.encode(bytes),
        (true, true) => URL_SAFE.encode(bytes),
        (true, false) => URL_SAFE_NO_PAD.encode(bytes),
    }
}

fn escaped(pem: &str, lower_hex: bool) -> String {
    let mut out = String::new();
    for byte in pem.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else if lower_hex {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn hex(der: &[u8], upper: bool) -> String {
    let t = Thumbprint::of_der(der).to_hex();
    if upper {
        t.to_uppercase()
    } else {
        t
    }
}

/// The header value and the format that names the shape.
fn encode(cert: &Cert, ca: &str, shape: Shape, chain: bool) -> (String, HeaderFormat) {
    let pem = if chain {
        format!("{}{ca}", cert.pem)
    } else {
        cert.pem.clone()
    };
    match shape {
        Shape::Pem(lines) => {
            let text = match lines {
                Lines::Lf => pem,
                Lines::Crlf => pem.replace('\n', "\r\n"),
                Lines::Spaces => pem.trim_end().replace('\n', " "),
                Lines::Tabs => pem.trim_end().replace('\n', "\t"),
                Lines::None => pem.replace('\n', ""),
            };
            (text, HeaderFormat::Pem)
        }
        Shape::NginxEscaped { lower_hex } => {
            (escaped(&pem, lower_hex), HeaderFormat::UrlEncodedPem)
        }
        Shape::AlbEscaped => (
            pem.replace(' ', "%20").replace('\n', "%0A"),
            HeaderFormat::UrlEncodedPem,
        ),
        Shape::Rfc9440 { padded } => (
            format!(":{}:", base64(&cert.der, false, padded)),
            HeaderFormat::Rfc9440,
        ),
        Shape::Base64Der {
            url_safe,
            padded,
            quoted,
        } => {
            let text = base64(&cert.der, url_safe, padded);
            (quote(text, quoted), HeaderFormat::Base64Der)
        }
        Shape::Base64Pem {
            url_safe,
            padded,
            quoted,
        } => {
            let text = base64(pem.as_bytes(), url_safe, padded);
            (quote(text, quoted), HeaderFormat::Base64Pem)
        }
        Shape::Xfcc {
            with_hash,
            upper_hex,
            quoted,
            earlier,
        } => {
            let cert_value = escaped(&pem, false);
            let cert_value = if quoted {
                format!("\"{cert_value}\"")
            } else {
                cert_value
            };
            let mut element =
                format!("By=spiffe://x/y;Cert={cert_value};Subject=\"CN=a, \\\"b\\\"\"");
            if with_hash {
                element = format!("Hash={};{element}", hex(&cert.der, upper_hex));
            }
            if earlier {
                element = format!("Hash={},{element}", "ab".repeat(32));
            }
            (element, HeaderFormat::Xfcc)
        }
        Shape::XfccHashOnly { upper_hex } => (
            format!("Hash={}", hex(&cert.der, upper_hex)),
            HeaderFormat::Xfcc,
        ),
    }
}

fn quote(text: String, quoted: bool) -> String {
    if quoted {
        format!("\"{text}\"")
    } else {
        text
    }
}

fuzz_target!(|input: Input| {
    let (certs, ca) = certificates();
    let cert = &certs[usize::from(input.cert) % certs.len()];
    let chain =
        input.chain && !matches!(input.shape, Shape::Rfc9440 { .. } | Shape::Base64Der { .. });
    let (mut value, format) = encode(cert, ca, input.shape, chain);
    if input.leading_space {
        value.insert(0, ' ');
    }
    if input.trailing_newline {
        value.push('\n');
    }
    let expected = Thumbprint::of_der(&cert.der);
    let hash_only = matches!(input.shape, Shape::XfccHashOnly { .. });

    if input.damage.is_empty() {
        for format in [format, HeaderFormat::Auto] {
            let got = forwarded_certificate(value.as_bytes(), format, XfccElement::Last, None)
                .unwrap_or_else(|e| panic!("{format:?} refused {value:?}: {e:?}"))
                .unwrap_or_else(|| panic!("{format:?} found no certificate in {value:?}"));
            assert_eq!(got.thumbprint, expected, "{format:?}");
            if !hash_only {
                assert_eq!(got.der.as_deref(), Some(&cert.der[..]), "{format:?}");
            }
        }
        return;
    }

    let mut bytes = value.into_bytes();
    for damage in input.damage.iter().take(8) {
        let len = bytes.len().max(1);
        match *damage {
            Damage::Flip { at, xor } => {
                if let Some(b) = bytes.get_mut(usize::from(at) % len) {
                    *b ^= xor;
                }
            }
            Damage::Truncate { at } => bytes.truncate(usize::from(at) % len),
            Damage::Insert { at, byte } => {
                bytes.insert(usize::from(at) % len.min(bytes.len() + 1), byte)
            }
        }
    }
    for format in [format, HeaderFormat::Auto] {
        if let Ok(Some(got)) = forwarded_certificate(&bytes, format, XfccElement::Last, None) {
            match &got.der {
                Some(der) => assert_eq!(got.thumbprint, Thumbprint::of_der(der)),
                None => assert!(
                    hash_only || format == HeaderFormat::Auto || format == HeaderFormat::Xfcc
                ),
            }
        }
    }
});

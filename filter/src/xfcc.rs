//! Envoy's `x-forwarded-client-cert` (XFCC) header: its grammar, which element describes the
//! client, and the certificate or thumbprint that element carries.
//!
//! Grammar, as Envoy writes it (HTTP connection manager, `forward_client_cert_details`):
//! elements are separated by `,`, key=value pairs by `;`, keys are case-insensitive, and a value
//! that holds `,`, `;` or `=` is double-quoted with `\"` inside. The scanner reads quotes before
//! separators, so a quoted Subject such as `"CN=a, OU=b;c"` neither cuts the element nor
//! yields a key.

use serde::Deserialize;

use crate::certificate::{pem_leaf, percent_decode, Forwarded};
use crate::thumbprint::Thumbprint;
use crate::verdict::Denial;

/// The keys Envoy writes. Others are accepted and ignored, but still count for duplicates.
const KNOWN_KEYS: [&str; 7] = ["by", "hash", "cert", "chain", "subject", "uri", "dns"];

/// Which XFCC element describes the client (`xfcc_element`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XfccElement {
    /// The element added by the first proxy, nearest to the client.
    First,
    /// The element added by the last proxy, the one that talks to this Envoy.
    #[default]
    Last,
}

/// One element: the pairs of one hop, keys lowercased, values unquoted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Element {
    /// The value of `key` (any case), unquoted and unescaped.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_slice())
    }

    /// The certificate this element names. `Cert` is URL-encoded PEM whose first certificate is
    /// the leaf; `Hash` is the hex SHA-256 of the leaf's DER and, when both are present, must
    /// agree with `Cert`. `Chain` alone names no leaf.
    pub fn certificate(&self) -> Result<Forwarded, Denial> {
        let hash = match self.get("hash") {
            Some(hex) => Some(Thumbprint::from_hex(hex).ok_or(Denial::MalformedCertificate)?),
            None => None,
        };
        match (self.get("cert"), hash) {
            (Some(cert), hash) => {
                let forwarded = pem_leaf(&percent_decode(cert)?)?;
                match hash {
                    Some(hash) if !hash.matches(&forwarded.thumbprint) => {
                        Err(Denial::MalformedCertificate)
                    }
                    _ => Ok(forwarded),
                }
            }
            (None, Some(thumbprint)) => Ok(Forwarded {
                thumbprint,
                der: None,
            }),
            (None, None) => Err(Denial::MalformedCertificate),
        }
    }
}

/// Whether `value` opens like an XFCC header: a known key, any case, then `=`.
pub fn starts_with_key(value: &[u8]) -> bool {
    let Some(equals) = value.iter().position(|&b| b == b'=') else {
        return false;
    };
    let key = value.get(..equals).unwrap_or_default();
    KNOWN_KEYS
        .iter()
        .any(|known| key.eq_ignore_ascii_case(known.as_bytes()))
}

/// Why a header is not well-formed XFCC. The scanner stops at the first problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Nothing where an element or a pair should be (`,,`, `;;`, a leading or trailing separator).
    Empty,
    /// A pair without `=`, or a key with characters other than letters, digits, `-` and `_`.
    NoKey,
    /// The same key twice in one element.
    DuplicateKey,
    /// A quoted value that does not close, or a `"` inside an unquoted value.
    UnbalancedQuote,
    /// Something other than `;` or `,` after a quoted value.
    AfterQuote,
}

/// Parses a whole header into its elements, first to last.
pub fn parse(value: &[u8]) -> Result<Vec<Element>, Malformed> {
    let mut scanner = Scanner { rest: value };
    let mut elements = Vec::new();
    let mut element = Element::default();
    loop {
        let (key, value) = scanner.pair()?;
        if element.get(&key).is_some() {
            return Err(Malformed::DuplicateKey);
        }
        element.pairs.push((key, value));

        scanner.skip_whitespace();
        match scanner.next() {
            None => {
                elements.push(element);
                return Ok(elements);
            }
            Some(b';') => {}
            Some(b',') => elements.push(std::mem::take(&mut element)),
            Some(b'"') => return Err(Malformed::UnbalancedQuote),
            Some(_) => return Err(Malformed::AfterQuote),
        }
    }
}

struct Scanner<'a> {
    rest: &'a [u8],
}

impl Scanner<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.rest = self.rest.get(1..).unwrap_or_default();
        }
    }

    /// `key=value` or `key="quoted value"`, with optional whitespace before the key.
    fn pair(&mut self) -> Result<(String, Vec<u8>), Malformed> {
        self.skip_whitespace();
        let key_len = self
            .rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .unwrap_or(self.rest.len());
        let (key, rest) = self.rest.split_at(key_len);
        self.rest = rest;
        match (key.is_empty(), self.next()) {
            (_, Some(b'=')) if !key.is_empty() => {}
            (true, None | Some(b',' | b';')) => return Err(Malformed::Empty),
            _ => return Err(Malformed::NoKey),
        }
        let key = String::from_utf8_lossy(key).to_ascii_lowercase();

        let value = if self.peek() == Some(b'"') {
            self.rest = self.rest.get(1..).unwrap_or_default();
            self.quoted()?
        } else {
            self.unquoted()?
        };
        Ok((key, value))
    }

    /// After the opening quote, up to and including the closing one. A backslash takes the next
    /// byte literally, so `\"` is a quote and `\\` a backslash.
    fn quoted(&mut self) -> Result<Vec<u8>, Malformed> {
        let mut value = Vec::new();
        loop {
            match self.next() {
                None => return Err(Malformed::UnbalancedQuote),
                Some(b'"') => return Ok(value),
                Some(b'\\') => value.push(self.next().ok_or(Malformed::UnbalancedQuote)?),
                Some(byte) => value.push(byte),
            }
        }
    }

    /// Up to the next `;` or `,`, which stays for the caller.
    fn unquoted(&mut self) -> Result<Vec<u8>, Malformed> {
        let len = self
            .rest
            .iter()
            .position(|&b| b == b';' || b == b',')
            .unwrap_or(self.rest.len());
        let (value, rest) = self.rest.split_at(len);
        if value.contains(&b'"') {
            return Err(Malformed::UnbalancedQuote);
        }
        self.rest = rest;
        Ok(value.trim_ascii_end().to_vec())
    }
}

/// The client certificate in an XFCC header.
///
/// With [`XfccElement::Last`], an Envoy that terminates mTLS from a trusted proxy and forwards
/// with `APPEND_FORWARD` appends an element about that proxy's own certificate. When the last
/// element names `proxy` (the thumbprint of the connection's peer certificate), it is skipped
/// and the one before it describes the client; if there is none, there is no client
/// certificate.
pub fn client_certificate(
    value: &[u8],
    element: XfccElement,
    proxy: Option<Thumbprint>,
) -> Result<Option<Forwarded>, Denial> {
    let elements = parse(value).map_err(|_| Denial::MalformedCertificate)?;
    let mut elements = elements.iter();
    let selected = match element {
        XfccElement::First => elements.next(),
        XfccElement::Last => match elements.next_back() {
            Some(last) => {
                let forwarded = last.certificate()?;
                if proxy.is_some_and(|proxy| proxy.matches(&forwarded.thumbprint)) {
                    elements.next_back()
                } else {
                    return Ok(Some(forwarded));
                }
            }
            None => None,
        },
    };
    selected.map(Element::certificate).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::{hex, Pki};

    fn pairs(element: &Element) -> Vec<(&str, &str)> {
        element
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn grammar() {
        type Table = &'static [(
            &'static str,
            &'static [&'static [(&'static str, &'static str)]],
        )];
        let table: Table = &[
            ("By=a;Hash=b", &[&[("by", "a"), ("hash", "b")]]),
            ("HASH=b", &[&[("hash", "b")]]),
            ("Hash=a,Hash=b", &[&[("hash", "a")], &[("hash", "b")]]),
            (
                "Hash=a, Hash=b ,Hash=c",
                &[&[("hash", "a")], &[("hash", "b")], &[("hash", "c")]],
            ),
            (
                r#"Subject="CN=a, OU=b;c";Hash=h"#,
                &[&[("subject", "CN=a, OU=b;c"), ("hash", "h")]],
            ),
            (
                r#"Subject="CN=\"q\", Hash=evil;x";Hash=h"#,
                &[&[("subject", r#"CN="q", Hash=evil;x"#), ("hash", "h")]],
            ),
            (
                r#"Subject="a\\";Hash=h"#,
                &[&[("subject", "a\\"), ("hash", "h")]],
            ),
            (r#"Subject="";URI="#, &[&[("subject", ""), ("uri", "")]]),
            (
                "By=spiffe://cluster.local/ns/a/sa/b;Hash=h;URI=spiffe://c/d",
                &[&[
                    ("by", "spiffe://cluster.local/ns/a/sa/b"),
                    ("hash", "h"),
                    ("uri", "spiffe://c/d"),
                ]],
            ),
            (
                "Cert=YWJj==;Hash=h",
                &[&[("cert", "YWJj=="), ("hash", "h")]],
            ),
            ("X-Custom=1;Hash=h", &[&[("x-custom", "1"), ("hash", "h")]]),
        ];
        for (header, expected) in table {
            let elements = parse(header.as_bytes()).unwrap_or_else(|e| panic!("{header}: {e:?}"));
            let got: Vec<_> = elements.iter().map(pairs).collect();
            let expected: Vec<Vec<(&str, &str)>> = expected.iter().map(|e| e.to_vec()).collect();
            assert_eq!(got, expected, "{header}");
        }
    }

    #[test]
    fn refuses_malformed_headers() {
        let table = [
            ("", Malformed::Empty),
            ("Hash=a,,Hash=b", Malformed::Empty),
            ("Hash=a,", Malformed::Empty),
            (",Hash=a", Malformed::Empty),
            ("Hash=a;;By=b", Malformed::Empty),
            ("Hash=a;", Malformed::Empty),
            ("Hash", Malformed::NoKey),
            ("Hash=a;By", Malformed::NoKey),
            ("Hash=a;=b", Malformed::NoKey),
            ("Ha sh=a", Malformed::NoKey),
            ("Hash=a;hash=b", Malformed::DuplicateKey),
            ("Hash=a;By=b;HASH=a", Malformed::DuplicateKey),
            (r#"Subject="CN=a;Hash=b"#, Malformed::UnbalancedQuote),
            (r#"Subject="CN=a\";Hash=b"#, Malformed::UnbalancedQuote),
            (r#"Subject="a\"#, Malformed::UnbalancedQuote),
            (r#"Subject=a"b";Hash=h"#, Malformed::UnbalancedQuote),
            (r#"Subject="a""b";Hash=h"#, Malformed::UnbalancedQuote),
            (r#"Subject="a"b;Hash=h"#, Malformed::AfterQuote),
        ];
        for (header, expected) in table {
            assert_eq!(parse(header.as_bytes()), Err(expected), "{header}");
        }
    }

    #[test]
    fn quoted_text_is_never_a_key() {
        let elements = parse(br#"By=a;Subject="Hash=0000;Cert=x, Hash=1111""#).unwrap();
        assert_eq!(elements.len(), 1);
        let element = elements.first().unwrap();
        assert_eq!(element.get("hash"), None);
        assert_eq!(element.get("cert"), None);
    }

    #[test]
    fn detects_the_opening_key() {
        for yes in [
            "By=a",
            "hash=00",
            "CERT=\"x\"",
            "Chain=",
            "Subject=\"\"",
            "uri=a",
            "DNS=a",
        ] {
            assert!(starts_with_key(yes.as_bytes()), "{yes}");
        }
        for no in [
            "MIIB",
            "X-Custom=1;Hash=a",
            "=Hash",
            "Hashes=1",
            ":abc:",
            "-----BEGIN",
        ] {
            assert!(!starts_with_key(no.as_bytes()), "{no}");
        }
    }

    fn escaped(pem: &str) -> String {
        pem.replace(' ', "%20")
            .replace('\n', "%0A")
            .replace('=', "%3D")
    }

    #[test]
    fn selects_the_client_element() {
        let pki = Pki::new();
        let (client, proxy, other) = (pki.rsa_leaf(), pki.ec_leaf(), pki.ec_leaf());
        let [c, p, o] = [&client, &proxy, &other].map(|leaf| hex(&leaf.der));
        let client_t = Thumbprint::of_der(&client.der);
        let proxy_t = Thumbprint::of_der(&proxy.der);
        let other_t = Thumbprint::of_der(&other.der);
        let cert = escaped(&client.pem);
        let subject = r#"Subject="CN=client, \"quoted\"; semi=colon, O=x""#;

        type Row = (
            &'static str,
            String,
            XfccElement,
            Option<Thumbprint>,
            Option<Thumbprint>,
        );
        let rows: Vec<Row> = vec![
            (
                "one element",
                format!("Hash={c}"),
                XfccElement::Last,
                None,
                Some(client_t),
            ),
            (
                "cert and hash",
                format!("By=x;Hash={c};Cert=\"{cert}\";{subject}"),
                XfccElement::Last,
                None,
                Some(client_t),
            ),
            (
                "cert only",
                format!("{subject};Cert=\"{cert}\""),
                XfccElement::Last,
                None,
                Some(client_t),
            ),
            (
                "cert unquoted",
                format!("Cert={cert};Hash={c}"),
                XfccElement::Last,
                None,
                Some(client_t),
            ),
            (
                "last of two",
                format!("Hash={o},Hash={c}"),
                XfccElement::Last,
                None,
                Some(client_t),
            ),
            (
                "first of two",
                format!("Hash={c},Hash={o}"),
                XfccElement::First,
                None,
                Some(client_t),
            ),
            (
                "first, proxy not skipped",
                format!("Hash={p},Hash={c}"),
                XfccElement::First,
                Some(proxy_t),
                Some(proxy_t),
            ),
            (
                "proxy appended",
                format!("{subject};Hash={c},By=e;Hash={p}"),
                XfccElement::Last,
                Some(proxy_t),
                Some(client_t),
            ),
            (
                "proxy appended, cert",
                format!("Hash={c},Cert=\"{}\"", escaped(&proxy.pem)),
                XfccElement::Last,
                Some(proxy_t),
                Some(client_t),
            ),
            (
                "proxy skipped once",
                format!("Hash={p},Hash={p}"),
                XfccElement::Last,
                Some(proxy_t),
                Some(proxy_t),
            ),
            (
                "proxy not last",
                format!("Hash={p},Hash={c}"),
                XfccElement::Last,
                Some(proxy_t),
                Some(client_t),
            ),
            (
                "only the proxy",
                format!("By=e;Hash={p}"),
                XfccElement::Last,
                Some(proxy_t),
                None,
            ),
            (
                "three elements",
                format!("Hash={o},Hash={c},Hash={p}"),
                XfccElement::Last,
                Some(proxy_t),
                Some(client_t),
            ),
            (
                "other proxy",
                format!("Hash={c},Hash={o}"),
                XfccElement::Last,
                Some(proxy_t),
                Some(other_t),
            ),
        ];
        for (name, header, element, proxy, expected) in rows {
            let got = client_certificate(header.as_bytes(), element, proxy)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(got.map(|f| f.thumbprint), expected, "{name}");
        }
    }

    #[test]
    fn cert_gives_der_and_hash_alone_does_not() {
        let pki = Pki::new();
        let leaf = pki.ec_leaf();
        let with_cert = format!("Cert=\"{}\"", escaped(&leaf.pem));
        let got = client_certificate(with_cert.as_bytes(), XfccElement::Last, None);
        assert_eq!(got.unwrap().unwrap().der, Some(leaf.der.clone()));
        let hash_only = format!("Hash={}", hex(&leaf.der));
        let got = client_certificate(hash_only.as_bytes(), XfccElement::Last, None);
        assert_eq!(got.unwrap().unwrap().der, None);
    }

    #[test]
    fn refuses_elements_that_name_no_certificate() {
        let pki = Pki::new();
        let (leaf, intermediate) = (pki.ec_leaf(), pki.ca_der());
        let cert = escaped(&leaf.pem);
        let chain = escaped(&format!("{}{}", leaf.pem, pki.ca_pem()));
        let rows = [
            ("chain only", format!("Chain=\"{chain}\"")),
            ("subject only", "By=a;Subject=\"CN=a\"".to_string()),
            (
                "hash disagrees",
                format!("Cert=\"{cert}\";Hash={}", hex(&intermediate)),
            ),
            ("hash not hex", format!("Cert=\"{cert}\";Hash=zz")),
            ("hash short", "Hash=abcd".to_string()),
            ("hash empty", "Hash=".to_string()),
            ("cert empty", "Cert=\"\"".to_string()),
            ("cert not pem", "Cert=\"MIIB\"".to_string()),
            ("cert bad escape", format!("Cert=\"{}%\"", cert)),
            (
                "duplicate hash",
                format!("Hash={0};Hash={0}", hex(&leaf.der)),
            ),
            (
                "malformed earlier element",
                format!("Hash=a;;,Hash={}", hex(&leaf.der)),
            ),
        ];
        for (name, header) in rows {
            for element in [XfccElement::First, XfccElement::Last] {
                let got = client_certificate(header.as_bytes(), element, None);
                assert_eq!(got, Err(Denial::MalformedCertificate), "{name} {element:?}");
            }
        }
    }

    #[test]
    fn chain_does_not_replace_cert_and_the_leaf_counts() {
        let pki = Pki::new();
        let leaf = pki.ec_leaf();
        let chain = escaped(&format!("{}{}", leaf.pem, pki.ca_pem()));
        let header = format!("Cert=\"{chain}\";Chain=\"{chain}\"");
        let got = client_certificate(header.as_bytes(), XfccElement::Last, None);
        let got = got.unwrap().unwrap().thumbprint;
        assert_eq!(got, Thumbprint::of_der(&leaf.der));
        assert!(!got.matches(&Thumbprint::of_der(&pki.ca_der())));
    }

    #[test]
    fn element_names_deserialise() {
        assert_eq!(
            serde_json::from_str::<XfccElement>("\"first\"").unwrap(),
            XfccElement::First
        );
        assert_eq!(
            serde_json::from_str::<XfccElement>("\"last\"").unwrap(),
            XfccElement::Last
        );
        assert!(serde_json::from_str::<XfccElement>("\"Last\"").is_err());
        assert_eq!(XfccElement::default(), XfccElement::Last);
    }
}

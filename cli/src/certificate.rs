//! Reads a client certificate from a command-line argument: a PEM or DER file, standard input,
//! or a header value in any shape the filter reads.

use certbound::certificate::{chain_length, forwarded_certificate, Forwarded, HeaderFormat};
use certbound::thumbprint::Thumbprint;
use certbound::xfcc::XfccElement;
use der::Decode as _;
use x509_cert::Certificate;

use crate::input::{self, Failure, Origin};

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
    let forwarded = Forwarded::from_der(der.to_vec())
        .map_err(|denial| Failure(format!("{origin}: {}", denial.description())))?;

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
        certificates: chain_length(bytes),
    })
}

fn subject(der: &[u8]) -> Option<String> {
    let certificate = Certificate::from_der(der).ok()?;
    Some(certificate.tbs_certificate().subject().to_string())
}

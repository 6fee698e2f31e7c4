//! `xfcc::parse` and `xfcc::client_certificate`, for both element choices, with and without a
//! proxy thumbprint to skip. A certificate read from a `Cert` value has the thumbprint of its DER,
//! and a header the grammar refuses names no certificate.
#![no_main]

use certbound::thumbprint::Thumbprint;
use certbound::xfcc::{self, XfccElement};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = xfcc::parse(data);
    if let Ok(elements) = &parsed {
        assert!(!elements.is_empty());
    }
    // The proxy to skip: the Hash of the last element, when it has one, so the skip is exercised.
    let last_hash = parsed
        .as_ref()
        .ok()
        .and_then(|elements| elements.last())
        .and_then(|element| element.get("hash"))
        .and_then(Thumbprint::from_hex);
    for element in [XfccElement::First, XfccElement::Last] {
        for proxy in [None, last_hash] {
            let got = xfcc::client_certificate(data, element, proxy);
            if parsed.is_err() {
                assert!(got.is_err(), "a malformed header names no certificate");
            }
            if let Ok(Some(forwarded)) = got {
                if let Some(der) = &forwarded.der {
                    assert_eq!(forwarded.thumbprint, Thumbprint::of_der(der));
                }
            }
        }
    }
});

//! `certificate::forwarded_certificate` on arbitrary bytes, in every `HeaderFormat`. A result
//! names the thumbprint of the DER it carries; an explicit format and `auto` never read one value
//! as two different certificates; values over the cap are refused.
#![no_main]

use certbound::certificate::{forwarded_certificate, HeaderFormat, MAX_DER_LEN, MAX_HEADER_LEN};
use certbound::thumbprint::Thumbprint;
use certbound::xfcc::XfccElement;
use libfuzzer_sys::fuzz_target;

const EXPLICIT: [HeaderFormat; 6] = [
    HeaderFormat::Xfcc,
    HeaderFormat::Rfc9440,
    HeaderFormat::Pem,
    HeaderFormat::UrlEncodedPem,
    HeaderFormat::Base64Pem,
    HeaderFormat::Base64Der,
];

fuzz_target!(|data: &[u8]| {
    for element in [XfccElement::First, XfccElement::Last] {
        let auto = forwarded_certificate(data, HeaderFormat::Auto, element, None);
        check(data, &auto);
        for format in EXPLICIT {
            let got = forwarded_certificate(data, format, element, None);
            check(data, &got);
            if let (Ok(Some(a)), Ok(Some(b))) = (&got, &auto) {
                assert_eq!(a.thumbprint, b.thumbprint, "{format:?} and auto disagree");
            }
        }
    }
});

fn check(
    value: &[u8],
    got: &Result<Option<certbound::certificate::Forwarded>, certbound::verdict::Denial>,
) {
    if value.trim_ascii().len() > MAX_HEADER_LEN {
        assert!(got.is_err(), "over the header cap");
    }
    if value.trim_ascii().is_empty() {
        assert_eq!(got, &Ok(None));
    }
    if let Ok(Some(forwarded)) = got {
        if let Some(der) = &forwarded.der {
            assert!(der.len() <= MAX_DER_LEN);
            assert_eq!(forwarded.thumbprint, Thumbprint::of_der(der));
        }
    }
}

//! `confirmation::parse_x5t_s256`: what it accepts is exactly the canonical text of a thumbprint
//! in an accepted encoding (hex in either case).
#![no_main]

use certbound::confirmation::{parse_x5t_s256, CnfEncoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base64url = parse_x5t_s256(text, CnfEncoding::Base64url);
    let hex = parse_x5t_s256(text, CnfEncoding::Hex);
    let auto = parse_x5t_s256(text, CnfEncoding::Auto);

    if let Some(t) = base64url {
        assert_eq!(t.to_base64url(), text, "base64url is canonical");
    }
    if let Some(t) = hex {
        assert_eq!(t.to_hex(), text.to_ascii_lowercase(), "hex round-trips");
    }
    assert!(base64url.is_none() || hex.is_none(), "no text is both");
    assert_eq!(
        auto,
        base64url.or(hex),
        "auto is either form, and only those"
    );
});

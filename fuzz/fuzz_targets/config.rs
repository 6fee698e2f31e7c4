//! `config::Config::parse`: never accepts what is not one JSON object (or blank), and parses the
//! same bytes to the same configuration every time.
#![no_main]

use certbound::config::Config;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = Config::parse(data) else {
        return;
    };
    let trimmed = data.trim_ascii();
    if !trimmed.is_empty() {
        let value: Value =
            serde_json::from_slice(trimmed).expect("an accepted configuration is JSON");
        assert!(value.is_object(), "an accepted configuration is an object");
    }
    // Config holds parsed keys (the CA bundle) and has no PartialEq; its rendering is exact.
    let again = Config::parse(data).expect("parsed once, parses again");
    assert_eq!(format!("{again:?}"), format!("{config:?}"));
});

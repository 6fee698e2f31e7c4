//! `exempt_paths`: rules as the configuration would hold them, and request paths. A path is
//! exempt only when it is in normal form and a rule names it exactly or as a prefix.
#![no_main]

use arbitrary::Arbitrary;
use certbound::exempt::{is_exempt, PathRule};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<String>,
    path: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let rules: Vec<PathRule> = input
        .rules
        .iter()
        .filter_map(|rule| serde_json::from_value(serde_json::json!(rule)).ok())
        .collect();
    for rule in &rules {
        let (PathRule::Exact(p) | PathRule::Prefix(p)) = rule;
        assert!(p.starts_with('/') && !p.contains(['*', '%', '?', '\\', ';', '#']));
    }
    if !is_exempt(&rules, &input.path) {
        return;
    }
    let path = input.path.split(|&b| b == b'?').next().unwrap_or_default();
    assert_eq!(path.first(), Some(&b'/'));
    assert!(!path.iter().any(|b| b"%\\;#".contains(b)));
    assert!(!path.windows(2).any(|pair| pair == b"//"));
    assert!(!path.split(|&b| b == b'/').any(|s| s == b"." || s == b".."));
    assert!(rules.iter().any(|rule| match rule {
        PathRule::Exact(exact) => path == exact.as_bytes(),
        PathRule::Prefix(prefix) => path.starts_with(prefix.as_bytes()),
    }));
});

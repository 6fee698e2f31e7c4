//! `route::parse` on the proxy-wasm pairs serialisation of route metadata. What it accepts
//! serialises back to a map that reads the same.
#![no_main]

use certbound::config::Mode;
use certbound::route::{self, RoutePolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = route::parse(data) else {
        return;
    };
    assert_eq!(route::parse(&serialize(&policy)), Ok(policy));
});

fn serialize(policy: &RoutePolicy) -> Vec<u8> {
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    if let Some(mode) = policy.mode {
        let value: &[u8] = match mode {
            None => b"off",
            Some(Mode::Enforce) => b"enforce",
            Some(Mode::Audit) => b"audit",
        };
        pairs.push((b"mode", value));
    }
    if let Some(require) = policy.require_bound_token {
        pairs.push((b"require_bound_token", if require { &[1] } else { &[0] }));
    }
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (key, value) in &pairs {
        out.extend((key.len() as u32).to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
    }
    for (key, value) in &pairs {
        out.extend(*key);
        out.push(0);
        out.extend(*value);
        out.push(0);
    }
    out
}

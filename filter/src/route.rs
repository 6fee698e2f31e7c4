//! Per-route policy: a route's metadata under `filter_metadata.certbound` can switch certbound
//! off for that route, or set its mode and `require_bound_token`.
//!
//! ```yaml
//! routes:
//! - match: { prefix: "/public/" }
//!   metadata:
//!     filter_metadata:
//!       certbound: { mode: "off" }
//! ```
//!
//! Envoy hands the struct to the filter as a proxy-wasm pairs map ([`crate::pairs`]): strings
//! arrive as their bytes, booleans as one byte. Anything unexpected is an error, and the request
//! is denied: a route whose policy cannot be read is not run with a guess.

use crate::config::Mode;
use crate::pairs;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// `None`: the plugin's mode. `Some(None)`: certbound is off for this route.
    pub mode: Option<Option<Mode>>,
    pub require_bound_token: Option<bool>,
}

/// Parses the serialised `filter_metadata.certbound` struct.
pub fn parse(serialized: &[u8]) -> Result<RoutePolicy, String> {
    let mut policy = RoutePolicy::default();
    for (key, value) in pairs::parse(serialized).ok_or("route metadata is not a map")? {
        match key {
            b"mode" => {
                policy.mode = Some(match value {
                    b"off" => None,
                    b"enforce" => Some(Mode::Enforce),
                    b"audit" => Some(Mode::Audit),
                    _ => {
                        return Err(
                            "route metadata certbound.mode is not off, enforce or audit".into()
                        )
                    }
                })
            }
            b"require_bound_token" => {
                policy.require_bound_token = Some(match value {
                    [1] => true,
                    [0] => false,
                    _ => {
                        return Err(
                            "route metadata certbound.require_bound_token is not a bool".into()
                        )
                    }
                })
            }
            _ => {
                return Err(format!(
                    "route metadata has an unknown key certbound.{}",
                    String::from_utf8_lossy(key)
                ))
            }
        }
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(k.as_bytes());
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_what_envoy_sends() {
        // Captured from Envoy 1.40 for {mode: audit, require_bound_token: true}.
        let captured = [
            2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 19, 0, 0, 0, 1, 0, 0, 0, 109, 111, 100, 101, 0, 97,
            117, 100, 105, 116, 0, 114, 101, 113, 117, 105, 114, 101, 95, 98, 111, 117, 110, 100,
            95, 116, 111, 107, 101, 110, 0, 1, 0,
        ];
        assert_eq!(
            parse(&captured),
            Ok(RoutePolicy {
                mode: Some(Some(Mode::Audit)),
                require_bound_token: Some(true)
            })
        );
        let off = serialize(&[("mode", b"off")]);
        assert_eq!(parse(&off).unwrap().mode, Some(None));
        assert_eq!(parse(&serialize(&[])), Ok(RoutePolicy::default()));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let cases = [
            serialize(&[("mode", b"permissive")]),
            serialize(&[("require_bound_token", b"true")]),
            serialize(&[("requre_bound_token", &[1])]),
            vec![1, 0, 0, 0],
            vec![
                1, 0, 0, 0, 4, 0, 0, 0, 200, 0, 0, 0, b'm', b'o', b'd', b'e', 0,
            ],
            [serialize(&[("mode", b"off")]), vec![0]].concat(),
            vec![],
        ];
        for case in cases {
            assert!(parse(&case).is_err(), "{case:?}");
        }
    }
}

//! Trusted proxies: who may supply the forwarded certificate header. A downstream connection is
//! trusted by its source address (CIDR ranges) or by the identity in its mTLS peer certificate
//! (a URI or DNS SAN), or by everyone when the operator opts in with `any`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

/// An address range: a network address and a prefix length.
///
/// A bare address is a single host (`/32` or `/128`). Host bits set below the prefix
/// (`10.1.2.3/8`) are refused rather than masked: such a typo would trust a far larger range
/// than its author meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` lies in the range. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, how a
    /// dual-stack socket reports an IPv4 peer) is compared as the IPv4 address it maps.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(addr) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(addr) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// Why a CIDR string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrError {
    NotAnAddress,
    BadPrefix,
    HostBitsSet,
    /// Sources are compared as IPv4 when IPv4-mapped, so such a range could never match.
    Ipv4Mapped,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrError::NotAnAddress => "is not an address or CIDR",
            CidrError::BadPrefix => "has a prefix length that is not 0-32 (IPv4) or 0-128 (IPv6)",
            CidrError::HostBitsSet => "has bits set after the prefix length; write the network",
            CidrError::Ipv4Mapped => "is an IPv4-mapped IPv6 range; write the IPv4 range",
        })
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = IpAddr::from_str(address).map_err(|_| CidrError::NotAnAddress)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // u8::from_str would take "+8"; a prefix is digits only.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| CidrError::BadPrefix)?
            }
            Some(_) => return Err(CidrError::BadPrefix),
        };
        if prefix > max {
            return Err(CidrError::BadPrefix);
        }
        if network.to_canonical() != network {
            return Err(CidrError::Ipv4Mapped);
        }
        let cidr = Cidr { network, prefix };
        if cidr.masked() != network {
            return Err(CidrError::HostBitsSet);
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// The network address with every bit after the prefix cleared.
    fn masked(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(net) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from((u32::from(net) & mask).to_be_bytes())
            }
            IpAddr::V6(net) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::from((u128::from(net) & mask).to_be_bytes())
            }
        }
    }
}

/// Parses a source address as Envoy reports `source.address`: `127.0.0.1:41000`,
/// `[::1]:41000`, or an address without a port. `None` for anything else (a pipe path, an
/// internal listener name), which no CIDR matches.
pub fn source_ip(source: &str) -> Option<IpAddr> {
    if let Ok(socket) = SocketAddr::from_str(source) {
        return Some(socket.ip());
    }
    let bare = source
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(source);
    IpAddr::from_str(bare).ok()
}

/// `trusted_proxies` as written in the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedProxiesConfig {
    pub cidrs: Vec<String>,
    pub peer_identities: Vec<String>,
    pub any: bool,
}

/// Who may supply the forwarded certificate header, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    pub cidrs: Vec<Cidr>,
    /// URI or DNS SANs of the downstream mTLS peer certificate, compared exactly.
    pub peer_identities: Vec<String>,
    /// Everyone is a trusted proxy: for networks where only the proxy can reach Envoy.
    pub any: bool,
}

impl TryFrom<TrustedProxiesConfig> for TrustedProxies {
    /// Names the key and the bad value, e.g.
    /// `trusted_proxies.cidrs: "10.0.0.300/8" is not an address or CIDR`.
    type Error = String;

    fn try_from(raw: TrustedProxiesConfig) -> Result<Self, String> {
        let cidrs = raw
            .cidrs
            .iter()
            .map(|text| {
                Cidr::from_str(text).map_err(|e| format!("trusted_proxies.cidrs: {text:?} {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(bad) = raw
            .peer_identities
            .iter()
            .find(|id| id.is_empty() || id.trim() != id.as_str())
        {
            return Err(format!(
                "trusted_proxies.peer_identities: {bad:?} is empty or has surrounding whitespace"
            ));
        }
        Ok(Self {
            cidrs,
            peer_identities: raw.peer_identities,
            any: raw.any,
        })
    }
}

impl TrustedProxies {
    /// Whether no connection can ever be trusted: a `certificate_header` with this is refused.
    pub fn trusts_nobody(&self) -> bool {
        !self.any && self.cidrs.is_empty() && self.peer_identities.is_empty()
    }

    /// Whether the downstream connection is a trusted proxy. `source` is Envoy's
    /// `source.address`; `peer_sans` are the URI and DNS SANs of the peer certificate, empty
    /// without mTLS.
    pub fn trusts(&self, source: Option<&str>, peer_sans: &[&str]) -> bool {
        if self.any {
            return true;
        }
        let by_address = source
            .and_then(source_ip)
            .is_some_and(|ip| self.cidrs.iter().any(|cidr| cidr.contains(ip)));
        let by_identity = peer_sans
            .iter()
            .any(|san| self.peer_identities.iter().any(|id| id == san));
        by_address || by_identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn parses_cidrs() {
        let table = [
            ("10.0.0.0/8", "10.0.0.0", 8),
            ("127.0.0.2/32", "127.0.0.2", 32),
            ("127.0.0.2", "127.0.0.2", 32),
            ("0.0.0.0/0", "0.0.0.0", 0),
            ("::1/128", "::1", 128),
            ("::1", "::1", 128),
            ("fd00::/8", "fd00::", 8),
            ("::/0", "::", 0),
            ("2001:db8::/32", "2001:db8::", 32),
        ];
        for (text, network, prefix) in table {
            let c = cidr(text);
            assert_eq!(c.network(), network.parse::<IpAddr>().unwrap(), "{text}");
            assert_eq!(c.prefix(), prefix, "{text}");
        }
    }

    #[test]
    fn refuses_bad_cidrs() {
        let table = [
            ("10.0.0.300/8", CidrError::NotAnAddress),
            ("", CidrError::NotAnAddress),
            ("localhost", CidrError::NotAnAddress),
            ("10.0.0/8", CidrError::NotAnAddress),
            ("[::1]/128", CidrError::NotAnAddress),
            (" 10.0.0.0/8", CidrError::NotAnAddress),
            ("10.0.0.0/33", CidrError::BadPrefix),
            ("10.0.0.0/", CidrError::BadPrefix),
            ("10.0.0.0/+8", CidrError::BadPrefix),
            ("10.0.0.0/-1", CidrError::BadPrefix),
            ("10.0.0.0/8/8", CidrError::BadPrefix),
            ("10.0.0.0/999", CidrError::BadPrefix),
            ("::/129", CidrError::BadPrefix),
            ("10.1.2.3/8", CidrError::HostBitsSet),
            ("127.0.0.1/0", CidrError::HostBitsSet),
            ("fd00::1/8", CidrError::HostBitsSet),
            ("::ffff:10.0.0.0/104", CidrError::Ipv4Mapped),
        ];
        for (text, expected) in table {
            assert_eq!(text.parse::<Cidr>(), Err(expected), "{text}");
        }
    }

    #[test]
    fn matches_addresses() {
        let table = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.2/32", "127.0.0.2", true),
            ("127.0.0.2/32", "127.0.0.3", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::/0", "10.0.0.1", false),
            ("fd00::/8", "fdff::1", true),
            ("fd00::/8", "fe00::1", false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
            ("::1/128", "127.0.0.1", false),
        ];
        for (range, addr, expected) in table {
            let addr: IpAddr = addr.parse().unwrap();
            assert_eq!(cidr(range).contains(addr), expected, "{range} {addr}");
        }
    }

    #[test]
    fn reads_envoy_source_addresses() {
        let table = [
            ("127.0.0.1:41000", Some("127.0.0.1")),
            ("[::1]:41000", Some("::1")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[::ffff:127.0.0.2]:80", Some("::ffff:127.0.0.2")),
            ("/tmp/envoy.sock", None),
            ("envoy://internal_client_address/", None),
            ("", None),
            ("127.0.0.1:", None),
            ("127.0.0.1:99999", None),
        ];
        for (source, expected) in table {
            let expected = expected.map(|e| e.parse::<IpAddr>().unwrap());
            assert_eq!(source_ip(source), expected, "{source}");
        }
    }

    fn proxies(json: &str) -> Result<TrustedProxies, String> {
        let raw: TrustedProxiesConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        TrustedProxies::try_from(raw)
    }

    #[test]
    fn trusts_by_address_identity_or_any() {
        const GATEWAY: &str =
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
        let by_cidr = proxies(r#"{"cidrs":["127.0.0.2/32","::1"]}"#).unwrap();
        let by_id = proxies(&format!(r#"{{"peer_identities":["{GATEWAY}"]}}"#)).unwrap();
        let anyone = proxies(r#"{"any":true}"#).unwrap();
        let nobody = proxies("{}").unwrap();

        type Row<'a> = (
            &'a str,
            &'a TrustedProxies,
            Option<&'a str>,
            &'a [&'a str],
            bool,
        );
        let rows: &[Row] = &[
            ("cidr v4", &by_cidr, Some("127.0.0.2:41000"), &[], true),
            ("cidr v6", &by_cidr, Some("[::1]:41000"), &[], true),
            ("cidr, no port", &by_cidr, Some("127.0.0.2"), &[], true),
            ("cidr, other address", &by_cidr, Some("127.0.0.3:41000"), &[], false),
            ("cidr, no source", &by_cidr, None, &[], false),
            ("cidr, identity ignored", &by_cidr, Some("127.0.0.3:1"), &[GATEWAY], false),
            ("identity", &by_id, Some("127.0.0.3:1"), &["a.example", GATEWAY], true),
            ("identity, other", &by_id, Some("127.0.0.2:1"), &["spiffe://cluster.local/ns/x"], false),
            ("identity, prefix only", &by_id, None, &["spiffe://cluster.local/ns/istio-system"], false),
            ("identity, case differs", &by_id, None, &["SPIFFE://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"], false),
            ("identity, no peer", &by_id, Some("127.0.0.2:1"), &[], false),
            ("any", &anyone, None, &[], true),
            ("nobody", &nobody, Some("127.0.0.1:1"), &[""], false),
        ];
        for (name, trusted, source, sans, expected) in rows {
            assert_eq!(trusted.trusts(*source, sans), *expected, "{name}");
        }
        assert!(nobody.trusts_nobody());
        assert!(!by_cidr.trusts_nobody() && !by_id.trusts_nobody() && !anyone.trusts_nobody());
    }

    #[test]
    fn configuration_errors_name_the_key_and_the_value() {
        let table = [
            (
                r#"{"cidrs":["10.0.0.300/8"]}"#,
                r#"trusted_proxies.cidrs: "10.0.0.300/8" is not an address or CIDR"#,
            ),
            (
                r#"{"cidrs":["10.1.0.0/8"]}"#,
                r#"trusted_proxies.cidrs: "10.1.0.0/8" has bits set"#,
            ),
            (
                r#"{"cidrs":["10.0.0.0/40"]}"#,
                r#"trusted_proxies.cidrs: "10.0.0.0/40" has a prefix"#,
            ),
            (
                r#"{"peer_identities":[""]}"#,
                r#"trusted_proxies.peer_identities: "" is empty"#,
            ),
            (
                r#"{"peer_identities":[" spiffe://a"]}"#,
                r#"" spiffe://a" is empty or has surrounding"#,
            ),
            (r#"{"cidr":["10.0.0.0/8"]}"#, "unknown field `cidr`"),
            (r#"{"any":"yes"}"#, "invalid type"),
        ];
        for (json, needle) in table {
            let message = proxies(json).unwrap_err();
            assert!(message.contains(needle), "{json}: {message}");
        }
    }
}

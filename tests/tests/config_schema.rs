//! schema/certbound-config.schema.json against certbound's own parser: every configuration the
//! repository ships validates and parses, and the schema and the parser agree key by key.

// Test code: a failed check stops the test loudly, with what was found.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use certbound_e2e::shipped::{
    all_plugin_configs, config_schema, config_validator, parse_with_certbound, Parsed,
};
use serde_json::{json, Value};

fn schema_errors(config: &Value) -> Vec<String> {
    config_validator()
        .iter_errors(config)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_shipped_config_validates_and_parses() {
    let configs = all_plugin_configs();
    assert!(configs.len() >= 5, "too few configs found: {configs:#?}");

    let mut failures = Vec::new();
    for config in &configs {
        let errors = schema_errors(&config.json);
        if !errors.is_empty() {
            failures.push(format!("{}: schema: {}", config.origin, errors.join("; ")));
        }
        match parse_with_certbound(&config.json) {
            Parsed::Accepted => {}
            Parsed::Refused(message) => {
                failures.push(format!("{}: certbound: {message}", config.origin))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A sample valid value for every key the schema allows, with what the key needs beside it.
fn samples() -> Vec<(&'static str, Value)> {
    let proxies = json!({"cidrs": ["10.0.0.0/8"]});
    let ca = certbound_e2e::Pki::new().ca.cert_pem;
    let mut samples = vec![
        ("audit_header", json!({"audit_header": "x-would-deny"})),
        (
            "exempt_paths",
            json!({"exempt_paths": ["/healthz", "/.well-known/*"]}),
        ),
        (
            "forward_thumbprint_header",
            json!({"forward_thumbprint_header": "x-client-cert-thumbprint"}),
        ),
        ("filter_state", json!({"filter_state": true})),
        ("route_overrides", json!({"route_overrides": true})),
        ("max_token_bytes", json!({"max_token_bytes": 8192})),
        (
            "max_certificate_header_bytes",
            json!({"max_certificate_header_bytes": 4096}),
        ),
        ("mode", json!({"mode": "audit"})),
        ("require_bound_token", json!({"require_bound_token": true})),
        ("cnf_encoding", json!({"cnf_encoding": "hex"})),
        (
            "certificate_header",
            json!({"certificate_header": "x-client-cert", "trusted_proxies": proxies}),
        ),
        (
            "trusted_proxies",
            json!({"certificate_header": "x-forwarded-client-cert",
                   "trusted_proxies": {"cidrs": ["192.0.2.0/24"],
                   "peer_identities": ["spiffe://cluster.local/ns/a/sa/b"], "any": false}}),
        ),
        ("xfcc_element", json!({"xfcc_element": "first"})),
        (
            "strip_certificate_header",
            json!({"strip_certificate_header": false}),
        ),
        (
            "forwarded_certificate_ca",
            json!({"certificate_header": "x-client-cert", "trusted_proxies": proxies,
                   "forwarded_certificate_ca": ca}),
        ),
        ("claims_source", json!({"claims_source": "header"})),
        (
            "jwt_authn_payload_key",
            json!({"claims_source": "jwt_authn", "jwt_authn_payload_key": "jwt_payload"}),
        ),
    ];
    for format in [
        "auto",
        "xfcc",
        "rfc9440",
        "pem",
        "url-encoded-pem",
        "base64-pem",
        "base64-der",
    ] {
        samples.push((
            "certificate_header_format",
            json!({"certificate_header": "x-client-cert", "certificate_header_format": format,
                   "trusted_proxies": {"any": true}}),
        ));
    }
    samples.push(("introspection", json!({"introspection": {"cluster": "as"}})));
    samples.push((
        "introspection",
        json!({"introspection": {"cluster": "as", "path": "/oauth2/introspect",
               "authority": "as.example.com:443", "client_id": "gw", "client_secret": "s",
               "timeout_ms": 500, "cache_ttl_s": 0, "cache_max_entries": 100,
               "tokens": "all", "on_error_status": 401}}),
    ));
    samples.push((
        "introspection",
        json!({"introspection": {"cluster": "as", "bearer_token": "abc.def-ghi"}}),
    ));
    samples
}

#[test]
fn schema_and_parser_agree_on_every_key() {
    let schema = config_schema();
    let keys: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let samples = samples();
    for key in &keys {
        assert!(
            samples.iter().any(|(k, _)| k == key),
            "no sample for the schema key {key}"
        );
    }

    for (key, sample) in &samples {
        assert!(
            keys.contains(key),
            "sample for {key}, which the schema lacks"
        );
        let errors = schema_errors(sample);
        assert!(errors.is_empty(), "schema refuses {sample}: {errors:?}");
        match parse_with_certbound(sample) {
            Parsed::Accepted => {}
            Parsed::Refused(message) => panic!("certbound refuses {sample}: {message}"),
        }
    }
    // Every key the parser knows is in the schema: the parser lists them when it refuses one.
    let message = match certbound::config::Config::parse(br#"{"no_such_key": 1}"#) {
        Err(error) => error.0,
        Ok(_) => panic!("certbound accepted an unknown key"),
    };
    let expected = message.split("expected one of").nth(1).unwrap_or_default();
    let parser_keys: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    assert!(!parser_keys.is_empty(), "{message}");
    for key in parser_keys {
        assert!(
            keys.contains(&key),
            "certbound parses {key}, the schema lacks it"
        );
    }
}

#[test]
fn schema_and_parser_refuse_the_same_mistakes() {
    let table = [
        json!({"requre_bound_token": true}),
        json!({"mode": "enforced"}),
        json!({"mode": "Enforce"}),
        json!({"require_bound_token": "yes"}),
        json!({"cnf_encoding": "base64"}),
        json!([]),
        json!("audit"),
        json!({"introspection": {}}),
        json!({"introspection": {"cluster": "as", "on_error_status": 500}}),
        json!({"introspection": {"cluster": "as", "tokens": "jwt"}}),
        json!({"introspection": {"cluster": "as", "timeout_ms": 0}}),
        json!({"introspection": {"cluster": "as", "path": "introspect"}}),
        json!({"introspection": {"cluster": "as", "client_id": "gw"}}),
        json!({"introspection": {"cluster": "as", "client_secret": "s"}}),
        json!({"introspection": {"cluster": "as", "bearer_token": "t", "client_id": "gw",
               "client_secret": "s"}}),
        json!({"introspection": {"cluster": "as", "secret": "s"}}),
    ];
    for config in table {
        assert!(
            !schema_errors(&config).is_empty(),
            "schema accepts {config}"
        );
        assert!(
            matches!(parse_with_certbound(&config), Parsed::Refused(_)),
            "certbound accepts {config}"
        );
    }

    // Mistakes in keys the parser does not know yet: the schema alone refuses them for now.
    let schema_only = [
        json!({"certificate_header": "x-client-cert"}),
        json!({"certificate_header": "x-client-cert", "trusted_proxies": {}}),
        json!({"certificate_header": "x-client-cert", "trusted_proxies": {"cidrs": []}}),
        json!({"certificate_header": "x-client-cert", "trusted_proxies": {"any": false}}),
        json!({"trusted_proxies": {"cidr": ["10.0.0.0/8"]}}),
        json!({"certificate_header_format": "der"}),
        json!({"xfcc_element": "middle"}),
        json!({"claims_source": "jwt_authn"}),
        json!({"claims_source": "metadata", "jwt_authn_payload_key": "p"}),
        json!({"strip_certificate_header": "no"}),
    ];
    for config in schema_only {
        assert!(
            !schema_errors(&config).is_empty(),
            "schema accepts {config}"
        );
        assert_ne!(
            parse_with_certbound(&config),
            Parsed::Accepted,
            "certbound accepts {config}"
        );
    }
}

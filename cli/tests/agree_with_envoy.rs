//! The CLI's verdict agrees with the filter's (issue: operate it in production, CLI bullet).
//!
//! Each case is sent through real Envoy running `build/certbound.wasm` with `envoy/envoy.yaml`,
//! presenting a client certificate over TLS, and given to `certbound check` with that
//! certificate's PEM file, the same Authorization value and the same plugin configuration. Both
//! must agree on pass or deny, on bound or unbound, on the reason, the status and the
//! `WWW-Authenticate` challenge.

// Test code: a failed step should stop the test loudly, which is what these do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use certbound_e2e::{client, get, jwt, jwt_with_payload, Envoy, Identity, Pki, Setup, Upstream};
use serde_json::json;

/// The upstream learns that a pass was bound from the forwarded thumbprint, and what audit mode
/// would have denied from the audit header.
const FORWARD: &str = "x-client-cert-thumbprint";
const AUDIT: &str = "x-certbound-audit";

/// What one side decided.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    PassBound,
    PassUnbound,
    /// Reason name, HTTP status, `WWW-Authenticate`.
    Deny(String, u16, String),
    /// Audit mode: passed, with the reason enforce mode would have denied for.
    WouldDeny(String),
}

#[derive(Clone, Copy, Debug)]
enum Cert {
    A,
    B,
    None,
}

struct Case {
    name: &'static str,
    cert: Cert,
    authorization: Option<String>,
    /// What both must say; guards against a test in which both are wrong the same way.
    expect: &'static str,
}

fn case(name: &'static str, cert: Cert, auth: Option<String>, expect: &'static str) -> Case {
    Case {
        name,
        cert,
        authorization: auth,
        expect,
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

fn identity(pki: &Pki, cert: Cert) -> Option<&Identity> {
    match cert {
        Cert::A => Some(&pki.client_a),
        Cert::B => Some(&pki.client_b),
        Cert::None => None,
    }
}

/// The filter's decision: one request through Envoy.
fn through_envoy(pki: &Pki, upstream: &Upstream, envoy: &Envoy, case: &Case) -> Decision {
    let client = client(pki, identity(pki, case.cert), false);
    let headers: Vec<(&str, &[u8])> = case
        .authorization
        .iter()
        .map(|value| ("authorization", value.as_bytes()))
        .collect();
    let before = upstream.count();
    let reply = get(
        &client,
        &format!("{}/orders/42", envoy.https("https")),
        &headers,
    );

    if reply.status == 200 {
        assert_eq!(upstream.count(), before + 1, "{}", case.name);
        let seen = upstream.requests().pop().unwrap();
        if let Some(reason) = seen.header(AUDIT) {
            return Decision::WouldDeny(reason.to_string());
        }
        return match seen.header(FORWARD) {
            Some(_) => Decision::PassBound,
            None => Decision::PassUnbound,
        };
    }

    assert_eq!(
        upstream.count(),
        before,
        "{}: denied yet upstream reached",
        case.name
    );
    let line = envoy.certbound_log().pop().unwrap_or_default();
    let (_, logged) = line
        .rsplit_once(": ")
        .unwrap_or_else(|| panic!("{}: no denial line: {line}", case.name));
    let reason = logged
        .strip_suffix(&format!(" ({})", reply.status))
        .unwrap_or_else(|| panic!("{}: log line without status: {line}", case.name));
    let description = reply.json()["error_description"]
        .as_str()
        .unwrap()
        .to_string();
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_string();
    assert!(
        challenge == "Bearer" || challenge.contains(&description),
        "{}: {challenge}",
        case.name
    );
    Decision::Deny(reason.to_string(), reply.status, challenge)
}

/// The CLI's decision: `certbound check` on the certificate's PEM file and the same header.
fn through_cli(pki: &Pki, config: &str, case: &Case) -> Decision {
    let cert = match case.cert {
        Cert::A => pki.write("client-a.crt", &pki.client_a.cert_pem),
        Cert::B => pki.write("client-b.crt", &pki.client_b.cert_pem),
        Cert::None => "none".into(),
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_certbound"));
    command
        .arg("check")
        .arg("--cert")
        .arg(&cert)
        .args(["--config", config]);
    if let Some(value) = &case.authorization {
        command.args(["--token", value]);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let field = |name: &str| {
        stdout.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then(|| value.trim().to_string())
        })
    };
    let verdict = field("verdict").unwrap_or_else(|| {
        panic!(
            "{}: no verdict (exit {:?}): {stdout}{}",
            case.name,
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let reason = field("reason")
        .map(|r| r.split(':').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let code = output.status.code();

    if verdict.starts_with("pass (bound") {
        assert_eq!(code, Some(0), "{}", case.name);
        Decision::PassBound
    } else if verdict.starts_with("pass (unbound") {
        assert_eq!(code, Some(0), "{}", case.name);
        Decision::PassUnbound
    } else if verdict.starts_with("would deny") {
        assert_eq!(code, Some(0), "{}", case.name);
        Decision::WouldDeny(reason)
    } else {
        assert_eq!(verdict, "deny", "{}", case.name);
        assert_eq!(code, Some(1), "{}", case.name);
        let status = field("status").unwrap().parse().unwrap();
        Decision::Deny(reason, status, field("www-authenticate").unwrap())
    }
}

/// The short form a case expects: `bound`, `unbound`, a reason, or `audit:<reason>`.
fn short(decision: &Decision) -> String {
    match decision {
        Decision::PassBound => "bound".into(),
        Decision::PassUnbound => "unbound".into(),
        Decision::Deny(reason, ..) => reason.clone(),
        Decision::WouldDeny(reason) => format!("audit:{reason}"),
    }
}

fn agree(pki: &Pki, config: &str, cases: &[Case]) {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&Setup {
        config: "envoy/envoy.yaml",
        plugin_config: Some(config),
        clusters: vec![("upstream", upstream.port)],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    });
    for case in cases {
        let filter = through_envoy(pki, &upstream, &envoy, case);
        let cli = through_cli(pki, config, case);
        assert_eq!(cli, filter, "{} with {config}", case.name);
        assert_eq!(short(&filter), case.expect, "{} with {config}", case.name);
    }
}

#[test]
fn cli_agrees_with_envoy() {
    let pki = Pki::new();
    let a = &pki.client_a;
    let token_a = a.bound_token();
    let hex_a = jwt(&json!({"sub": "client", "cnf": {"x5t#S256": a.x5t_hex()}}));
    let unbound = jwt(&json!({"sub": "plain"}));
    let bad_cnf = jwt(&json!({"cnf": {"x5t#S256": "abc"}}));
    let cnf_not_object = jwt(&json!({"cnf": "x"}));

    let lenient = r#"{"forward_thumbprint_header": "x-client-cert-thumbprint"}"#;
    agree(
        &pki,
        lenient,
        &[
            case("match", Cert::A, bearer(&token_a), "bound"),
            case("match, hex", Cert::A, bearer(&hex_a), "bound"),
            case("mismatch", Cert::B, bearer(&token_a), "thumbprint_mismatch"),
            case(
                "mismatch, hex",
                Cert::B,
                bearer(&hex_a),
                "thumbprint_mismatch",
            ),
            case(
                "no certificate",
                Cert::None,
                bearer(&token_a),
                "no_client_certificate",
            ),
            case(
                "malformed cnf",
                Cert::A,
                bearer(&bad_cnf),
                "malformed_confirmation",
            ),
            case(
                "cnf not an object",
                Cert::A,
                bearer(&cnf_not_object),
                "malformed_confirmation",
            ),
            case(
                "payload not an object",
                Cert::A,
                bearer(&jwt_with_payload(b"[1]")),
                "malformed_token",
            ),
            case(
                "payload not JSON",
                Cert::A,
                bearer(&jwt_with_payload(b"not json")),
                "malformed_token",
            ),
            case(
                "malformed header",
                Cert::A,
                Some("Bearer a b".into()),
                "malformed_authorization",
            ),
            case("unbound", Cert::A, bearer(&unbound), "unbound"),
            case(
                "opaque",
                Cert::None,
                bearer("2YotnFZFEjr1zCsicMWpAA"),
                "unbound",
            ),
            case("no token", Cert::None, None, "unbound"),
        ],
    );

    let strict = r#"{"require_bound_token": true,
                     "forward_thumbprint_header": "x-client-cert-thumbprint"}"#;
    agree(
        &pki,
        strict,
        &[
            case("match", Cert::A, bearer(&token_a), "bound"),
            case("unbound", Cert::A, bearer(&unbound), "unbound_token"),
            case(
                "opaque",
                Cert::None,
                bearer("2YotnFZFEjr1zCsicMWpAA"),
                "unbound_token",
            ),
            case("no token", Cert::A, None, "no_token"),
            case(
                "other scheme",
                Cert::A,
                Some("Basic dXNlcjpwYXNz".into()),
                "no_token",
            ),
            case(
                "no certificate",
                Cert::None,
                bearer(&token_a),
                "no_client_certificate",
            ),
        ],
    );

    let hex_only = r#"{"cnf_encoding": "hex",
                       "forward_thumbprint_header": "x-client-cert-thumbprint"}"#;
    agree(
        &pki,
        hex_only,
        &[
            case("hex", Cert::A, bearer(&hex_a), "bound"),
            case(
                "base64url",
                Cert::A,
                bearer(&token_a),
                "malformed_confirmation",
            ),
            case(
                "hex, mismatch",
                Cert::B,
                bearer(&hex_a),
                "thumbprint_mismatch",
            ),
        ],
    );

    let audit = r#"{"mode": "audit", "forward_thumbprint_header": "x-client-cert-thumbprint"}"#;
    agree(
        &pki,
        audit,
        &[
            case("match", Cert::A, bearer(&token_a), "bound"),
            case(
                "mismatch",
                Cert::B,
                bearer(&token_a),
                "audit:thumbprint_mismatch",
            ),
            case(
                "malformed cnf",
                Cert::A,
                bearer(&bad_cnf),
                "audit:malformed_confirmation",
            ),
            case("unbound", Cert::A, bearer(&unbound), "unbound"),
        ],
    );
}

//! The core decision table (issue: certbound core), through real Envoy running envoy/envoy.yaml.

use certbound_e2e::{client, get, jwt, jwt_with_payload, Envoy, Pki, Reply, Setup, Upstream};
use serde_json::json;

struct Rig {
    pki: Pki,
    upstream: Upstream,
    envoy: Envoy,
}

fn start(plugin_config: &str) -> Rig {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let envoy = Envoy::start(&Setup {
        config: "envoy/envoy.yaml",
        plugin_config: Some(plugin_config),
        clusters: vec![("upstream", upstream.port)],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    });
    Rig {
        pki,
        upstream,
        envoy,
    }
}

#[derive(Clone, Copy)]
enum Cert {
    A,
    B,
    None,
}

impl Rig {
    /// One request over a new connection, presenting `cert`, with `authorization` if any.
    fn call(&self, cert: Cert, authorization: Option<&[u8]>, http1: bool) -> Reply {
        let identity = match cert {
            Cert::A => Some(&self.pki.client_a),
            Cert::B => Some(&self.pki.client_b),
            Cert::None => None,
        };
        let client = client(&self.pki, identity, http1);
        let headers: Vec<(&str, &[u8])> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        get(
            &client,
            &format!("{}/orders/42", self.envoy.https("https")),
            &headers,
        )
    }

    /// Asserts the verdict for one request: 200 from the upstream, or a denial with this status,
    /// RFC 6750 error code and certbound reason (checked in the log line).
    fn expect(&self, row: &str, cert: Cert, authorization: Option<String>, want: Want) {
        for http1 in [false, true] {
            let before = self.upstream.count();
            let reply = self.call(cert, authorization.as_deref().map(str::as_bytes), http1);
            let protocol = if http1 { "HTTP/1.1" } else { "HTTP/2" };
            let row = format!("{row} ({protocol})");
            assert_eq!(
                reply.version,
                if http1 {
                    reqwest::Version::HTTP_11
                } else {
                    reqwest::Version::HTTP_2
                },
                "{row}"
            );
            match want {
                Want::Pass => {
                    assert_eq!(reply.status, 200, "{row}: {}", reply.body);
                    assert_eq!(reply.body, "upstream reached", "{row}");
                    assert_eq!(self.upstream.count(), before + 1, "{row}");
                }
                Want::Deny {
                    status,
                    error,
                    reason,
                } => {
                    assert_eq!(reply.status, status, "{row}: {}", reply.body);
                    assert_eq!(self.upstream.count(), before, "{row}: reached the upstream");
                    let challenge = reply.header("www-authenticate").unwrap_or_default();
                    let body = reply.json();
                    match error {
                        Some(code) => {
                            let prefix = format!("Bearer error=\"{code}\", error_description=\"");
                            assert!(challenge.starts_with(&prefix), "{row}: {challenge}");
                            assert_eq!(body["error"], code, "{row}");
                        }
                        None => assert_eq!(challenge, "Bearer", "{row}"),
                    }
                    let description = body["error_description"].as_str().unwrap();
                    assert!(challenge.contains(description) || error.is_none(), "{row}");
                    assert_eq!(
                        reply.header("content-type"),
                        Some("application/json"),
                        "{row}"
                    );
                    assert_eq!(reply.header("cache-control"), Some("no-store"), "{row}");
                    let line = self.envoy.certbound_log().pop().unwrap_or_default();
                    assert!(
                        line.contains(&format!(": {reason} ({status})")),
                        "{row}: {line}"
                    );
                    if let Some(token) = &authorization {
                        assert!(!self
                            .envoy
                            .log()
                            .contains(token.trim_start_matches("Bearer ")));
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Want {
    Pass,
    Deny {
        status: u16,
        error: Option<&'static str>,
        reason: &'static str,
    },
}

const fn deny(reason: &'static str) -> Want {
    Want::Deny {
        status: 401,
        error: Some("invalid_token"),
        reason,
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[test]
fn decision_table_in_enforce_mode() {
    let rig = start(r#"{"mode": "enforce"}"#);
    let token_a = rig.pki.client_a.bound_token();
    let hex_a = jwt(&json!({"cnf": {"x5t#S256": rig.pki.client_a.x5t_hex()}}));
    let unbound = jwt(&json!({"sub": "plain"}));

    rig.expect(
        "A with its own token",
        Cert::A,
        bearer(&token_a),
        Want::Pass,
    );
    rig.expect(
        "A with its own token, hex",
        Cert::A,
        bearer(&hex_a),
        Want::Pass,
    );
    rig.expect(
        "scheme is case-insensitive",
        Cert::A,
        Some(format!("bEaReR {token_a}")),
        Want::Pass,
    );
    // Upstreams that split on any whitespace read this as a Bearer token: so must certbound.
    rig.expect(
        "B with A's token after a tab",
        Cert::B,
        Some(format!("Bearer\t{token_a}")),
        deny("thumbprint_mismatch"),
    );
    rig.expect(
        "B with A's token",
        Cert::B,
        bearer(&token_a),
        deny("thumbprint_mismatch"),
    );
    rig.expect(
        "B with A's hex token",
        Cert::B,
        bearer(&hex_a),
        deny("thumbprint_mismatch"),
    );
    rig.expect(
        "A's token, no certificate",
        Cert::None,
        bearer(&token_a),
        deny("no_client_certificate"),
    );

    for (what, cnf) in [
        ("wrong length", json!({"x5t#S256": "abc"})),
        (
            "wrong alphabet",
            json!({"x5t#S256": format!("+{}", &rig.pki.client_a.x5t_s256()[1..])}),
        ),
        (
            "padded",
            json!({"x5t#S256": format!("{}=", rig.pki.client_a.x5t_s256())}),
        ),
        ("not a string", json!({"x5t#S256": 7})),
        ("empty", json!({"x5t#S256": ""})),
        ("null", json!({"x5t#S256": null})),
        ("cnf not an object", json!("x")),
    ] {
        let token = jwt(&json!({"sub": "a", "cnf": cnf}));
        rig.expect(
            what,
            Cert::A,
            bearer(&token),
            deny("malformed_confirmation"),
        );
    }

    for (what, payload) in [
        ("payload is an array", &b"[1,2]"[..]),
        ("payload is not JSON", b"hello"),
        ("payload is a string", b"\"s\""),
    ] {
        rig.expect(
            what,
            Cert::A,
            bearer(&jwt_with_payload(payload)),
            deny("malformed_token"),
        );
    }
    rig.expect(
        "payload not base64url",
        Cert::A,
        bearer("eyJ9.ab+/.sig"),
        deny("malformed_token"),
    );

    rig.expect("unbound JWT", Cert::None, bearer(&unbound), Want::Pass);
    rig.expect(
        "unbound JWT with a certificate",
        Cert::B,
        bearer(&unbound),
        Want::Pass,
    );
    rig.expect(
        "opaque token",
        Cert::None,
        bearer("2YotnFZFEjr1zCsicMWpAA"),
        Want::Pass,
    );
    rig.expect("no Authorization header", Cert::None, None, Want::Pass);
    rig.expect(
        "Basic credentials",
        Cert::None,
        Some("Basic dXNlcjpwYXNz".into()),
        Want::Pass,
    );
    // A bound token is judged whatever scheme carries it, or with none: an upstream may take the
    // word after any scheme, or a bare JWT.
    for (what, value) in [
        ("DPoP scheme", format!("DPoP {token_a}")),
        ("no scheme", token_a.clone()),
    ] {
        rig.expect(what, Cert::A, Some(value.clone()), Want::Pass);
        rig.expect(what, Cert::B, Some(value), deny("thumbprint_mismatch"));
    }
    rig.expect(
        "unbound JWT, DPoP scheme",
        Cert::B,
        Some(format!("DPoP {unbound}")),
        Want::Pass,
    );

    let malformed = Want::Deny {
        status: 400,
        error: Some("invalid_request"),
        reason: "malformed_authorization",
    };
    rig.expect(
        "Bearer without a token",
        Cert::A,
        Some("Bearer".into()),
        malformed,
    );
    rig.expect(
        "two tokens in one header",
        Cert::A,
        Some(format!("Bearer {token_a}, x")),
        malformed,
    );
    // Values where jwt_authn or an upstream finds a Bearer token that certbound would otherwise
    // have taken for another scheme: client B with A's stolen token.
    for value in [
        format!("Basic Bearer {token_a}"),
        format!("DPoP Bearer {token_a}"),
        format!("NotBearer {token_a}"),
        format!("Bearer:{token_a}"),
        format!("Bearer{token_a}"),
    ] {
        rig.expect(&value[..12], Cert::B, Some(value.clone()), malformed);
    }
}

/// Envoy hands a filter repeated headers joined by commas; a stolen token placed behind another
/// credential must not slip through as "no bearer token".
#[test]
fn repeated_authorization_headers_are_refused() {
    let rig = start("{}");
    let token_a = rig.pki.client_a.bound_token();
    let client = client(&rig.pki, Some(&rig.pki.client_b), false);
    let url = format!("{}/orders/42", rig.envoy.https("https"));
    let bearer_a = format!("Bearer {token_a}");
    let orders: [[&[u8]; 2]; 2] = [
        [b"Basic dXNlcjpwYXNz", bearer_a.as_bytes()],
        [bearer_a.as_bytes(), b"Basic eDp5"],
    ];
    for pair in orders {
        let reply = get(
            &client,
            &url,
            &[("authorization", pair[0]), ("authorization", pair[1])],
        );
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.json()["error"], "invalid_request");
    }
    assert_eq!(rig.upstream.count(), 0);
}

#[test]
fn non_utf8_header_bytes_get_a_clean_answer() {
    let rig = start("{}");
    let reply = rig.call(Cert::A, Some(b"Bearer \xff\xfe\x80"), false);
    assert_eq!(reply.status, 400);
    // The VM is still healthy: the next request is judged normally.
    let token = format!("Bearer {}", rig.pki.client_a.bound_token());
    assert_eq!(rig.call(Cert::A, Some(token.as_bytes()), false).status, 200);
    assert_eq!(rig.call(Cert::B, Some(token.as_bytes()), false).status, 401);
}

#[test]
fn require_bound_token_refuses_plain_bearer_tokens() {
    let rig = start(r#"{"require_bound_token": true}"#);
    let token_a = rig.pki.client_a.bound_token();
    rig.expect(
        "A with its own token",
        Cert::A,
        bearer(&token_a),
        Want::Pass,
    );
    rig.expect(
        "unbound JWT",
        Cert::A,
        bearer(&jwt(&json!({"sub": "a"}))),
        deny("unbound_token"),
    );
    rig.expect(
        "opaque token",
        Cert::A,
        bearer("2YotnFZFEjr1zCsicMWpAA"),
        deny("unbound_token"),
    );
    let no_token = Want::Deny {
        status: 401,
        error: None,
        reason: "no_token",
    };
    rig.expect("no Authorization header", Cert::A, None, no_token);
    rig.expect(
        "Basic credentials",
        Cert::A,
        Some("Basic dXNlcjpwYXNz".into()),
        no_token,
    );
}

#[test]
fn cnf_encoding_selects_the_accepted_form() {
    let hex_only = start(r#"{"cnf_encoding": "hex"}"#);
    let a = &hex_only.pki.client_a;
    let hex_token = jwt(&json!({"cnf": {"x5t#S256": a.x5t_hex()}}));
    let upper_hex = jwt(&json!({"cnf": {"x5t#S256": a.x5t_hex().to_uppercase()}}));
    hex_only.expect("hex", Cert::A, bearer(&hex_token), Want::Pass);
    hex_only.expect("upper-case hex", Cert::A, bearer(&upper_hex), Want::Pass);
    hex_only.expect(
        "hex, B",
        Cert::B,
        bearer(&hex_token),
        deny("thumbprint_mismatch"),
    );
    hex_only.expect(
        "base64url",
        Cert::A,
        bearer(&a.bound_token()),
        deny("malformed_confirmation"),
    );
    drop(hex_only);

    let b64_only = start(r#"{"cnf_encoding": "base64url"}"#);
    let a = &b64_only.pki.client_a;
    let hex_token = jwt(&json!({"cnf": {"x5t#S256": a.x5t_hex()}}));
    b64_only.expect("base64url", Cert::A, bearer(&a.bound_token()), Want::Pass);
    b64_only.expect(
        "hex",
        Cert::A,
        bearer(&hex_token),
        deny("malformed_confirmation"),
    );
}

#[test]
fn audit_mode_lets_everything_through_and_logs_what_it_would_deny() {
    let rig = start(r#"{"mode": "audit", "require_bound_token": true}"#);
    let token_a = rig.pki.client_a.bound_token();
    for (cert, authorization, reason) in [
        (Cert::B, bearer(&token_a), "thumbprint_mismatch"),
        (Cert::None, bearer(&token_a), "no_client_certificate"),
        (Cert::None, None, "no_token"),
    ] {
        let reply = rig.call(cert, authorization.as_deref().map(str::as_bytes), false);
        assert_eq!(reply.status, 200, "{reason}");
        let line = rig.envoy.certbound_log().pop().unwrap_or_default();
        assert!(line.contains("would deny (audit mode)"), "{line}");
        assert!(line.contains(reason), "{line}");
    }
    let reply = rig.call(
        Cert::A,
        bearer(&token_a).as_deref().map(str::as_bytes),
        false,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(rig.envoy.certbound_log().len(), 3, "a match logs nothing");
    assert_eq!(rig.upstream.count(), 4);
}

/// A bad configuration must keep Envoy from serving, never run the filter open.
#[test]
fn invalid_configuration_is_refused_by_envoy() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    for (config, names) in [
        (r#"{"mode": "enforcing"}"#, ["mode", "enforcing"]),
        (
            r#"{"require_bound_token": "yes"}"#,
            ["require_bound_token", "yes"],
        ),
        (
            r#"{"cnf_encodng": "hex"}"#,
            ["cnf_encodng", "unknown field"],
        ),
        (r#"["audit"]"#, ["JSON object", "invalid configuration"]),
    ] {
        let started = Envoy::try_start(&Setup {
            config: "envoy/envoy.yaml",
            plugin_config: Some(config),
            clusters: vec![("upstream", upstream.port)],
            pki_dir: pki.dir.path(),
            listener_plugin_configs: vec![],
        });
        let log = match started {
            Ok(_) => panic!("Envoy started with configuration {config}"),
            Err(log) => log,
        };
        assert!(
            log.contains("Unable to create Wasm plugin"),
            "{config}:\n{log}"
        );
        let line = log
            .lines()
            .find(|l| l.contains("invalid configuration"))
            .unwrap_or_default();
        for name in names {
            assert!(line.contains(name), "{config}: {line}");
        }
    }
}

/// The connection's certificate is looked up once per connection: many requests on one
/// keep-alive connection, with tokens bound to either client, and a second connection with the
/// other certificate, are each judged against their own connection's certificate.
#[test]
fn each_keep_alive_connection_is_judged_by_its_own_certificate() {
    let rig = start("{}");
    let url = format!("{}/orders/42", rig.envoy.https("https"));
    let token_a = format!("Bearer {}", rig.pki.client_a.bound_token());
    let token_b = format!("Bearer {}", rig.pki.client_b.bound_token());
    for http1 in [false, true] {
        let a = client(&rig.pki, Some(&rig.pki.client_a), http1);
        let b = client(&rig.pki, Some(&rig.pki.client_b), http1);
        for round in 0..5 {
            for (client, token, expected) in [
                (&a, &token_a, 200),
                (&b, &token_b, 200),
                (&a, &token_b, 401),
                (&b, &token_a, 401),
            ] {
                let reply = get(client, &url, &[("authorization", token.as_bytes())]);
                assert_eq!(reply.status, expected, "round {round}, http1 {http1}");
            }
        }
    }
    // One connection per client and protocol: the requests above really shared connections.
    let connections = rig.envoy.stat("listener.0.0.0.0_0.downstream_cx_total");
    let total = connections.or_else(|| rig.envoy.stat("http.https.downstream_cx_total"));
    assert_eq!(total, Some(4), "connections opened");
}

//! Opaque tokens through real Envoy running envoy/introspection.yaml: certbound asks a real
//! RFC 7662 introspection server on loopback (written here, with tiny_http) and enforces the
//! binding its answer carries. The server counts its calls, so the cache is proven by what it
//! did not see; it can be made slow, failing or unparsable per token.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use certbound_e2e::{client, get, Envoy, Identity, Pki, Reply, Setup, Upstream};
use serde_json::{json, Value};

/// The client credentials in envoy/introspection.yaml.
const CLIENT_ID: &str = "certbound-gateway";
const CLIENT_SECRET: &str = "demo-secret-change-me";

/// One introspection request as the server received it.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    host: String,
    content_type: String,
    authorization: String,
    token: String,
}

/// An introspection endpoint on loopback. It answers from `answers` by token (unknown tokens are
/// inactive) after checking HTTP Basic client authentication, and misbehaves on purpose for
/// tokens named `slow-*` (answers after 2 s), `fail-*` (500) and `html-*` (not JSON).
struct IntrospectionServer {
    port: u16,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    server: Arc<tiny_http::Server>,
}

impl IntrospectionServer {
    fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let answers: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let expected = format!(
            "Basic {}",
            STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        );
        {
            let (server, answers, calls) = (
                Arc::clone(&server),
                Arc::clone(&answers),
                Arc::clone(&calls),
            );
            thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let headers: Vec<(String, String)> = request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string().to_lowercase(), h.value.to_string()))
                        .collect();
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(key, _)| key == name)
                            .map(|(_, value)| value.clone())
                            .unwrap_or_default()
                    };
                    let token = form_value(&body, "token");
                    let call = Call {
                        method: request.method().to_string(),
                        path: request.url().to_string(),
                        host: header("host"),
                        content_type: header("content-type"),
                        authorization: header("authorization"),
                        token: token.clone(),
                    };
                    let authorized = call.authorization == expected;
                    calls.lock().unwrap().push(call);
                    let answer = answers.lock().unwrap().get(&token).cloned();
                    // Each answer on its own thread, so a slow one holds up no other.
                    thread::spawn(move || {
                        let json = |status: u16, body: String| {
                            tiny_http::Response::from_string(body)
                                .with_status_code(status)
                                .with_header(
                                    "content-type: application/json"
                                        .parse::<tiny_http::Header>()
                                        .unwrap(),
                                )
                        };
                        let reply = if !authorized {
                            json(401, json!({"error": "invalid_client"}).to_string())
                        } else if token.starts_with("slow-") {
                            thread::sleep(Duration::from_secs(2));
                            json(200, json!({"active": true}).to_string())
                        } else if token.starts_with("fail-") {
                            json(500, json!({"error": "server_error"}).to_string())
                        } else if token.starts_with("html-") {
                            json(200, "<html>maintenance</html>".into())
                        } else {
                            json(200, answer.unwrap_or(json!({"active": false})).to_string())
                        };
                        let _ = request.respond(reply);
                    });
                }
            });
        }
        IntrospectionServer {
            port,
            answers,
            calls,
            server,
        }
    }

    fn answer(&self, token: &str, response: Value) {
        self.answers.lock().unwrap().insert(token.into(), response);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_for(&self, token: &str) -> usize {
        self.calls().iter().filter(|c| c.token == token).count()
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Decodes one `name=value` pair of an application/x-www-form-urlencoded body.
fn form_value(body: &str, name: &str) -> String {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            let value = value.replace('+', " ");
            let mut bytes = Vec::new();
            let mut rest = value.as_bytes();
            while let Some((&b, tail)) = rest.split_first() {
                if b == b'%' && tail.len() >= 2 {
                    let hex = std::str::from_utf8(&tail[..2]).unwrap();
                    bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    rest = &tail[2..];
                } else {
                    bytes.push(b);
                    rest = tail;
                }
            }
            String::from_utf8(bytes).unwrap()
        })
        .unwrap_or_default()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bound_to(identity: &Identity) -> Value {
    json!({"active": true, "exp": now() + 300, "client_id": "app",
           "cnf": {"x5t#S256": identity.x5t_s256()}})
}

struct Rig {
    pki: Pki,
    upstream: Upstream,
    envoy: Envoy,
}

/// Envoy with envoy/introspection.yaml; `plugin_config` replaces its certbound configuration,
/// `introspection_port` is where its `introspection` cluster points.
fn start(pki: Pki, plugin_config: Option<&str>, introspection_port: u16) -> Rig {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&Setup {
        config: "envoy/introspection.yaml",
        plugin_config,
        clusters: vec![
            ("upstream", upstream.port),
            ("introspection", introspection_port),
        ],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    });
    Rig {
        pki,
        upstream,
        envoy,
    }
}

impl Rig {
    /// One request over a new connection, with `identity`'s certificate if any.
    fn call(&self, identity: Option<&Identity>, token: &str) -> Reply {
        self.call_with(identity, token, &[])
    }

    /// The same request, also carrying the client's own copies of the headers certbound writes
    /// for the upstream.
    fn call_forging(&self, identity: Option<&Identity>, token: &str) -> Reply {
        let forged: &[(&str, &[u8])] = &[
            ("x-client-cert-thumbprint", b"forged"),
            ("x-certbound-audit", b"forged"),
        ];
        self.call_with(identity, token, forged)
    }

    fn call_with(
        &self,
        identity: Option<&Identity>,
        token: &str,
        extra: &[(&str, &[u8])],
    ) -> Reply {
        let client = client(&self.pki, identity, false);
        let authorization = format!("Bearer {token}");
        let mut headers = vec![("authorization", authorization.as_bytes())];
        headers.extend_from_slice(extra);
        get(
            &client,
            &format!("{}/orders/7", self.envoy.https("https")),
            &headers,
        )
    }

    /// Asserts a denial: status, RFC 6750 error code and certbound's log line.
    fn expect_denied(&self, row: &str, reply: &Reply, status: u16, error: &str, reason: &str) {
        assert_eq!(reply.status, status, "{row}: {}", reply.body);
        assert_eq!(reply.json()["error"], error, "{row}");
        let line = self.envoy.certbound_log().pop().unwrap_or_default();
        assert!(
            line.contains(&format!(": {reason} ({status})")),
            "{row}: {line}"
        );
    }

    /// A certbound counter, once it reads `expected` (or after the wait for it runs out).
    fn counter(&self, name: &str, expected: u64) -> u64 {
        self.envoy.counter(name, expected).unwrap_or_default()
    }
}

#[test]
fn opaque_tokens_are_enforced_with_the_binding_from_introspection_and_cached() {
    let server = IntrospectionServer::start();
    let pki = Pki::new();
    server.answer("opaque-bound-to-a", bound_to(&pki.client_a));
    server.answer(
        "opaque-unbound",
        json!({"active": true, "exp": now() + 300}),
    );
    server.answer("opaque-revoked", json!({"active": false}));
    let rig = start(pki, None, server.port);
    let (a, b) = (&rig.pki.client_a, &rig.pki.client_b);

    // Bound, with its certificate: passes, several times, on one introspection call.
    for round in 0..3 {
        let reply = rig.call(Some(a), "opaque-bound-to-a");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.body);
        assert_eq!(reply.body, "upstream reached");
        let seen = rig.upstream.requests().pop().unwrap();
        assert_eq!(
            seen.header("x-client-cert-thumbprint"),
            Some(a.x5t_s256().as_str())
        );
    }
    assert_eq!(server.calls_for("opaque-bound-to-a"), 1);

    // The cached "active, bound to A" is still compared with the certificate presented.
    let reply = rig.call(Some(b), "opaque-bound-to-a");
    rig.expect_denied(
        "stolen",
        &reply,
        401,
        "invalid_token",
        "thumbprint_mismatch",
    );
    let reply = rig.call(None, "opaque-bound-to-a");
    rig.expect_denied(
        "no certificate",
        &reply,
        401,
        "invalid_token",
        "no_client_certificate",
    );
    assert_eq!(
        server.calls_for("opaque-bound-to-a"),
        1,
        "served from cache"
    );

    // Active and unbound: passes (require_bound_token is off).
    assert_eq!(rig.call(Some(b), "opaque-unbound").status, 200);
    // Inactive: refused, and the inactive answer is cached too.
    for _ in 0..2 {
        let reply = rig.call(Some(a), "opaque-revoked");
        rig.expect_denied("inactive", &reply, 401, "invalid_token", "inactive_token");
    }
    assert_eq!(server.calls_for("opaque-revoked"), 1);
    // Unknown to the server (it answers inactive).
    let reply = rig.call(Some(a), "opaque-never-issued");
    rig.expect_denied("unknown", &reply, 401, "invalid_token", "inactive_token");

    // A JWT is read, not introspected ("tokens": "opaque").
    let jwt = a.bound_token();
    assert_eq!(rig.call(Some(a), &jwt).status, 200);
    let reply = rig.call(Some(b), &jwt);
    rig.expect_denied("jwt", &reply, 401, "invalid_token", "thumbprint_mismatch");
    assert_eq!(server.calls_for(&jwt), 0);

    // What the server received: RFC 7662 §2.1 with HTTP Basic client authentication.
    let calls = server.calls();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/introspect");
        assert_eq!(call.host, "as.certbound.demo");
        assert_eq!(call.content_type, "application/x-www-form-urlencoded");
        assert_eq!(call.authorization, expected);
    }

    assert_eq!(rig.counter("introspection.calls", 4), 4);
    assert_eq!(rig.counter("introspection.cache_hits", 5), 5);
    assert_eq!(rig.counter("denied.inactive_token", 3), 3);

    // No token and no secret in Envoy's log.
    let log = rig.envoy.log();
    for secret in [
        "opaque-bound-to-a",
        "opaque-unbound",
        "opaque-revoked",
        "opaque-never-issued",
        jwt.as_str(),
        CLIENT_SECRET,
        expected.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} in Envoy's log");
    }
}

/// The request waits for the introspection answer; when it goes on, the client's copies of the
/// headers certbound writes are replaced or removed all the same, in enforce and in audit mode.
#[test]
fn forged_headers_do_not_survive_the_wait_for_introspection() {
    let audit_config = json!({
        "mode": "audit",
        "forward_thumbprint_header": "x-client-cert-thumbprint",
        "introspection": {"cluster": "introspection", "client_id": CLIENT_ID,
                          "client_secret": CLIENT_SECRET},
    })
    .to_string();
    for config in [None, Some(audit_config.as_str())] {
        let audit_mode = config.is_some();
        let server = IntrospectionServer::start();
        let pki = Pki::new();
        server.answer("opaque-bound-to-a", bound_to(&pki.client_a));
        server.answer("opaque-unbound", json!({"active": true}));
        server.answer("opaque-revoked", json!({"active": false}));
        let rig = start(pki, config, server.port);
        let a = &rig.pki.client_a;
        for (token, thumbprint, would_deny) in [
            ("opaque-bound-to-a", Some(a.x5t_s256()), None),
            ("opaque-unbound", None, None),
            ("opaque-revoked", None, Some("inactive_token")),
        ] {
            let row = format!("audit mode {audit_mode}, {token}");
            let reply = rig.call_forging(Some(a), token);
            if !audit_mode && would_deny.is_some() {
                rig.expect_denied(&row, &reply, 401, "invalid_token", "inactive_token");
                continue;
            }
            assert_eq!(reply.status, 200, "{row}: {}", reply.body);
            let seen = rig.upstream.requests().pop().unwrap();
            assert_eq!(
                seen.header("x-client-cert-thumbprint"),
                thumbprint.as_deref(),
                "{row}"
            );
            // The audit header is certbound's only where a request may be audited.
            if audit_mode {
                assert_eq!(seen.header("x-certbound-audit"), would_deny, "{row}");
            }
        }
        assert_eq!(server.calls().len(), 3);
    }
}

#[test]
fn require_bound_token_refuses_an_active_unbound_token() {
    let server = IntrospectionServer::start();
    let pki = Pki::new();
    server.answer("opaque-bound-to-a", bound_to(&pki.client_a));
    server.answer("opaque-unbound", json!({"active": true}));
    let config = json!({
        "require_bound_token": true,
        "introspection": {"cluster": "introspection", "client_id": CLIENT_ID,
                          "client_secret": CLIENT_SECRET},
    })
    .to_string();
    let rig = start(pki, Some(&config), server.port);
    let a = &rig.pki.client_a;

    let reply = rig.call(Some(a), "opaque-unbound");
    rig.expect_denied("unbound", &reply, 401, "invalid_token", "unbound_token");
    assert_eq!(rig.call(Some(a), "opaque-bound-to-a").status, 200);
    assert_eq!(rig.upstream.count(), 1);
}

#[test]
fn every_failure_of_the_endpoint_denies() {
    let server = IntrospectionServer::start();
    let pki = Pki::new();
    let config = json!({
        "introspection": {"cluster": "introspection", "authority": "as.certbound.demo",
                          "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                          "timeout_ms": 300},
    })
    .to_string();
    let rig = start(pki, Some(&config), server.port);
    let a = &rig.pki.client_a;

    for (row, token) in [
        ("timeout", "slow-1"),
        ("500", "fail-1"),
        ("not JSON", "html-1"),
    ] {
        let reply = rig.call(Some(a), token);
        rig.expect_denied(row, &reply, 503, "server_error", "introspection_failed");
        assert!(reply
            .header("www-authenticate")
            .unwrap_or_default()
            .contains("server_error"));
    }
    // Failures are not cached: the next request asks again.
    let reply = rig.call(Some(a), "fail-1");
    rig.expect_denied(
        "500 again",
        &reply,
        503,
        "server_error",
        "introspection_failed",
    );
    assert_eq!(server.calls_for("fail-1"), 2);

    let causes: Vec<String> = rig
        .envoy
        .certbound_log()
        .into_iter()
        .filter(|line| line.contains("introspection failed:"))
        .collect();
    // Envoy answers a callout that runs past timeout_ms with its own 504.
    assert!(
        causes.iter().any(|l| l.contains("answered 504")),
        "{causes:#?}"
    );
    assert!(
        causes.iter().any(|l| l.contains("answered 500")),
        "{causes:#?}"
    );
    assert!(
        causes.iter().any(|l| l.contains("not a JSON object")),
        "{causes:#?}"
    );
    assert_eq!(rig.counter("denied.introspection_failed", 4), 4);
    assert_eq!(rig.upstream.count(), 0);
    assert!(!rig.envoy.log().contains("slow-1"));
}

#[test]
fn wrong_client_credentials_deny() {
    let server = IntrospectionServer::start();
    let pki = Pki::new();
    server.answer("opaque-bound-to-a", bound_to(&pki.client_a));
    let config = json!({
        "introspection": {"cluster": "introspection", "client_id": CLIENT_ID,
                          "client_secret": "not-the-secret"},
    })
    .to_string();
    let rig = start(pki, Some(&config), server.port);

    let reply = rig.call(Some(&rig.pki.client_a), "opaque-bound-to-a");
    rig.expect_denied(
        "bad secret",
        &reply,
        503,
        "server_error",
        "introspection_failed",
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].authorization,
        format!(
            "Basic {}",
            STANDARD.encode(format!("{CLIENT_ID}:not-the-secret"))
        )
    );
    assert!(!rig.envoy.log().contains("not-the-secret"));
}

#[test]
fn an_endpoint_that_is_down_or_missing_denies() {
    // A port with nothing listening: the callout's connection fails.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let rig = start(Pki::new(), None, port);
    let reply = rig.call(Some(&rig.pki.client_a), "opaque-token");
    rig.expect_denied("down", &reply, 503, "server_error", "introspection_failed");
    assert_eq!(rig.upstream.count(), 0);

    // A cluster Envoy does not have: the callout cannot be made. With on_error_status 401.
    let config = json!({
        "introspection": {"cluster": "no-such-cluster", "on_error_status": 401},
    })
    .to_string();
    let rig = start(Pki::new(), Some(&config), port);
    let reply = rig.call(Some(&rig.pki.client_a), "opaque-token");
    rig.expect_denied(
        "missing",
        &reply,
        401,
        "invalid_token",
        "introspection_failed",
    );
    assert!(rig
        .envoy
        .certbound_log()
        .iter()
        .any(|line| line.contains("cannot call cluster no-such-cluster")));
    assert_eq!(rig.upstream.count(), 0);
}

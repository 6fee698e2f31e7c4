//! Operating certbound (issue: production operation): counters, filter state in the access log,
//! audit header, exemptions, the forwarded thumbprint, gRPC denials. Real Envoy, envoy/envoy.yaml.

use std::time::{Duration, Instant};

use certbound_e2e::{client, get, jwt, Envoy, Pki, Setup, Upstream};
use serde_json::json;

fn start(pki: &Pki, upstream: &Upstream, plugin_config: Option<&str>) -> Envoy {
    Envoy::start(&Setup {
        config: "envoy/envoy.yaml",
        plugin_config,
        clusters: vec![("upstream", upstream.port)],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    })
}

/// Waits (bounded) until Envoy's log has a line containing `needle`: the stdout access log is
/// flushed by Envoy on its own schedule.
fn wait_for_log(envoy: &Envoy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(line) = envoy.log().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shipped_config_counts_forwards_and_logs() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    // The shipped configuration as it is: exemptions, forwarded thumbprint, filter state.
    let envoy = start(&pki, &upstream, None);
    let url = |path: &str| format!("{}{path}", envoy.https("https"));
    let a = client(&pki, Some(&pki.client_a), false);
    let b = client(&pki, Some(&pki.client_b), false);
    let anonymous = client(&pki, None, false);
    let token_a = format!("Bearer {}", pki.client_a.bound_token());
    let auth = token_a.as_bytes();

    // A match: the upstream gets the thumbprint, and never the client's own copy of the header.
    let reply = get(
        &a,
        &url("/orders"),
        &[
            ("authorization", auth),
            ("x-client-cert-thumbprint", b"forged"),
        ],
    );
    assert_eq!(reply.status, 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.header("x-client-cert-thumbprint"),
        Some(pki.client_a.x5t_s256().as_str())
    );

    // An unbound token passes with no thumbprint header, even when the client sent one.
    let unbound = format!("Bearer {}", jwt(&json!({"sub": "plain"})));
    let reply = get(
        &b,
        &url("/orders"),
        &[
            ("authorization", unbound.as_bytes()),
            ("x-client-cert-thumbprint", b"forged"),
        ],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream
            .requests()
            .pop()
            .unwrap()
            .header("x-client-cert-thumbprint"),
        None
    );

    // Denials, by reason.
    assert_eq!(
        get(&b, &url("/orders"), &[("authorization", auth)]).status,
        401
    );
    assert_eq!(
        get(&b, &url("/orders"), &[("authorization", auth)]).status,
        401
    );
    assert_eq!(
        get(&anonymous, &url("/orders"), &[("authorization", auth)]).status,
        401
    );

    // A path that skips the check still never passes on a header certbound owns.
    let forged: &[(&str, &[u8])] = &[
        ("authorization", auth),
        ("x-client-cert-thumbprint", b"forged"),
    ];
    for path in ["/healthz", "/public/catalog"] {
        assert_eq!(get(&b, &url(path), forged).status, 200, "{path}");
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(seen.header("x-client-cert-thumbprint"), None, "{path}");
    }

    // Exemptions: exact and prefix, with the query string ignored; not after normalisation.
    assert_eq!(
        get(&b, &url("/healthz?full=1"), &[("authorization", auth)]).status,
        200
    );
    assert_eq!(
        get(
            &b,
            &url("/.well-known/jwks.json"),
            &[("authorization", auth)]
        )
        .status,
        200
    );
    assert_eq!(
        get(&b, &url("/healthz/../orders"), &[("authorization", auth)]).status,
        401
    );
    assert_eq!(
        get(&b, &url("/healthzz"), &[("authorization", auth)]).status,
        401
    );

    // Every expected count is reached by the same flush, so a counter that must stay at zero is
    // read after the others have arrived.
    for (name, expected) in [
        ("checked", 7),
        ("passed.bound", 1),
        ("passed.unbound", 1),
        ("denied.thumbprint_mismatch", 4),
        ("denied.no_client_certificate", 1),
        ("exempt", 4),
        ("audit.would_deny.thumbprint_mismatch", 0),
    ] {
        assert_eq!(envoy.counter(name, expected), Some(expected), "{name}");
    }
    let prometheus = envoy.admin_get("/stats/prometheus").unwrap();
    assert!(
        prometheus
            .lines()
            .any(|l| l.starts_with("certbound_denied_thumbprint_mismatch{") && l.ends_with(" 4")),
        "{}",
        prometheus
            .lines()
            .filter(|l| l.contains("certbound"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A header name with underscores is refused by Envoy (CGI-style upstreams would read it as
    // x-client-cert-thumbprint): 400 over HTTP/1.1, a reset stream over HTTP/2.
    let forged_underscore: &[(&str, &[u8])] = &[
        ("authorization", auth),
        ("x_client_cert_thumbprint", b"forged"),
    ];
    let a_http1 = client(&pki, Some(&pki.client_a), true);
    assert_eq!(
        get(&a_http1, &url("/orders"), forged_underscore).status,
        400
    );
    let mut request = a.get(url("/orders"));
    for (name, value) in forged_underscore {
        request = request.header(*name, *value);
    }
    assert!(
        request.send().is_err(),
        "HTTP/2 request with an underscore header was answered"
    );

    // The access log prints the verdict and the thumbprint from certbound's filter state.
    let line = wait_for_log(&envoy, "certbound=bound");
    assert!(
        line.contains(&format!("thumbprint={}", pki.client_a.x5t_s256())),
        "{line}"
    );
    let line = wait_for_log(&envoy, "certbound=denied:thumbprint_mismatch");
    // The local reply names its reason in Envoy's response code details too.
    assert!(
        line.contains("details=certbound_thumbprint_mismatch"),
        "{line}"
    );
    wait_for_log(&envoy, "certbound=exempt");
}

#[test]
fn audit_mode_tells_the_upstream() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let envoy = start(&pki, &upstream, Some(r#"{"mode": "audit"}"#));
    let url = format!("{}/orders", envoy.https("https"));
    let token_a = format!("Bearer {}", pki.client_a.bound_token());
    let b = client(&pki, Some(&pki.client_b), false);
    let a = client(&pki, Some(&pki.client_a), false);

    let reply = get(&b, &url, &[("authorization", token_a.as_bytes())]);
    assert_eq!(reply.status, 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.header("x-certbound-audit"),
        Some("thumbprint_mismatch")
    );

    // A client cannot plant the header on a request certbound has nothing against.
    let reply = get(
        &a,
        &url,
        &[
            ("authorization", token_a.as_bytes()),
            ("x-certbound-audit", b"ok"),
        ],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream
            .requests()
            .pop()
            .unwrap()
            .header("x-certbound-audit"),
        None
    );

    // Both requests were counted (so the flush that follows them is in) before a counter that
    // must stay at zero is read.
    assert_eq!(envoy.counter("checked", 2), Some(2));
    assert_eq!(
        envoy.counter("audit.would_deny.thumbprint_mismatch", 1),
        Some(1)
    );
    assert_eq!(envoy.counter("denied.thumbprint_mismatch", 0), Some(0));
}

#[test]
fn grpc_requests_are_denied_the_grpc_way() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let envoy = start(&pki, &upstream, Some("{}"));
    let token_a = format!("Bearer {}", pki.client_a.bound_token());
    let b = client(&pki, Some(&pki.client_b), false);
    let reply = get(
        &b,
        &format!("{}/certbound.v1.Orders/Get", envoy.https("https")),
        &[
            ("authorization", token_a.as_bytes()),
            ("content-type", b"application/grpc+proto"),
        ],
    );
    // gRPC carries its status in grpc-status; a trailers-only reply is HTTP 200.
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert_eq!(reply.header("grpc-status"), Some("16"));
    // Envoy turns the local reply into the gRPC answer: the JSON body, percent-encoded (which
    // leaves it as it is), is the message.
    let message: serde_json::Value =
        serde_json::from_str(reply.header("grpc-message").unwrap()).unwrap();
    assert_eq!(message["error"], "invalid_token");
    assert_eq!(
        message["error_description"],
        "the access token is bound to a different client certificate"
    );
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(upstream.count(), 0);

    // gRPC-Web is not gRPC on the wire: it gets the HTTP denial, not a gRPC trailer it would
    // never read (which would look like 200 to it).
    let reply = get(
        &b,
        &format!("{}/certbound.v1.Orders/Get", envoy.https("https")),
        &[
            ("authorization", token_a.as_bytes()),
            ("content-type", b"application/grpc-web"),
        ],
    );
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("grpc-status"), None);
    assert_eq!(upstream.count(), 0);
}

#[test]
fn routes_override_the_policy_through_metadata() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let envoy = start(&pki, &upstream, None);
    let url = |path: &str| format!("{}{path}", envoy.https("https"));
    let token_a = format!("Bearer {}", pki.client_a.bound_token());
    let unbound = format!("Bearer {}", jwt(&json!({"sub": "plain"})));
    let b = client(&pki, Some(&pki.client_b), false);
    let stolen: &[(&str, &[u8])] = &[("authorization", token_a.as_bytes())];
    let plain: &[(&str, &[u8])] = &[("authorization", unbound.as_bytes())];

    // /public/: certbound is off.
    assert_eq!(get(&b, &url("/public/catalog"), stolen).status, 200);
    // /payments/: bound tokens only.
    assert_eq!(get(&b, &url("/payments/1"), plain).status, 401);
    assert_eq!(get(&b, &url("/orders/1"), plain).status, 200);
    // /beta/: audit only.
    assert_eq!(get(&b, &url("/beta/1"), stolen).status, 200);
    assert_eq!(
        upstream
            .requests()
            .pop()
            .unwrap()
            .header("x-certbound-audit"),
        Some("thumbprint_mismatch")
    );
    // Everything else: the plugin's enforce mode.
    assert_eq!(get(&b, &url("/orders/1"), stolen).status, 401);

    assert_eq!(envoy.counter("denied.unbound_token", 1), Some(1));
    assert_eq!(
        envoy.counter("audit.would_deny.thumbprint_mismatch", 1),
        Some(1)
    );
    assert_eq!(envoy.counter("exempt", 1), Some(1));
}

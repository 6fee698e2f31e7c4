//! Client certificates forwarded by a TLS-terminating proxy (issue: forwarded certificates).
//!
//! Real proxies in front of a real Envoy running certbound with envoy/envoy-behind-proxy.yaml:
//! nginx (Debian package) forwarding `$ssl_client_escaped_cert`, an edge Envoy
//! (envoy/edge-envoy.yaml) forwarding XFCC over mTLS. Distinct loopback addresses play trusted
//! (127.0.0.2) and untrusted (127.0.0.3) callers.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use certbound_e2e::{
    client_from, get, jwt, repo_root, url_encoded, Envoy, Identity, Pki, Reply, Setup, Upstream,
};
use serde_json::json;

const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn behind_proxy(pki: &Pki, upstream: &Upstream, http_plugin_config: Option<&str>) -> Envoy {
    let listener_plugin_configs = http_plugin_config
        .map(|c| ("http", c))
        .into_iter()
        .collect();
    Envoy::start(&Setup {
        config: "envoy/envoy-behind-proxy.yaml",
        plugin_config: None,
        clusters: vec![("upstream", upstream.port)],
        pki_dir: pki.dir.path(),
        listener_plugin_configs,
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn expect_denial(reply: &Reply, envoy: &Envoy, reason: &str, row: &str) {
    assert_eq!(reply.status, 401, "{row}: {}", reply.body);
    let line = envoy.certbound_log().pop().unwrap_or_default();
    assert!(line.contains(&format!(": {reason} (401)")), "{row}: {line}");
}

// ---------------------------------------------------------------------------------------------
// nginx

/// nginx running the shipped envoy/nginx/nginx.conf, with only addresses and paths changed, and
/// `proxy_bind` so its connections to Envoy come from the trusted address.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(pki: &Pki, envoy_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut conf = fs::read_to_string(repo_root().join("envoy/nginx/nginx.conf")).unwrap();
        let pki_dir = format!("{}/", pki.dir.path().display());
        let prefix = dir.path().display().to_string();
        for (from, to) in [
            ("/certbound/build/demo/", pki_dir.as_str()),
            (
                "server envoy-behind-proxy:8080;",
                &format!("server 127.0.0.1:{envoy_port};"),
            ),
            ("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;")),
            // Debian's nginx (1.22) predates the `http2` directive of the compose image (1.27).
            ("http2 on;", ""),
            ("pid /tmp/nginx.pid;", &format!("pid {prefix}/nginx.pid;")),
            (
                "error_log /dev/stderr warn;",
                &format!("error_log {prefix}/error.log warn;"),
            ),
            (
                "access_log /dev/stdout;",
                &format!("access_log {prefix}/access.log;"),
            ),
            (
                "proxy_pass http://certbound;",
                "proxy_pass http://certbound;\n      proxy_bind 127.0.0.2;",
            ),
        ] {
            assert!(
                conf.contains(from),
                "envoy/nginx/nginx.conf no longer has {from:?}"
            );
            conf = conf.replace(from, to);
        }
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            // One process, no workers: killing it on drop leaves nothing behind listening.
            .args(["-g", "daemon off; master_process off; user root;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited with {status}:\n{}", nginx.log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening:\n{}",
                nginx.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .map(|f| fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- nginx log -----\n{}", self.log());
        }
    }
}

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx is not installed (apt-get install nginx; .ci/run does it)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn nginx_in_front_forwards_the_certificate_and_spoofs_are_ignored() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    // The shipped plugin configuration, trusting nginx's test address instead of the compose one.
    let config = json!({
        "mode": "enforce",
        "certificate_header": "x-client-cert",
        "certificate_header_format": "url-encoded-pem",
        "trusted_proxies": {"cidrs": ["127.0.0.2/32"]},
        "strip_certificate_header": true
    })
    .to_string();
    let envoy = behind_proxy(&pki, &upstream, Some(&config));
    let nginx = Nginx::start(&pki, envoy.port("http"));
    let via_nginx = |identity: Option<&Identity>, authorization: &str| {
        let client = client_from(&pki, identity, false, None);
        get(
            &client,
            &nginx.url("/orders/1"),
            &[("authorization", authorization.as_bytes())],
        )
    };
    let token_a = bearer(&pki.client_a.bound_token());
    let unbound = bearer(&jwt(&json!({"sub": "plain"})));

    let reply = via_nginx(Some(&pki.client_a), &token_a);
    assert_eq!(reply.status, 200, "A through nginx: {}", reply.body);
    assert_eq!(
        upstream.requests().pop().unwrap().header("x-client-cert"),
        None,
        "not stripped"
    );

    let reply = via_nginx(Some(&pki.client_b), &token_a);
    expect_denial(
        &reply,
        &envoy,
        "thumbprint_mismatch",
        "B with A's token through nginx",
    );
    let reply = via_nginx(None, &token_a);
    expect_denial(
        &reply,
        &envoy,
        "no_client_certificate",
        "A's token, no certificate",
    );
    assert_eq!(
        via_nginx(None, &unbound).status,
        200,
        "unbound token through nginx"
    );

    // Straight to Envoy from an address that is not the proxy: the header is ignored and removed.
    let spoofed = url_encoded(&pki.client_a.cert_pem);
    let direct = format!("http://127.0.0.1:{}/orders/1", envoy.port("http"));
    let untrusted = client_from(&pki, None, false, Some(UNTRUSTED));
    let reply = get(
        &untrusted,
        &direct,
        &[
            ("authorization", token_a.as_bytes()),
            ("x-client-cert", spoofed.as_bytes()),
        ],
    );
    expect_denial(
        &reply,
        &envoy,
        "no_client_certificate",
        "spoofed header from 127.0.0.3",
    );
    let reply = get(
        &untrusted,
        &direct,
        &[
            ("authorization", unbound.as_bytes()),
            ("x-client-cert", spoofed.as_bytes()),
        ],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream.requests().pop().unwrap().header("x-client-cert"),
        None,
        "passed on"
    );

    // From the trusted address: no header means no certificate, never a fallback.
    let trusted = client_from(&pki, None, false, Some(TRUSTED));
    let reply = get(&trusted, &direct, &[("authorization", token_a.as_bytes())]);
    expect_denial(
        &reply,
        &envoy,
        "no_client_certificate",
        "trusted proxy, no header",
    );
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token_a.as_bytes()),
            ("x-client-cert", b"-----BEGIN%20junk"),
        ],
    );
    expect_denial(
        &reply,
        &envoy,
        "malformed_certificate",
        "trusted proxy, malformed header",
    );
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token_a.as_bytes()),
            ("x-client-cert", spoofed.as_bytes()),
        ],
    );
    assert_eq!(
        reply.status, 200,
        "the same header from the trusted address counts"
    );
    // Two copies, even of the right certificate first, are ambiguous: a proxy that appends
    // rather than replaces would let a client's copy count.
    let victim = url_encoded(&pki.client_a.cert_pem);
    let mine = url_encoded(&pki.client_b.cert_pem);
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token_a.as_bytes()),
            ("x-client-cert", victim.as_bytes()),
            ("x-client-cert", mine.as_bytes()),
        ],
    );
    expect_denial(
        &reply,
        &envoy,
        "malformed_certificate",
        "two certificate headers",
    );
}

// ---------------------------------------------------------------------------------------------
// Edge Envoy (XFCC over mTLS, trusted by SPIFFE ID)

#[test]
fn edge_envoy_forwards_xfcc_trusted_by_identity() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    // Both listeners keep their shipped plugin configuration.
    let inner = behind_proxy(&pki, &upstream, None);
    let edge = Envoy::start(&Setup {
        config: "envoy/edge-envoy.yaml",
        plugin_config: None,
        clusters: vec![("certbound", inner.port("from-edge"))],
        pki_dir: pki.dir.path(),
        listener_plugin_configs: vec![],
    });
    let via_edge = |identity: Option<&Identity>, headers: &[(&str, &[u8])]| {
        let client = client_from(&pki, identity, false, None);
        get(
            &client,
            &format!("{}/orders/1", edge.https("edge")),
            headers,
        )
    };
    let token_a = bearer(&pki.client_a.bound_token());
    let auth_a: (&str, &[u8]) = ("authorization", token_a.as_bytes());

    let reply = via_edge(Some(&pki.client_a), &[auth_a]);
    assert_eq!(reply.status, 200, "A through the edge: {}", reply.body);
    assert_eq!(
        upstream
            .requests()
            .pop()
            .unwrap()
            .header("x-forwarded-client-cert"),
        None
    );

    let reply = via_edge(Some(&pki.client_b), &[auth_a]);
    expect_denial(&reply, &inner, "thumbprint_mismatch", "B through the edge");
    // No client certificate: the XFCC holds only the element the inner Envoy appended about the
    // edge, which certbound recognises as the proxy's own.
    let reply = via_edge(None, &[auth_a]);
    expect_denial(
        &reply,
        &inner,
        "no_client_certificate",
        "no certificate through the edge",
    );
    // The edge replaces a client's own XFCC (SANITIZE_SET).
    let forged = format!("Hash={}", pki.client_a.x5t_hex());
    let reply = via_edge(
        Some(&pki.client_b),
        &[auth_a, ("x-forwarded-client-cert", forged.as_bytes())],
    );
    expect_denial(
        &reply,
        &inner,
        "thumbprint_mismatch",
        "forged XFCC through the edge",
    );

    // Straight to the inner listener with a client certificate that is not the edge's: its XFCC
    // is ignored, and its own certificate decides.
    let direct = format!("{}/orders/1", inner.https("from-edge"));
    let b = client_from(&pki, Some(&pki.client_b), false, None);
    let reply = get(
        &b,
        &direct,
        &[auth_a, ("x-forwarded-client-cert", forged.as_bytes())],
    );
    expect_denial(
        &reply,
        &inner,
        "thumbprint_mismatch",
        "forged XFCC from a non-proxy",
    );
    let a = client_from(&pki, Some(&pki.client_a), false, None);
    assert_eq!(
        get(&a, &direct, &[auth_a]).status,
        200,
        "A straight to the inner listener"
    );

    // From the edge's own certificate, two XFCC lines are one element list: Envoy joins the
    // copies of this inline header, so the filter reads them as it reads one comma-separated
    // header, and the last element before the one this Envoy appends counts.
    let as_edge = client_from(&pki, Some(&pki.edge), false, None);
    let hash_a = format!("Hash={}", pki.client_a.x5t_hex());
    let hash_b = format!("Hash={}", pki.client_b.x5t_hex());
    let b_then_a = [
        ("x-forwarded-client-cert", hash_b.as_bytes()),
        ("x-forwarded-client-cert", hash_a.as_bytes()),
    ];
    let reply = get(&as_edge, &direct, &[auth_a, b_then_a[0], b_then_a[1]]);
    assert_eq!(
        reply.status, 200,
        "two XFCC lines, A's last: {}",
        reply.body
    );
    let joined = format!("{hash_b},{hash_a}");
    let reply = get(
        &as_edge,
        &direct,
        &[auth_a, ("x-forwarded-client-cert", joined.as_bytes())],
    );
    assert_eq!(
        reply.status, 200,
        "one joined XFCC, A's last: {}",
        reply.body
    );
    let reply = get(&as_edge, &direct, &[auth_a, b_then_a[1], b_then_a[0]]);
    expect_denial(
        &reply,
        &inner,
        "thumbprint_mismatch",
        "two XFCC lines, B's last",
    );
}

// ---------------------------------------------------------------------------------------------
// Every header shape, from a trusted proxy address

#[test]
fn every_header_shape_reaches_the_right_verdict() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let config = json!({
        "certificate_header": "x-client-cert",
        "trusted_proxies": {"cidrs": ["127.0.0.2/32"]}
    })
    .to_string();
    let envoy = behind_proxy(&pki, &upstream, Some(&config));
    let direct = format!("http://127.0.0.1:{}/orders/1", envoy.port("http"));
    let trusted = client_from(&pki, None, false, Some(TRUSTED));
    let untrusted = client_from(&pki, None, false, Some(UNTRUSTED));
    let token_a = bearer(&pki.client_a.bound_token());
    let token_b = bearer(&pki.client_b.bound_token());

    let a = &pki.client_a;
    let pem_body: String = a
        .cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let shapes = [
        ("URL-encoded PEM", url_encoded(&a.cert_pem)),
        (
            "PEM, newlines as spaces",
            a.cert_pem.lines().collect::<Vec<_>>().join(" "),
        ),
        (
            "PEM, newlines as tabs",
            a.cert_pem.lines().collect::<Vec<_>>().join("\t"),
        ),
        (
            "PEM, no newlines",
            format!("-----BEGIN CERTIFICATE-----{pem_body}-----END CERTIFICATE-----"),
        ),
        ("base64 DER", STANDARD.encode(&a.der)),
        (
            "base64url DER, quoted",
            format!("\"{}\"", URL_SAFE_NO_PAD.encode(&a.der)),
        ),
        ("base64 PEM", STANDARD.encode(&a.cert_pem)),
        ("RFC 9440", format!(":{}:", STANDARD.encode(&a.der))),
        ("XFCC Hash", format!("Hash={}", a.x5t_hex())),
        (
            "XFCC Cert, tricky Subject",
            format!(
                "By=spiffe://x;Hash={};Cert=\"{}\";Subject=\"CN=a, OU=b;c=d\"",
                a.x5t_hex(),
                url_encoded(&a.cert_pem)
            ),
        ),
        (
            "XFCC, two elements",
            format!(
                "Hash={};URI=spiffe://first,Hash={}",
                pki.client_b.x5t_hex(),
                a.x5t_hex()
            ),
        ),
    ];
    for (shape, value) in &shapes {
        let cert = ("x-client-cert", value.as_bytes());
        let reply = get(
            &trusted,
            &direct,
            &[("authorization", token_a.as_bytes()), cert],
        );
        assert_eq!(reply.status, 200, "{shape}: {}", reply.body);
        let reply = get(
            &trusted,
            &direct,
            &[("authorization", token_b.as_bytes()), cert],
        );
        expect_denial(&reply, &envoy, "thumbprint_mismatch", shape);
        // The same header from an untrusted address changes nothing.
        let reply = get(
            &untrusted,
            &direct,
            &[("authorization", token_a.as_bytes()), cert],
        );
        expect_denial(&reply, &envoy, "no_client_certificate", shape);
    }
    assert_eq!(upstream.count(), shapes.len());
    assert!(upstream
        .requests()
        .iter()
        .all(|r| r.header("x-client-cert").is_none()));

    for (what, value) in [
        ("not a certificate", "aGVsbG8gd29ybGQ=".to_string()),
        ("XFCC with unbalanced quotes", "Hash=\"abc".to_string()),
        (
            "XFCC with Cert and a Hash that disagree",
            format!(
                "Hash={};Cert=\"{}\"",
                pki.client_b.x5t_hex(),
                url_encoded(&a.cert_pem)
            ),
        ),
        (
            "PEM cut short",
            a.cert_pem.lines().take(5).collect::<Vec<_>>().join(" "),
        ),
    ] {
        let reply = get(
            &trusted,
            &direct,
            &[
                ("authorization", token_a.as_bytes()),
                ("x-client-cert", value.as_bytes()),
            ],
        );
        expect_denial(&reply, &envoy, "malformed_certificate", what);
    }
}

/// RFC 9440 by name: `Client-Cert` carrying the DER as a structured-field byte sequence; a chain
/// in one header counts only its leaf.
#[test]
fn rfc9440_client_cert_and_chains() {
    let pki = Pki::new();
    let upstream = Upstream::start();
    let config = json!({
        "certificate_header": "client-cert",
        "certificate_header_format": "rfc9440",
        "trusted_proxies": {"cidrs": ["127.0.0.2/32"]},
    })
    .to_string();
    let envoy = behind_proxy(&pki, &upstream, Some(&config));
    let direct = format!("http://127.0.0.1:{}/orders/1", envoy.port("http"));
    let trusted = client_from(&pki, None, false, Some(TRUSTED));
    let token_a = bearer(&pki.client_a.bound_token());
    let value = format!(":{}:", STANDARD.encode(&pki.client_a.der));
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token_a.as_bytes()),
            ("client-cert", value.as_bytes()),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let pem = "-----BEGIN%20CERTIFICATE-----";
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token_a.as_bytes()),
            ("client-cert", pem.as_bytes()),
        ],
    );
    expect_denial(
        &reply,
        &envoy,
        "malformed_certificate",
        "PEM where RFC 9440 is configured",
    );
    drop(envoy);

    // A chain (leaf, then CA) in URL-encoded PEM: the leaf counts, a token bound to the CA does
    // not match.
    let config = json!({
        "certificate_header": "x-client-cert",
        "trusted_proxies": {"cidrs": ["127.0.0.2/32"]},
    })
    .to_string();
    let envoy = behind_proxy(&pki, &upstream, Some(&config));
    let direct = format!("http://127.0.0.1:{}/orders/1", envoy.port("http"));
    let chain = url_encoded(&format!("{}{}", pki.client_a.cert_pem, pki.ca.cert_pem));
    let cert = ("x-client-cert", chain.as_bytes());
    assert_eq!(
        get(
            &trusted,
            &direct,
            &[("authorization", token_a.as_bytes()), cert]
        )
        .status,
        200
    );
    let token_ca = bearer(&pki.ca.bound_token());
    let reply = get(
        &trusted,
        &direct,
        &[("authorization", token_ca.as_bytes()), cert],
    );
    expect_denial(
        &reply,
        &envoy,
        "thumbprint_mismatch",
        "token bound to the chain's CA",
    );
}

/// `forwarded_certificate_ca`: a forwarded certificate must come from a configured CA.
#[test]
fn forwarded_certificates_can_be_required_to_chain_to_a_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let upstream = Upstream::start();
    let config = json!({
        "certificate_header": "x-client-cert",
        "trusted_proxies": {"cidrs": ["127.0.0.2/32"]},
        "forwarded_certificate_ca": pki.ca.cert_pem,
    })
    .to_string();
    let envoy = behind_proxy(&pki, &upstream, Some(&config));
    let direct = format!("http://127.0.0.1:{}/orders/1", envoy.port("http"));
    let trusted = client_from(&pki, None, false, Some(TRUSTED));

    let ours = url_encoded(&pki.client_a.cert_pem);
    let token = bearer(&pki.client_a.bound_token());
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token.as_bytes()),
            ("x-client-cert", ours.as_bytes()),
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Issued by another CA: the token matches it, the CA check does not.
    let theirs = url_encoded(&other.client_a.cert_pem);
    let token = bearer(&other.client_a.bound_token());
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token.as_bytes()),
            ("x-client-cert", theirs.as_bytes()),
        ],
    );
    expect_denial(
        &reply,
        &envoy,
        "untrusted_certificate",
        "certificate from another CA",
    );

    // A bare XFCC Hash cannot be checked against a CA.
    let hash = format!("Hash={}", pki.client_a.x5t_hex());
    let token = bearer(&pki.client_a.bound_token());
    let reply = get(
        &trusted,
        &direct,
        &[
            ("authorization", token.as_bytes()),
            ("x-client-cert", hash.as_bytes()),
        ],
    );
    expect_denial(
        &reply,
        &envoy,
        "untrusted_certificate",
        "hash only, CA configured",
    );
}

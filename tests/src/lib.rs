//! The end-to-end harness: a real Envoy running `build/certbound.wasm` with a config shipped in
//! `envoy/`, certificates made at test time, a real upstream, and a real HTTPS client.
//!
//! The shipped config is used as it is, with only what a test must change rewritten: listen and
//! admin addresses (loopback, port 0), the upstream's port, file paths (the test's certificates
//! and the built module) and certbound's configuration. Readiness is polled on the admin
//! endpoint; when a test fails, Envoy's log is printed.

// Test support: a failed setup step should stop the test loudly, which is what these do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How often certbound hands its counts to Envoy (`FLUSH_PERIOD` in filter/src/host.rs).
pub const COUNTER_FLUSH: Duration = Duration::from_secs(1);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn required_file(variable: &str, default: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    assert!(
        path.is_file(),
        "{what} not found at {} (set {variable}, or run `make test`, which sets everything up)",
        path.display()
    );
    path
}

/// The Envoy binary: `$ENVOY_BIN`, else the one `make` installs in `.venv`.
pub fn envoy_bin() -> PathBuf {
    required_file("ENVOY_BIN", ".venv/bin/envoy", "Envoy")
}

/// The filter under test: `$CERTBOUND_WASM`, else `build/certbound.wasm`.
pub fn wasm_path() -> PathBuf {
    required_file("CERTBOUND_WASM", "build/certbound.wasm", "certbound.wasm")
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate with its private key.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Identity {
    /// RFC 8705 `x5t#S256`: base64url of the SHA-256 of the DER, no padding.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(&self.der))
    }

    pub fn x5t_hex(&self) -> String {
        Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A JWT access token bound to this certificate.
    pub fn bound_token(&self) -> String {
        jwt(&json!({"sub": "client", "cnf": {"x5t#S256": self.x5t_s256()}}))
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost, and two client certificates, written to a
/// temporary folder under the names the shipped configs use (`ca.crt`, `server.crt`, ...).
pub struct Pki {
    pub dir: TempDir,
    pub ca: Identity,
    pub server: Identity,
    pub client_a: Identity,
    pub client_b: Identity,
    /// An edge proxy's client certificate, named `spiffe://certbound.demo/edge` as in the
    /// shipped configs.
    pub edge: Identity,
    issuer: Issuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "certbound test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = Identity {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
            der: ca_cert.der().to_vec(),
        };
        let issuer = Issuer::new(params, ca_key);

        let mut pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            server: placeholder(),
            client_a: placeholder(),
            client_b: placeholder(),
            edge: placeholder(),
            issuer,
        };
        pki.server = pki.server();
        pki.edge = pki.issue_with_uri("edge", "spiffe://certbound.demo/edge");
        pki.write("edge.crt", &pki.edge.cert_pem);
        pki.write("edge.key", &pki.edge.key_pem);
        pki.client_a = pki.client("client-a");
        pki.client_b = pki.client("client-b");
        pki.write("ca.crt", &pki.ca.cert_pem);
        pki.write("server.crt", &pki.server.cert_pem);
        pki.write("server.key", &pki.server.key_pem);
        pki
    }

    /// A new client certificate issued by the test CA.
    pub fn client(&self, common_name: &str) -> Identity {
        self.issue(common_name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose subject alternative name is this URI (a SPIFFE ID).
    pub fn issue_with_uri(&self, common_name: &str, uri: &str) -> Identity {
        let san = SanType::URI(uri.try_into().unwrap());
        self.issue(common_name, vec![san], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn server(&self) -> Identity {
        let sans = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        self.issue("localhost", sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Writes a file into the PKI folder and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

fn placeholder() -> Identity {
    Identity {
        cert_pem: String::new(),
        key_pem: String::new(),
        der: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// A JWS compact token with these claims. The signature is not valid: certbound does not check
/// signatures (a filter in front does), so tests of certbound alone do not need one.
pub fn jwt(claims: &Value) -> String {
    jwt_with_payload(claims.to_string().as_bytes())
}

/// A JWS compact token whose payload segment encodes exactly these bytes.
pub fn jwt_with_payload(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"at+jwt"}"#);
    format!("{header}.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(payload))
}

// ---------------------------------------------------------------------------------------------
// Upstream

/// What the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// An HTTP/1.1 upstream on loopback that answers 200 and records every request.
pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::start()
    }
}

impl Upstream {
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, seen) = (Arc::clone(&server), Arc::clone(&seen));
            thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    seen.lock().unwrap().push(Seen {
                        method: request.method().to_string(),
                        path: request.url().to_string(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| (h.field.to_string(), h.value.to_string()))
                            .collect(),
                    });
                    let _ = request.respond(tiny_http::Response::from_string("upstream reached"));
                }
            })
        };
        Upstream {
            port,
            seen,
            server,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

/// How to run one shipped config.
pub struct Setup<'a> {
    /// Path relative to the repository root, e.g. `envoy/envoy.yaml`.
    pub config: &'a str,
    /// certbound's JSON configuration, replacing the one in the file; `None` keeps the file's.
    pub plugin_config: Option<&'a str>,
    /// Cluster name to loopback port, for each cluster the test serves.
    pub clusters: Vec<(&'a str, u16)>,
    /// Folder that stands in for `build/demo/` (certificates and keys).
    pub pki_dir: &'a Path,
    /// certbound's configuration for the plugins of one listener (by name), replacing the file's
    /// and `plugin_config`.
    pub listener_plugin_configs: Vec<(&'a str, &'a str)>,
}

/// A running Envoy. Stopped on drop; its log is printed if the test is failing.
pub struct Envoy {
    child: Child,
    dir: TempDir,
    pub admin: String,
    listeners: HashMap<String, u16>,
}

impl Envoy {
    /// Starts Envoy and waits until it is ready; panics with Envoy's log if it is not.
    pub fn start(setup: &Setup<'_>) -> Self {
        Self::try_start(setup).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"))
    }

    /// Starts Envoy; `Err` carries Envoy's log when it exits or does not get ready.
    pub fn try_start(setup: &Setup<'_>) -> Result<Self, String> {
        Self::try_start_with_module(setup, &wasm_path())
    }

    /// Like [`Envoy::try_start`], with another wasm module in place of certbound.wasm (a test
    /// module that fails on purpose).
    pub fn try_start_with_module(setup: &Setup<'_>, wasm: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = rewrite_config(setup, wasm);
        let config_path = dir.path().join("envoy.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let admin_path = dir.path().join("admin-address");
        let log = fs::File::create(dir.path().join("envoy.log")).unwrap();

        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "--log-level",
                "info",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut envoy = Envoy {
            child,
            dir,
            admin: String::new(),
            listeners: HashMap::new(),
        };

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                return Err(format!("Envoy exited with {status}\n{}", envoy.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("Envoy was not ready after 60 s\n{}", envoy.log()));
            }
            if envoy.admin.is_empty() {
                envoy.admin = fs::read_to_string(&admin_path)
                    .unwrap_or_default()
                    .trim()
                    .into();
            }
            if !envoy.admin.is_empty() && envoy.admin_get("/ready").is_some_and(|r| r == "LIVE\n") {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }

        let listeners: Value =
            serde_json::from_str(&envoy.admin_get("/listeners?format=json").unwrap()).unwrap();
        for status in listeners["listener_statuses"].as_array().unwrap() {
            let port = status["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap();
            envoy
                .listeners
                .insert(status["name"].as_str().unwrap().into(), port as u16);
        }
        Ok(envoy)
    }

    /// `https://127.0.0.1:PORT` of a listener by name.
    pub fn https(&self, listener: &str) -> String {
        format!("https://127.0.0.1:{}", self.port(listener))
    }

    /// The Envoy process id, e.g. to read its memory from `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self, listener: &str) -> u16 {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.listeners))
    }

    pub fn admin_get(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.admin);
        let reply = reqwest::blocking::get(url).ok()?;
        reply.text().ok()
    }

    /// One counter or gauge from `/stats`, by its full name.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let stats = self.admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))?;
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: "))?.parse().ok())
    }

    /// A certbound counter (`wasmcustom.certbound.NAME`) once it reads `expected`, else what it
    /// reads after three of certbound's flush periods: the filter hands most counts to Envoy once
    /// a second, not on every request. An `expected` of 0 is read at once, so a test that needs
    /// a counter to have stayed at zero first waits for one that moved in the same flush.
    pub fn counter(&self, name: &str, expected: u64) -> Option<u64> {
        let name = format!("wasmcustom.certbound.{name}");
        let deadline = Instant::now() + 3 * COUNTER_FLUSH;
        loop {
            let value = self.stat(&name);
            if value == Some(expected) || Instant::now() > deadline {
                return value;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A certbound counter once it has stopped moving: read again after each flush period
    /// until two reads agree (for when the load is over but its total is not known).
    pub fn settled_counter(&self, name: &str) -> Option<u64> {
        let name = format!("wasmcustom.certbound.{name}");
        let mut last = self.stat(&name);
        for _ in 0..10 {
            thread::sleep(COUNTER_FLUSH + Duration::from_millis(200));
            let now = self.stat(&name);
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// certbound's own log lines (Envoy prefixes wasm logs with the plugin name).
    pub fn certbound_log(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| {
                line.split_once("certbound: ")
                    .map(|(_, rest)| rest.to_string())
            })
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "----- Envoy log -----\n{}\n---------------------",
                self.log()
            );
        }
    }
}

/// Reads a shipped config and rewrites what a test must change (see the module documentation).
fn rewrite_config(setup: &Setup<'_>, wasm: &Path) -> Value {
    let text = fs::read_to_string(repo_root().join(setup.config)).unwrap();
    let mut config: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut plugins = 0;
    walk(&mut config, &mut |object| {
        if let Some(Value::String(file)) = object.get_mut("filename") {
            if let Some(name) = file.strip_prefix("build/demo/") {
                *file = setup.pki_dir.join(name).display().to_string();
            } else if file == "build/certbound.wasm" {
                *file = wasm.display().to_string();
            }
        }
        let is_certbound = object.contains_key("vm_config")
            && object.get("name").and_then(Value::as_str) == Some("certbound");
        if is_certbound {
            plugins += 1;
            if let Some(plugin_config) = setup.plugin_config {
                object["configuration"]["value"] = Value::String(plugin_config.into());
            }
        }
    });
    assert!(
        plugins > 0 || setup.plugin_config.is_none(),
        "{} has no certbound plugin",
        setup.config
    );
    for (name, plugin_config) in &setup.listener_plugin_configs {
        let listener = named(&mut config, "listeners", name, setup.config);
        walk(listener, &mut |object| {
            if object.contains_key("vm_config") {
                object["configuration"]["value"] = Value::String((*plugin_config).into());
            }
        });
    }

    let loopback = |port: u16| json!({"address": "127.0.0.1", "port_value": port});
    config["admin"]["address"]["socket_address"] = loopback(0);
    for listener in config["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap()
    {
        listener["address"]["socket_address"] = loopback(0);
    }
    for (name, port) in &setup.clusters {
        let cluster = named(&mut config, "clusters", name, setup.config);
        let endpoints = cluster["load_assignment"]["endpoints"]
            .as_array_mut()
            .unwrap();
        for group in endpoints {
            for endpoint in group["lb_endpoints"].as_array_mut().unwrap() {
                endpoint["endpoint"]["address"]["socket_address"] = loopback(*port);
            }
        }
    }
    config
}

/// The listener or cluster (`kind`) of this name in `static_resources`.
fn named<'a>(config: &'a mut Value, kind: &str, name: &str, file: &str) -> &'a mut Value {
    config["static_resources"][kind]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no {kind} entry named {name}"))
}

/// A PEM as nginx's `$ssl_client_escaped_cert` sends it: everything but RFC 3986 unreserved
/// characters percent-encoded.
pub fn url_encoded(pem: &str) -> String {
    pem.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn walk(value: &mut Value, visit: &mut impl FnMut(&mut serde_json::Map<String, Value>)) {
    match value {
        Value::Object(object) => {
            visit(object);
            for child in object.values_mut() {
                walk(child, visit);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| walk(item, visit)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// An HTTPS client that trusts the test CA and presents `identity`, if any.
pub fn client(
    pki: &Pki,
    identity: Option<&Identity>,
    http1_only: bool,
) -> reqwest::blocking::Client {
    client_from(pki, identity, http1_only, None)
}

/// Like [`client`], with connections made from this local address (e.g. `127.0.0.3`), so one
/// machine can play trusted and untrusted callers.
pub fn client_from(
    pki: &Pki,
    identity: Option<&Identity>,
    http1_only: bool,
    local_address: Option<std::net::IpAddr>,
) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .local_address(local_address)
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.cert_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

/// What came back to the client.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: reqwest::Version,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The parsed JSON body of a certbound denial.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends `GET url` with these extra headers (raw bytes, so tests can send non-UTF-8 values).
pub fn get(client: &reqwest::blocking::Client, url: &str, headers: &[(&str, &[u8])]) -> Reply {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let reply = request.send().unwrap();
    Reply {
        status: reply.status().as_u16(),
        version: reply.version(),
        headers: reply.headers().clone(),
        body: reply.text().unwrap(),
    }
}

pub mod shipped;

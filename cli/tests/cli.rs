//! The `certbound` binary as a user runs it: arguments, standard input, output and exit codes.
//! Certificates are made at test time by the end-to-end harness.

// Test code: a failed step should stop the test loudly, which is what these do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use certbound_e2e::{jwt, jwt_with_payload, Pki};
use serde_json::json;

fn certbound(args: &[&str]) -> Output {
    certbound_with_stdin(args, None)
}

fn certbound_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_certbound"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The value of a `name: value` output line.
fn field(output: &Output, name: &str) -> Option<String> {
    stdout(output).lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// nginx `$ssl_client_escaped_cert`.
fn url_encoded(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn thumbprint_reads_every_shape_the_same() {
    let pki = Pki::new();
    let a = &pki.client_a;
    let pem_file = pki.write("a.crt", &a.cert_pem);
    let der_file = pki.dir.path().join("a.der");
    std::fs::write(&der_file, &a.der).unwrap();

    let values = [
        ("pem file", pem_file.to_str().unwrap().to_string()),
        ("der file", der_file.to_str().unwrap().to_string()),
        ("pem value", a.cert_pem.clone()),
        ("pem one line", a.cert_pem.trim_end().replace('\n', " ")),
        ("url-encoded pem", url_encoded(&a.cert_pem)),
        ("base64 der", STANDARD.encode(&a.der)),
        ("base64 pem", STANDARD.encode(&a.cert_pem)),
        ("rfc9440", format!(":{}:", STANDARD.encode(&a.der))),
        (
            "xfcc",
            format!(
                "Hash={};Cert=\"{}\";Subject=\"CN=client-a\"",
                a.x5t_hex(),
                url_encoded(&a.cert_pem)
            ),
        ),
    ];
    for (shape, value) in values {
        let output = certbound(&["thumbprint", &value]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{shape}: {}",
            stderr(&output)
        );
        assert_eq!(field(&output, "x5t#S256"), Some(a.x5t_s256()), "{shape}");
        assert_eq!(
            field(&output, "x5t#S256 (hex)"),
            Some(a.x5t_hex()),
            "{shape}"
        );
        assert_eq!(
            field(&output, "subject").as_deref(),
            Some("CN=client-a"),
            "{shape}"
        );
        assert_eq!(field(&output, "note"), None, "{shape}");
    }

    for (shape, stdin) in [("pem", a.cert_pem.as_bytes()), ("der", &a.der[..])] {
        let output = certbound_with_stdin(&["thumbprint", "-"], Some(stdin));
        assert_eq!(output.status.code(), Some(0), "stdin {shape}");
        assert_eq!(
            field(&output, "x5t#S256"),
            Some(a.x5t_s256()),
            "stdin {shape}"
        );
    }

    // Only a thumbprint: no subject to show.
    let output = certbound(&["thumbprint", &format!("Hash={}", a.x5t_hex())]);
    assert_eq!(field(&output, "x5t#S256"), Some(a.x5t_s256()));
    assert!(field(&output, "subject")
        .unwrap()
        .contains("only a thumbprint"));
}

#[test]
fn thumbprint_of_a_chain_is_the_leafs() {
    let pki = Pki::new();
    let a = &pki.client_a;
    let chain = format!("{}{}", a.cert_pem, pki.ca.cert_pem);
    let pem_chain = pki.write("chain.pem", &chain);
    let der_chain = pki.dir.path().join("chain.der");
    std::fs::write(&der_chain, [a.der.clone(), pki.ca.der.clone()].concat()).unwrap();

    for value in [
        pem_chain.to_str().unwrap().to_string(),
        der_chain.to_str().unwrap().to_string(),
        url_encoded(&chain),
        STANDARD.encode(&chain),
    ] {
        let output = certbound(&["thumbprint", &value]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(field(&output, "x5t#S256"), Some(a.x5t_s256()));
        let note = field(&output, "note").unwrap_or_default();
        assert!(
            note.contains("2 certificates") && note.contains("only the leaf"),
            "{note}"
        );
    }
}

#[test]
fn thumbprint_input_errors_exit_2() {
    let pki = Pki::new();
    let not_a_cert = pki.write("notes.txt", "hello");
    let broken_der = pki.dir.path().join("broken.der");
    std::fs::write(&broken_der, &pki.client_a.der[..100]).unwrap();
    let cases = [
        (
            "not a file, not a certificate",
            "./no-such-file.pem",
            "not a file",
        ),
        (
            "text file",
            not_a_cert.to_str().unwrap(),
            "not a certificate",
        ),
        (
            "truncated der",
            broken_der.to_str().unwrap(),
            "not a DER certificate",
        ),
        ("blank", "  ", "no certificate"),
    ];
    for (what, arg, message) in cases {
        let output = certbound(&["thumbprint", arg]);
        assert_eq!(output.status.code(), Some(2), "{what}");
        assert!(stdout(&output).is_empty(), "{what}");
        assert!(
            stderr(&output).contains(message),
            "{what}: {}",
            stderr(&output)
        );
    }
    let output = certbound_with_stdin(&["thumbprint", "-"], Some(b""));
    assert_eq!(output.status.code(), Some(2));
    let output = certbound(&["thumbprint"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "missing argument is a usage error"
    );
}

#[test]
fn inspect_reports_the_confirmation() {
    let pki = Pki::new();
    let a = &pki.client_a;
    let bound = a.bound_token();
    let hex = jwt(&json!({"cnf": {"x5t#S256": a.x5t_hex()}}));

    for token in [
        bound.clone(),
        format!("Bearer {bound}"),
        format!("Authorization: Bearer {bound}"),
        hex.clone(),
    ] {
        let output = certbound(&["inspect", &token]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(
            field(&output, "confirmation").as_deref(),
            Some("bound (cnf.x5t#S256)")
        );
        assert_eq!(field(&output, "x5t#S256"), Some(a.x5t_s256()));
        assert_eq!(field(&output, "x5t#S256 (hex)"), Some(a.x5t_hex()));
    }

    let output = certbound_with_stdin(&["inspect", "-"], Some(bound.as_bytes()));
    assert_eq!(field(&output, "x5t#S256"), Some(a.x5t_s256()));

    let unbound = jwt(&json!({"sub": "plain"}));
    for token in [unbound.as_str(), "2YotnFZFEjr1zCsicMWpAA"] {
        let output = certbound(&["inspect", token]);
        assert_eq!(output.status.code(), Some(0));
        assert!(field(&output, "confirmation")
            .unwrap()
            .starts_with("unbound"));
        assert_eq!(field(&output, "x5t#S256"), None);
    }

    // The configuration's cnf_encoding applies: a hex thumbprint is malformed for base64url.
    let output = certbound(&[
        "inspect",
        &hex,
        "--config",
        r#"{"cnf_encoding":"base64url"}"#,
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(field(&output, "reason")
        .unwrap()
        .starts_with("malformed_confirmation:"));
}

#[test]
fn inspect_names_the_filters_reason_for_malformed_tokens() {
    let cases = [
        (
            jwt(&json!({"cnf": {"x5t#S256": "abc"}})),
            "malformed_confirmation",
        ),
        (jwt(&json!({"cnf": "x"})), "malformed_confirmation"),
        (jwt_with_payload(b"[1]"), "malformed_token"),
        (jwt_with_payload(b"not json"), "malformed_token"),
        ("Bearer a b".to_string(), "malformed_authorization"),
    ];
    for (token, reason) in cases {
        let output = certbound(&["inspect", &token]);
        assert_eq!(output.status.code(), Some(1), "{reason}");
        assert_eq!(field(&output, "confirmation").as_deref(), Some("malformed"));
        let line = field(&output, "reason").unwrap();
        let denial = certbound_name(reason);
        assert_eq!(line, format!("{reason}: {}", denial.description()));
    }
}

fn certbound_name(name: &str) -> certbound::verdict::Denial {
    certbound::verdict::Denial::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap()
}

#[test]
fn the_token_is_never_printed_in_full() {
    let pki = Pki::new();
    let cert = pki.write("b.crt", &pki.client_b.cert_pem);
    let token = pki.client_a.bound_token();
    let payload = token.split('.').nth(1).unwrap();
    let outputs = [
        certbound(&["inspect", &token]),
        certbound(&["check", "--cert", cert.to_str().unwrap(), "--token", &token]),
        certbound(&["check", "--cert", "none", "--token", &token]),
        certbound(&["inspect", &jwt(&json!({"cnf": {"x5t#S256": "abc"}}))]),
    ];
    for output in outputs {
        let all = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!all.contains(payload), "{all}");
        assert!(all.contains("characters)"), "{all}");
    }
}

#[test]
fn check_gives_the_filters_verdict() {
    let pki = Pki::new();
    let a = pki.write("a.crt", &pki.client_a.cert_pem);
    let b = pki.write("b.crt", &pki.client_b.cert_pem);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let token_a = pki.client_a.bound_token();
    let unbound = jwt(&json!({"sub": "plain"}));
    let strict = r#"{"require_bound_token": true}"#;

    // (certificate, token, config, exit code, verdict starts with, reason)
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        i32,
        &'a str,
        Option<&'a str>,
    );
    let rows: Vec<Row<'_>> = vec![
        (a, Some(&token_a), "{}", 0, "pass (bound", None),
        (
            b,
            Some(&token_a),
            "{}",
            1,
            "deny",
            Some("thumbprint_mismatch"),
        ),
        (
            "none",
            Some(&token_a),
            "{}",
            1,
            "deny",
            Some("no_client_certificate"),
        ),
        (a, Some(&unbound), "{}", 0, "pass (unbound", None),
        (a, Some(&unbound), strict, 1, "deny", Some("unbound_token")),
        ("none", None, "{}", 0, "pass (unbound", None),
        ("none", None, strict, 1, "deny", Some("no_token")),
        (
            a,
            Some("Basic dXNlcjpwYXNz"),
            strict,
            1,
            "deny",
            Some("no_token"),
        ),
        (
            b,
            Some(&token_a),
            r#"{"mode": "audit"}"#,
            0,
            "would deny",
            Some("thumbprint_mismatch"),
        ),
    ];
    for (cert, token, config, code, verdict, reason) in rows {
        let mut args = vec!["check", "--cert", cert, "--config", config];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        let row = format!("{cert} {token:?} {config}");
        let output = certbound(&args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{row}: {}",
            stderr(&output)
        );
        assert!(
            field(&output, "verdict").unwrap().starts_with(verdict),
            "{row}"
        );
        let got = field(&output, "reason");
        let got = got.as_deref().and_then(|r| r.split(':').next());
        assert_eq!(got, reason, "{row}");
        if let Some(reason) = reason {
            let denial = certbound_name(reason);
            assert!(field(&output, "status")
                .unwrap()
                .starts_with(&denial.status().to_string()));
            assert_eq!(
                field(&output, "www-authenticate"),
                Some(denial.www_authenticate())
            );
        }
    }

    // A mismatch shows both thumbprints side by side.
    let output = certbound(&["check", "--cert", b, "--token", &token_a]);
    assert_eq!(
        field(&output, "token bound to"),
        Some(pki.client_a.x5t_s256())
    );
    let certificate = field(&output, "certificate").unwrap();
    assert!(
        certificate.starts_with(&pki.client_b.x5t_s256()),
        "{certificate}"
    );
}

#[test]
fn check_reads_config_and_token_from_files_and_stdin() {
    let pki = Pki::new();
    let a = pki.write("a.crt", &pki.client_a.cert_pem);
    let a = a.to_str().unwrap();
    let config = pki.write("certbound.json", r#"{"require_bound_token": true}"#);
    let config = format!("@{}", config.display());
    let unbound = jwt(&json!({"sub": "plain"}));
    let token = pki.write("token", &unbound);
    let token = format!("@{}", token.display());

    let output = certbound(&["check", "--cert", a, "--token", &token, "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    assert!(field(&output, "reason")
        .unwrap()
        .starts_with("unbound_token:"));

    let output = certbound_with_stdin(
        &["check", "--cert", a, "--token", "-", "--config", &config],
        Some(unbound.as_bytes()),
    );
    assert_eq!(output.status.code(), Some(1));

    let output = certbound_with_stdin(
        &[
            "check",
            "--cert",
            "-",
            "--token",
            &pki.client_a.bound_token(),
        ],
        Some(pki.client_a.cert_pem.as_bytes()),
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn check_applies_exempt_paths_only_with_a_path() {
    let config = r#"{"require_bound_token": true, "exempt_paths": ["/healthz"]}"#;
    let output = certbound(&["check", "--cert", "none", "--config", config]);
    assert_eq!(output.status.code(), Some(1));
    assert!(field(&output, "note").unwrap().contains("--path"));
    let output = certbound(&[
        "check", "--cert", "none", "--config", config, "--path", "/healthz",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert!(field(&output, "verdict")
        .unwrap()
        .starts_with("pass (exempt"));
    let output = certbound(&[
        "check", "--cert", "none", "--config", config, "--path", "/orders",
    ]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn check_input_errors_exit_2() {
    let pki = Pki::new();
    let a = pki.write("a.crt", &pki.client_a.cert_pem);
    let a = a.to_str().unwrap();
    let token = pki.client_a.bound_token();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "check",
                "--cert",
                a,
                "--token",
                &token,
                "--config",
                r#"{"mode":"enforced"}"#,
            ],
            "`mode`",
        ),
        (
            vec![
                "check",
                "--cert",
                a,
                "--config",
                r#"{"requre_bound_token":true}"#,
            ],
            "requre_bound_token",
        ),
        (
            vec!["check", "--cert", a, "--config", "@/no/such/file"],
            "cannot read",
        ),
        (
            vec!["check", "--cert", "MIIBroken", "--token", &token],
            "not a certificate",
        ),
        (
            vec!["check", "--cert", a, "--token", "@/no/such/token"],
            "cannot read",
        ),
        (vec!["check", "--cert", a, "--token", " "], "empty"),
        (vec!["check", "--cert", "-", "--token", "-"], "only one"),
        (vec!["check", "--token", &token], "--cert"),
        (vec!["check", "--cert", a, "--bogus"], "--bogus"),
    ];
    for (args, message) in cases {
        let output = certbound(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stdout(&output).is_empty(), "{args:?}");
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains(token.split('.').nth(1).unwrap()));
    }
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [
        &["--help"][..],
        &["check", "--help"],
        &["thumbprint", "--help"],
    ] {
        let output = certbound(args);
        assert_eq!(output.status.code(), Some(0));
        let help = stdout(&output);
        for needle in [
            "Exit codes:",
            "0  ",
            "1  check: the filter denies",
            "2  usage or input error",
        ] {
            assert!(help.contains(needle), "{args:?}: {needle}");
        }
    }
}

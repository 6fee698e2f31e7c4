//! A deterministic regression figure for certbound's decision core: instructions per call, as
//! callgrind counts them, for each request shape `policy::decide` and
//! `certificate::forwarded_certificate` meet. Instruction counts do not depend on how busy the
//! machine is, so a change that slows the hot path shows up on any machine.
//!
//! - `bench-core report CERT.pem [OUT.md]` runs every shape under valgrind (callgrind) twice, with
//!   few and with many calls, and reports the difference per call, so set-up and process start
//!   cancel out; then natively for a time per call. Prints a Markdown table.
//! - `bench-core run SHAPE CERT.pem N` runs one shape N times (what `report` runs under valgrind).
//!
//! CERT.pem is a client certificate (`make certs` makes build/demo/client-a.crt).

use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::time::Instant;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use certbound::certificate::{self, HeaderFormat};
use certbound::config::Config;
use certbound::policy::{self, Rules};
use certbound::thumbprint::Thumbprint;
use certbound::xfcc::XfccElement;
use sha2::{Digest, Sha256};

/// Calls in the short and the long valgrind run; the count reported is the difference of the two
/// totals divided by the difference of the calls.
const CALLS_UNDER_VALGRIND: (u32, u32) = (10, 1010);
/// Calls per native timing run.
const CALLS_TIMED: u32 = 200_000;

const SHAPES: &[(&str, &str)] = &[
    (
        "decide/bound-match",
        "JWT bound to the presented certificate: pass",
    ),
    (
        "decide/bound-mismatch",
        "JWT bound to another certificate: 401",
    ),
    ("decide/unbound", "JWT without cnf: pass (unbound)"),
    ("decide/opaque", "opaque token: pass (unbound)"),
    (
        "decide/malformed",
        "three segments, payload not base64url: 401",
    ),
    ("decide/no-token", "no Authorization header: pass (unbound)"),
    (
        "forwarded/xfcc",
        "XFCC `Hash=...;Cert=\"...\";Subject=...` (Envoy's shape)",
    ),
    ("forwarded/xfcc-hash", "XFCC `Hash=...` only"),
    (
        "forwarded/url-encoded-pem",
        "URL-encoded PEM (nginx `$ssl_client_escaped_cert`)",
    ),
];

/// One prepared request: everything built before measuring starts.
struct Input {
    rules: Rules,
    authorization: Option<Vec<u8>>,
    presented: Thumbprint,
    header: Vec<u8>,
    format: HeaderFormat,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [_, "run", shape, cert, n] => run(shape, cert, n.parse().unwrap_or(1)),
        [_, "report", cert] => report(cert, None),
        [_, "report", cert, out] => report(cert, Some(out)),
        _ => Err("usage: bench-core report CERT.pem [OUT.md] | run SHAPE CERT.pem N".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-core: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(shape: &str, cert: &str, n: u32) -> Result<(), String> {
    let input = prepare(shape, cert)?;
    for _ in 0..n {
        measure(shape, &input);
    }
    Ok(())
}

/// The measured call.
#[inline(never)]
fn measure(shape: &str, input: &Input) {
    if shape.starts_with("decide/") {
        let presented = input.presented;
        let verdict = policy::decide(
            input.rules,
            black_box(input.authorization.as_deref()),
            || Ok(Some(presented)),
        );
        black_box(verdict);
    } else {
        let forwarded = certificate::forwarded_certificate(
            black_box(&input.header),
            input.format,
            XfccElement::Last,
            None,
        );
        black_box(forwarded.ok());
    }
}

fn prepare(shape: &str, cert: &str) -> Result<Input, String> {
    let pem = std::fs::read_to_string(cert).map_err(|e| format!("cannot read {cert}: {e}"))?;
    let der = pem_der(&pem).ok_or_else(|| format!("{cert} holds no PEM certificate"))?;
    let digest: [u8; 32] = Sha256::digest(&der).into();
    let presented = Thumbprint::from_bytes(digest);
    let other = Thumbprint::from_bytes(Sha256::digest(b"another certificate").into());
    let rules = Config::parse(b"{}")
        .map(|c| Rules::from(&c))
        .map_err(|e| e.to_string())?;

    let claims = |cnf: &str| {
        format!(
            r#"{{"iss":"https://issuer.certbound.demo","sub":"client-a","aud":"certbound-demo","iat":1700000000,"exp":1900000000{cnf}}}"#
        )
    };
    let bound = claims(&format!(
        r#","cnf":{{"x5t#S256":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(digest)
    ));
    let jwt = |payload: &str| {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"at+jwt","kid":"demo"}"#);
        // A signature segment as long as an RS256 one: certbound must skip it, not read it.
        let signature = URL_SAFE_NO_PAD.encode([7u8; 256]);
        let payload = URL_SAFE_NO_PAD.encode(payload);
        Some(format!("Bearer {header}.{payload}.{signature}").into_bytes())
    };
    let escaped = percent_encode(pem.trim().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();

    let (authorization, presented, header, format) = match shape {
        "decide/bound-match" => (jwt(&bound), presented, vec![], HeaderFormat::Auto),
        "decide/bound-mismatch" => (jwt(&bound), other, vec![], HeaderFormat::Auto),
        "decide/unbound" => (jwt(&claims("")), presented, vec![], HeaderFormat::Auto),
        "decide/opaque" => {
            let token = Some(b"Bearer 2YotnFZFEjr1zCsicMWpAA-opaque-access-token".to_vec());
            (token, presented, vec![], HeaderFormat::Auto)
        }
        "decide/malformed" => {
            let token = Some(b"Bearer eyJhbGciOiJSUzI1NiJ9.!!!.c2ln".to_vec());
            (token, presented, vec![], HeaderFormat::Auto)
        }
        "decide/no-token" => (None, presented, vec![], HeaderFormat::Auto),
        "forwarded/xfcc" => {
            let value =
                format!("Hash={hex};Cert=\"{escaped}\";Subject=\"CN=client-a,O=certbound demo\"");
            (None, presented, value.into_bytes(), HeaderFormat::Xfcc)
        }
        "forwarded/xfcc-hash" => {
            let value = format!("Hash={hex}");
            (None, presented, value.into_bytes(), HeaderFormat::Xfcc)
        }
        "forwarded/url-encoded-pem" => (
            None,
            presented,
            escaped.into_bytes(),
            HeaderFormat::UrlEncodedPem,
        ),
        _ => return Err(format!("unknown shape {shape}")),
    };
    let input = Input {
        rules,
        authorization,
        presented,
        header,
        format,
    };
    check(shape, &input, digest)?;
    Ok(input)
}

/// A fast wrong answer must not score: each shape must decide as its description says.
fn check(shape: &str, input: &Input, digest: [u8; 32]) -> Result<(), String> {
    use certbound::verdict::Verdict;
    let ok = if shape.starts_with("decide/") {
        let presented = input.presented;
        let verdict = policy::decide(input.rules, input.authorization.as_deref(), || {
            Ok(Some(presented))
        });
        match shape {
            "decide/bound-match" => matches!(verdict, Verdict::Bound(_)),
            "decide/bound-mismatch" | "decide/malformed" => matches!(verdict, Verdict::Deny(_)),
            _ => matches!(verdict, Verdict::Unbound),
        }
    } else {
        let forwarded = certificate::forwarded_certificate(
            &input.header,
            input.format,
            XfccElement::Last,
            None,
        );
        matches!(forwarded, Ok(Some(f)) if f.thumbprint.as_bytes() == &digest)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{shape}: unexpected decision"))
    }
}

fn report(cert: &str, out: Option<&str>) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut table = String::from(
        "| shape | what | instructions per call (callgrind) | ns per call (native, indicative) |\n\
         |---|---|---:|---:|\n",
    );
    for (shape, what) in SHAPES {
        let (few, many) = CALLS_UNDER_VALGRIND;
        let extra = instructions(&me, shape, cert, many)? - instructions(&me, shape, cert, few)?;
        let per_call = extra / u64::from(many - few);

        let input = prepare(shape, cert)?;
        let start = Instant::now();
        for _ in 0..CALLS_TIMED {
            measure(shape, &input);
        }
        let ns = start.elapsed().as_nanos() / u128::from(CALLS_TIMED);
        table.push_str(&format!("| `{shape}` | {what} | {per_call} | {ns} |\n"));
    }
    print!("{table}");
    if let Some(out) = out {
        std::fs::write(out, &table).map_err(|e| format!("cannot write {out}: {e}"))?;
    }
    Ok(())
}

/// Instructions callgrind counts for a whole `run` of `calls` calls.
fn instructions(me: &std::path::Path, shape: &str, cert: &str, calls: u32) -> Result<u64, String> {
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(me)
        .args(["run", shape, cert, &calls.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{shape} under valgrind failed:\n{stderr}"));
    }
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{shape}: no instruction count from callgrind:\n{stderr}"))
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let body: String = body.split_whitespace().collect();
    STANDARD.decode(body).ok()
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, as Envoy and nginx do for PEM.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

//! An `ext_authz` HTTP authorization service that makes certbound's decision: the same
//! [`certbound::policy::decide`] on the `Authorization` header, against the client certificate
//! digest Envoy puts in `x-forwarded-client-cert` (`Hash=`, with `SANITIZE_SET`).
//!
//! Plain HTTP/1.1 with keep-alive, one thread per connection, standard library only: small enough
//! to read, fast enough that the comparison is about the round trip, not a slow service.
//!
//! Usage: `bench-authz PORT`. Answers 200 to allow and 401 (with the denial's challenge) to deny.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use certbound::config::Config;
use certbound::policy::{self, Rules};
use certbound::thumbprint::Thumbprint;
use certbound::verdict::Verdict;

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    let listener = match TcpListener::bind(("127.0.0.1", port.parse().unwrap_or(0))) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("bench-authz: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let rules = match Config::parse(b"{}") {
        Ok(config) => Rules::from(&config),
        Err(e) => {
            eprintln!("bench-authz: {e}");
            std::process::exit(1);
        }
    };
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve(stream, rules));
    }
}

/// Answers the check requests of one keep-alive connection until Envoy closes it.
fn serve(stream: TcpStream, rules: Rules) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let mut authorization = None;
        let mut xfcc = None;
        let mut content_length = 0usize;
        let mut first = true;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = line.trim_ascii_end();
            if text.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            if std::mem::take(&mut first) {
                continue; // the request line
            }
            let Some(colon) = text.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = text.split_at(colon);
            let value = value.get(1..).unwrap_or_default().trim_ascii().to_vec();
            if name.eq_ignore_ascii_case(b"authorization") {
                authorization = Some(value);
            } else if name.eq_ignore_ascii_case(b"x-forwarded-client-cert") {
                xfcc = Some(value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                content_length = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
        if content_length > 0 {
            let mut body = vec![0; content_length];
            if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                return;
            }
        }

        let peer = || Ok(xfcc.as_deref().and_then(hash));
        let reply = match policy::decide(rules, authorization.as_deref(), peer) {
            Verdict::Bound(_) | Verdict::Unbound => {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
            }
            Verdict::Deny(denial) => format!(
                "HTTP/1.1 {} Denied\r\nwww-authenticate: {}\r\ncontent-length: 0\r\n\r\n",
                denial.status(),
                denial.www_authenticate()
            ),
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The `Hash` of the last XFCC element: the certificate on Envoy's downstream connection.
fn hash(xfcc: &[u8]) -> Option<Thumbprint> {
    let element = xfcc.rsplit(|&b| b == b',').next()?;
    element
        .split(|&b| b == b';')
        .find_map(|pair| pair.strip_prefix(b"Hash="))
        .and_then(Thumbprint::from_hex)
}

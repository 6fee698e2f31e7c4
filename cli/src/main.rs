//! `certbound`: the filter's decision code on the command line, for whoever has to explain why a
//! client got a 401. It links the same `certbound` crate that is built into `certbound.wasm`, so
//! thumbprints, confirmations and verdicts are computed by the code Envoy runs.

mod certificate;
mod input;
mod token;

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;

use certbound::config::{Config, Mode};
use certbound::confirmation::{CnfEncoding, Confirmation};
use certbound::exempt;
use certbound::policy::{self, Rules};
use certbound::verdict::{Denial, Verdict};
use clap::{Parser, Subcommand};

use crate::certificate::Leaf;
use crate::input::Failure;

const EXIT_CODES: &str = "\
Exit codes:
  0  check: the filter lets the request through (audit mode included);
     thumbprint, inspect: done
  1  check: the filter denies the request;
     inspect: the token is denied whatever the certificate and configuration (malformed)
  2  usage or input error: unknown option, unreadable file, no certificate in the input,
     invalid configuration";

const TOKEN_HELP: &str =
    "A bare token, or an Authorization header value (`Bearer eyJ...`, with or without \
the `Authorization:` name); `@FILE` reads it from a file, `-` from standard input. It is never \
printed back in full.";

const CERT_HELP: &str =
    "A PEM or DER file, or a header value as a proxy forwards it (PEM, URL-encoded \
PEM, base64 PEM or DER, RFC 9440 Client-Cert, XFCC); `-` reads standard input.";

const CONFIG_HELP: &str =
    "certbound's JSON configuration, as in the Envoy plugin's `configuration`; \
`@FILE` reads it from a file. Default: all defaults (`{}`).";

#[derive(Parser)]
#[command(
    name = "certbound",
    version,
    about = "Explain certbound's verdicts: certificate thumbprints, token confirmations, and the \
             verdict the filter would give (RFC 8705 certificate-bound access tokens).",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a certificate's x5t#S256 thumbprint (RFC 8705 §3.1) as base64url and hex
    #[command(after_help = EXIT_CODES)]
    Thumbprint {
        #[arg(value_name = "FILE|VALUE|-", help = CERT_HELP, allow_hyphen_values = true)]
        certificate: String,
    },
    /// Print a token's confirmation: bound (and to which thumbprint), unbound, or malformed
    #[command(after_help = EXIT_CODES)]
    Inspect {
        #[arg(value_name = "TOKEN|HEADER|@FILE|-", help = TOKEN_HELP, allow_hyphen_values = true)]
        token: String,
        /// Configuration whose `cnf_encoding` applies (see `check --config`)
        #[arg(long, value_name = "JSON|@FILE")]
        config: Option<String>,
    },
    /// Print the verdict the filter would give a request with this certificate and token
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The client certificate the request presents, or `none` for no certificate
        #[arg(long, value_name = "FILE|VALUE|none|-", allow_hyphen_values = true, long_help = format!(
            "The client certificate the request presents, or `none` for no certificate. {CERT_HELP}"
        ))]
        cert: String,
        /// The token; omit it for a request without an Authorization header
        #[arg(long, value_name = "TOKEN|HEADER|@FILE|-", allow_hyphen_values = true, long_help = format!(
            "{TOKEN_HELP} Omit it for a request without an Authorization header."
        ))]
        token: Option<String>,
        #[arg(long, value_name = "JSON|@FILE", help = CONFIG_HELP)]
        config: Option<String>,
        /// The request path, to apply `exempt_paths` (not applied when omitted)
        #[arg(long)]
        path: Option<String>,
    },
}

/// What a command found; main turns it into the exit code.
enum Outcome {
    /// A pass, or a command that did its job.
    Done,
    /// The filter denies.
    Deny,
}

fn main() -> ExitCode {
    let cli = Cli::parse();

    let mut report = String::new();
    let result = match cli.command {
        Command::Thumbprint { certificate } => thumbprint(&certificate, &mut report),
        Command::Inspect { token, config } => inspect(&token, config.as_deref(), &mut report),
        Command::Check {
            cert,
            token,
            config,
            path,
        } => check(
            &cert,
            token.as_deref(),
            config.as_deref(),
            path.as_deref(),
            &mut report,
        ),
    };

    let code = match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Deny) => ExitCode::from(1),
        Err(failure) => {
            let _ = writeln!(io::stderr(), "certbound: {failure}");
            return ExitCode::from(2);
        }
    };
    if io::stdout().write_all(report.as_bytes()).is_err() {
        return ExitCode::from(2);
    }
    code
}

/// One `name: value` line, names aligned.
fn line(report: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(report, "{:<17} {value}", format!("{name}:"));
}

fn thumbprint(arg: &str, report: &mut String) -> Result<Outcome, Failure> {
    let leaf = certificate::read(arg)?;

    line(report, "x5t#S256", leaf.thumbprint.to_base64url());
    line(report, "x5t#S256 (hex)", leaf.thumbprint.to_hex());
    describe_leaf(report, &leaf);
    Ok(Outcome::Done)
}

fn describe_leaf(report: &mut String, leaf: &Leaf) {
    match &leaf.subject {
        Some(subject) => line(report, "subject", subject),
        None => line(
            report,
            "subject",
            "(unknown: the input carries only a thumbprint)",
        ),
    }
    if leaf.certificates > 1 {
        line(
            report,
            "note",
            format!(
                "the input holds {} certificates; only the leaf counts (RFC 8705 §3.1)",
                leaf.certificates
            ),
        );
    }
}

fn inspect(arg: &str, config: Option<&str>, report: &mut String) -> Result<Outcome, Failure> {
    let config = read_config(config)?;
    let (bytes, _) = input::at_file_or_value(arg)?;
    let authorization = token::authorization(&bytes)?;

    line(report, "token", token::redacted(&authorization));
    let bearer = match certbound::token::bearer(Some(&authorization)) {
        Ok(Some(bearer)) => bearer,
        Ok(None) => {
            line(
                report,
                "confirmation",
                "none: the Authorization value uses another scheme than Bearer",
            );
            return Ok(Outcome::Done);
        }
        Err(denial) => {
            malformed(report, denial);
            return Ok(Outcome::Deny);
        }
    };

    match certbound::token::confirmation(bearer, config.cnf_encoding) {
        Ok(Confirmation::X5tS256(bound_to)) => {
            line(report, "confirmation", "bound (cnf.x5t#S256)");
            line(report, "x5t#S256", bound_to.to_base64url());
            line(report, "x5t#S256 (hex)", bound_to.to_hex());
            Ok(Outcome::Done)
        }
        Ok(Confirmation::Unbound) => {
            line(
                report,
                "confirmation",
                "unbound: no cnf.x5t#S256, a plain bearer token",
            );
            Ok(Outcome::Done)
        }
        Err(denial) => {
            malformed(report, denial);
            Ok(Outcome::Deny)
        }
    }
}

fn malformed(report: &mut String, denial: Denial) {
    line(report, "confirmation", "malformed");
    line(
        report,
        "reason",
        format!("{}: {}", denial.name(), denial.description()),
    );
}

fn check(
    cert: &str,
    token: Option<&str>,
    config: Option<&str>,
    path: Option<&str>,
    report: &mut String,
) -> Result<Outcome, Failure> {
    let stdin_users = [Some(cert), token, config]
        .iter()
        .filter(|a| **a == Some("-"))
        .count();
    if stdin_users > 1 {
        return Err(Failure(
            "only one of --cert, --token and --config can be `-`".into(),
        ));
    }
    let config = read_config(config)?;
    let leaf = match cert {
        "none" => None,
        arg => Some(certificate::read(arg)?),
    };
    let authorization = match token {
        Some(arg) => Some(token::authorization(&input::at_file_or_value(arg)?.0)?),
        None => None,
    };

    if let Some(path) = path {
        if exempt::is_exempt(&config.exempt_paths, path.as_bytes()) {
            line(
                report,
                "verdict",
                "pass (exempt: the path matches exempt_paths)",
            );
            return Ok(Outcome::Done);
        }
    }
    let presented = leaf.as_ref().map(|leaf| leaf.thumbprint);
    let verdict = policy::decide(Rules::from(&config), authorization.as_deref(), || {
        Ok(presented)
    });

    let outcome = describe_verdict(report, verdict, &config);
    describe_inputs(
        report,
        leaf.as_ref(),
        authorization.as_deref(),
        config.cnf_encoding,
    );
    describe_unmodelled(report, &config, path.is_some());
    Ok(outcome)
}

fn describe_verdict(report: &mut String, verdict: Verdict, config: &Config) -> Outcome {
    let denial = match verdict {
        Verdict::Bound(_) => {
            line(
                report,
                "verdict",
                "pass (bound: the token's x5t#S256 matches the client certificate)",
            );
            return Outcome::Done;
        }
        Verdict::Unbound => {
            line(
                report,
                "verdict",
                "pass (unbound: no certificate binding to check, and require_bound_token is off)",
            );
            return Outcome::Done;
        }
        Verdict::Deny(denial) => denial,
    };

    // Internal errors deny in audit mode too; they cannot arise from the CLI's inputs.
    let audit = config.mode == Mode::Audit && denial != Denial::Internal;
    if audit {
        let upstream = match &config.audit_header {
            Some(name) => format!(", and the upstream gets `{name}: {}`", denial.name()),
            None => String::new(),
        };
        line(
            report,
            "verdict",
            format!("would deny (audit mode: the request passes{upstream})"),
        );
    } else {
        line(report, "verdict", "deny");
    }
    line(
        report,
        "reason",
        format!("{}: {}", denial.name(), denial.description()),
    );
    let when = if audit { " (in enforce mode)" } else { "" };
    line(report, "status", format!("{}{when}", denial.status()));
    line(report, "www-authenticate", denial.www_authenticate());
    if audit {
        Outcome::Done
    } else {
        Outcome::Deny
    }
}

/// What the verdict was made of, so a mismatch can be seen at a glance.
fn describe_inputs(
    report: &mut String,
    leaf: Option<&Leaf>,
    authorization: Option<&[u8]>,
    encoding: CnfEncoding,
) {
    match authorization {
        Some(value) => line(report, "token", token::redacted(value)),
        None => line(report, "token", "(no Authorization header)"),
    }
    let bearer = authorization.and_then(|value| certbound::token::bearer(Some(value)).ok());
    let bound_to = bearer
        .flatten()
        .and_then(|bearer| certbound::token::confirmation(bearer, encoding).ok());
    if let Some(Confirmation::X5tS256(bound_to)) = bound_to {
        line(report, "token bound to", bound_to.to_base64url());
    }
    match leaf {
        Some(leaf) => line(report, "certificate", certificate_line(leaf)),
        None => line(report, "certificate", "(none presented)"),
    }
}

fn certificate_line(leaf: &Leaf) -> String {
    let thumbprint = leaf.thumbprint.to_base64url();
    match &leaf.subject {
        Some(subject) => format!("{thumbprint} ({subject})"),
        None => thumbprint,
    }
}

/// Parts of the configuration that depend on more than the certificate and the token.
fn describe_unmodelled(report: &mut String, config: &Config, path_given: bool) {
    if !config.exempt_paths.is_empty() && !path_given {
        line(
            report,
            "note",
            "exempt_paths not applied: give --path to apply them",
        );
    }
    if config.route_overrides {
        line(
            report,
            "note",
            "route_overrides: a route's metadata can switch certbound off or change its mode and \
             require_bound_token; this verdict uses the plugin configuration",
        );
    }
}

fn read_config(arg: Option<&str>) -> Result<Config, Failure> {
    let Some(arg) = arg else {
        return Ok(Config::default());
    };
    let (bytes, origin) = input::at_file_or_value(arg)?;
    Config::parse(&bytes).map_err(|e| Failure(format!("invalid configuration in {origin}: {e}")))
}

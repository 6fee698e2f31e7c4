//! Where an argument's bytes come from: the argument itself, a file, or standard input.

use std::fmt;
use std::fs;
use std::io::{self, Read as _};
use std::path::Path;

/// Largest input read from a file or standard input. The filter looks at no header longer than
/// 64 KiB; this leaves room for a PEM bundle without reading a runaway stream.
const MAX_INPUT: u64 = 1024 * 1024;

/// An input or usage error: the CLI exits with status 2 and prints this.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a value was read from, to name it in messages without repeating it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Stdin,
    File(String),
    Argument,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Stdin => f.write_str("standard input"),
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Argument => f.write_str("the argument"),
        }
    }
}

/// A certificate argument: `-` is standard input, an existing file is read, anything else is the
/// value itself (a header value as a proxy would forward it).
pub fn file_or_value(arg: &str) -> Result<(Vec<u8>, Origin), Failure> {
    if arg == "-" {
        return Ok((stdin()?, Origin::Stdin));
    }
    if Path::new(arg).is_file() {
        return Ok((file(arg)?, Origin::File(arg.to_string())));
    }
    Ok((arg.as_bytes().to_vec(), Origin::Argument))
}

/// A token or configuration argument: `-` is standard input, `@path` is a file, anything else is
/// the value itself.
pub fn at_file_or_value(arg: &str) -> Result<(Vec<u8>, Origin), Failure> {
    if arg == "-" {
        return Ok((stdin()?, Origin::Stdin));
    }
    if let Some(path) = arg.strip_prefix('@') {
        return Ok((file(path)?, Origin::File(path.to_string())));
    }
    Ok((arg.as_bytes().to_vec(), Origin::Argument))
}

fn file(path: &str) -> Result<Vec<u8>, Failure> {
    let opened = fs::File::open(path).map_err(|e| Failure(format!("cannot read {path}: {e}")))?;
    read_capped(opened).map_err(|e| Failure(format!("cannot read {path}: {e}")))
}

fn stdin() -> Result<Vec<u8>, Failure> {
    read_capped(io::stdin().lock()).map_err(|e| Failure(format!("cannot read standard input: {e}")))
}

fn read_capped(reader: impl io::Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(io::Error::other(format!(
            "longer than {MAX_INPUT} bytes, which is no certificate, token or configuration"
        )));
    }
    Ok(bytes)
}

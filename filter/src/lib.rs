//! certbound: an Envoy WebAssembly HTTP filter that enforces OAuth 2.0 certificate-bound access
//! tokens (RFC 8705).
//!
//! The decision code (token, confirmation, thumbprint, policy, config, verdict, introspection, memo,
//! and for forwarded client certificates certificate, xfcc, trust, ca) never touches proxy-wasm and is
//! unit-tested natively. Only `host`, built for wasm32, talks to Envoy.

pub mod ca;
pub mod certificate;
pub mod config;
pub mod confirmation;
pub mod exempt;
pub mod introspection;
pub mod memo;
pub mod pairs;
pub mod policy;
pub mod route;
pub mod thumbprint;
pub mod token;
pub mod trust;
pub mod verdict;
pub mod xfcc;

#[cfg(test)]
mod testpki;

#[cfg(target_arch = "wasm32")]
mod host;

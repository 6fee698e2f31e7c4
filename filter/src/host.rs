//! The only module that talks to Envoy: reads the request and the connection, asks
//! [`policy::decide`], and acts on the verdict. Host-call failures deny; nothing here unwraps.

use std::rc::Rc;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

use crate::config::{Config, Mode};
use crate::policy;
use crate::thumbprint::Thumbprint;
use crate::verdict::{Denial, Verdict};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(Config::default()) })
    });
}}

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    /// Returning `false` makes Envoy refuse the plugin, so a bad configuration never runs open.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(raw) => raw.unwrap_or_default(),
            Err(status) => {
                error!("certbound: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match Config::parse(&raw) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                error!("certbound: invalid configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Check {
            context_id,
            config: Rc::clone(&self.config),
        }))
    }
}

struct Check {
    context_id: u32,
    config: Rc<Config>,
}

impl Context for Check {}

impl HttpContext for Check {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let verdict = match request_header("authorization") {
            Ok(authorization) => {
                policy::decide(&self.config, authorization.as_deref(), peer_certificate)
            }
            Err(()) => Verdict::Deny(Denial::Internal),
        };

        match verdict {
            Verdict::Bound(_) | Verdict::Unbound => Action::Continue,
            Verdict::Deny(denial) if self.config.mode == Mode::Audit => {
                self.log_denial(denial, "would deny (audit mode)");
                Action::Continue
            }
            Verdict::Deny(denial) => {
                self.log_denial(denial, "denied");
                self.reply(denial)
            }
        }
    }
}

impl Check {
    fn reply(&self, denial: Denial) -> Action {
        let challenge = denial.www_authenticate();
        let body = denial.body();
        let headers = vec![
            ("www-authenticate", challenge.as_str()),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ];
        if let Err(status) =
            hostcalls::send_http_response(denial.status(), headers, Some(body.as_bytes()))
        {
            // The reply could not be sent; resetting the stream still keeps the request out.
            warn!(
                "certbound[{}]: local reply failed ({status:?}), resetting",
                self.context_id
            );
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    /// One line per denial: the reason, the method and the path without its query string
    /// (which may hold credentials). Never the token or the certificate.
    fn log_denial(&self, denial: Denial, what: &str) {
        let method = request_header(":method").ok().flatten().unwrap_or_default();
        let path = request_header(":path").ok().flatten().unwrap_or_default();
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        info!(
            "#{} {what} {} {}: {} ({})",
            self.context_id,
            String::from_utf8_lossy(&method),
            String::from_utf8_lossy(path),
            denial.name(),
            denial.status(),
        );
    }
}

/// Reads a request header as bytes (a non-UTF-8 value must not take the VM down).
fn request_header(name: &str) -> Result<Option<Vec<u8>>, ()> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).map_err(|status| {
        warn!("certbound: cannot read request header {name}: {status:?}");
    })
}

/// The thumbprint of the certificate the client presented on this TLS connection, as Envoy
/// computed it after verifying the chain. `None` on a plaintext connection or without a client
/// certificate.
fn peer_certificate() -> Result<Option<Thumbprint>, Denial> {
    let digest = hostcalls::get_property(vec!["connection", "sha256_peer_certificate_digest"])
        .map_err(|status| {
            warn!("certbound: cannot read the peer certificate digest: {status:?}");
            Denial::Internal
        })?;
    match digest {
        None => Ok(None),
        Some(hex) if hex.is_empty() => Ok(None),
        Some(hex) => Thumbprint::from_hex(&hex).map(Some).ok_or_else(|| {
            warn!("certbound: Envoy reported a peer certificate digest that is not 64 hex digits");
            Denial::Internal
        }),
    }
}

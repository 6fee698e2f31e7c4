//! Prices the host calls certbound's host layer makes. The plugin configuration names what each
//! request reads (besides the `Authorization` header, which every probe reads):
//!
//! - `header`: nothing more;
//! - `digest`: the property `connection.sha256_peer_certificate_digest`;
//! - `connection-id`: the property `connection.id` (what a per-connection cache would key on);
//! - `xfcc`: the header `x-forwarded-client-cert` (Envoy's own, with `Hash`, set by the
//!   connection manager);
//! - `path`: the header `:path` (a second header read, as `exempt_paths` makes);
//! - `pairs`: every request header in one map read (`proxy_get_header_map_pairs`).
//!
//! A probe never answers: it only reads, so that its cost above the empty filter is the reads.

use std::hint::black_box;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(Read::Header)) });
}}

#[derive(Clone, Copy)]
enum Read {
    Header,
    Digest,
    ConnectionId,
    Xfcc,
    Path,
    Pairs,
}

struct Root(Read);

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX);
        self.0 = match raw.ok().flatten().as_deref() {
            Some(b"digest") => Read::Digest,
            Some(b"connection-id") => Read::ConnectionId,
            Some(b"xfcc") => Read::Xfcc,
            Some(b"path") => Read::Path,
            Some(b"pairs") => Read::Pairs,
            Some(b"header") | None => Read::Header,
            Some(_) => return false,
        };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe(self.0)))
    }
}

struct Probe(Read);

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let header = |name| hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
        black_box(header("authorization").ok());
        match self.0 {
            Read::Header => {}
            Read::Digest => {
                let path = vec!["connection", "sha256_peer_certificate_digest"];
                black_box(hostcalls::get_property(path).ok());
            }
            Read::ConnectionId => {
                black_box(hostcalls::get_property(vec!["connection", "id"]).ok());
            }
            Read::Xfcc => {
                black_box(header("x-forwarded-client-cert").ok());
            }
            Read::Path => {
                black_box(header(":path").ok());
            }
            Read::Pairs => {
                black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok());
            }
        }
        Action::Continue
    }
}

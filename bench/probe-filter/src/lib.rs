//! Prices the host calls certbound's host layer makes. The plugin configuration names what each
//! request reads (besides the `Authorization` header, which every probe reads):
//!
//! - `header`: nothing more;
//! - `digest`: the property `connection.sha256_peer_certificate_digest`;
//! - `connection-id`: the property `connection.id` (what a per-connection cache would key on);
//! - `xfcc`: the header `x-forwarded-client-cert` (Envoy's own, with `Hash`, set by the
//!   connection manager);
//! - `path`: the header `:path` (a second header read, as `exempt_paths` makes);
//! - `pairs`: every request header in one map read (`proxy_get_header_map_pairs`);
//! - `counters`: the property `connection.id` and two counter increments (certbound counts every
//!   checked request and its verdict).
//!
//! A probe never answers: it only reads, so that its cost above the empty filter is the reads.

use std::hint::black_box;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(Read::Header, [0; 2])) });
}}

#[derive(Clone, Copy)]
enum Read {
    Header,
    Digest,
    ConnectionId,
    Xfcc,
    Path,
    Pairs,
    Counters,
}

struct Root(Read, [u32; 2]);

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
            Some(b"counters") => Read::Counters,
            Some(b"header") | None => Read::Header,
            Some(_) => return false,
        };
        for (slot, name) in self.1.iter_mut().zip(["probe.checked", "probe.verdict"]) {
            match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => *slot = id,
                Err(_) => return false,
            }
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe(self.0, self.1)))
    }
}

struct Probe(Read, [u32; 2]);

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
            Read::Counters => {
                black_box(hostcalls::get_property(vec!["connection", "id"]).ok());
                for id in self.1 {
                    black_box(hostcalls::increment_metric(id, 1).ok());
                }
            }
        }
        Action::Continue
    }
}

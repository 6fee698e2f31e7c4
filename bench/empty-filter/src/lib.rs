//! An HTTP filter that does nothing: every callback keeps its default, which continues. Its cost
//! over Envoy alone is what any proxy-wasm filter pays before it reads anything.

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Empty) });
}}

struct Empty;

impl Context for Empty {}

impl HttpContext for Empty {}

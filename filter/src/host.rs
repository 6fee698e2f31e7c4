//! The only module that talks to Envoy: reads the request and the connection, judges them by
//! the decision table in [`policy`], and acts on the verdict. Host-call failures deny; nothing here unwraps.
//! An opaque token is introspected with an HTTP callout: the request waits, paused, for the
//! answer (or the cache's), and is then judged by the same table.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, GrpcStatusCode, LogLevel, MapType};
use proxy_wasm::types::{MetricType, Status};

use crate::certificate::HeaderFormat;
use crate::config::{ClaimsSource, Config, Mode};
use crate::confirmation::{self, CnfEncoding, Confirmation};
use crate::exempt;
use crate::introspection::{self, Answer, Cache, Introspection};
use crate::memo::Memo;
use crate::pairs;
use crate::policy::{self, Rules};
use crate::route;
use crate::thumbprint::Thumbprint;
use crate::token;
use crate::verdict::{Denial, Verdict};
use crate::xfcc::XfccElement;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { plugin: None }) });
}}

/// What every request of this plugin shares: the configuration, the counters, the replies, the
/// introspection cache and the memos.
///
/// The caches live here, in the VM's memory: Envoy runs one VM per worker thread, and a worker
/// handles one request at a time, so a `RefCell` needs no lock and every stream of the worker
/// sees every answer. Shared data (proxy_set_shared_data) would span workers, but it cannot
/// delete or enumerate keys, so it could not be kept bounded.
struct Plugin {
    config: Config,
    metrics: Metrics,
    /// Envoy's log level for wasm code ([`host_log_level`]), read at configure time and again on
    /// every tick: a denial then asks no host call to know whether its line would be dropped.
    log_level: Cell<u32>,
    replies: Replies,
    cache: RefCell<Cache>,
    memos: Memos,
}

impl Drop for Plugin {
    /// The last request of a VM that is going away: hand over what it counted after `on_done`.
    fn drop(&mut self) {
        self.metrics.flush();
    }
}

/// Per worker, what decoding gave for bytes seen before ([`crate::memo`]).
struct Memos {
    /// What each downstream connection is ([`Peer`]), by connection id: Envoy never reuses a
    /// connection id within a process, so a request reads `connection.id` and nothing else of its
    /// connection once the connection's first request has read the rest.
    peers: RefCell<Memo<Peer>>,
    /// What each Authorization header value confirms ([`policy::read_authorization`]): the
    /// syntax check, the payload's decoding and its `cnf` are all skipped for a header seen
    /// before. That answer reads only plugin-wide rules, and the memos are made anew with each
    /// configuration, so the value alone is the key.
    authorizations: RefCell<Memo<Result<Option<Confirmation>, Denial>>>,
    /// Which certificate a forwarded header carries, by header value, with the proxy's own
    /// thumbprint it was read against (XFCC's `last` element skips the proxy's). Not used with
    /// `forwarded_certificate_ca`, whose answer depends on the time.
    forwarded: RefCell<Memo<ForwardedAnswer>>,
}

/// What certbound learnt of a downstream connection. Both are fixed for the connection's life: a
/// TLS connection's certificate never changes (Envoy does not renegotiate), nor do its source
/// address and its certificate's SANs, which decide whether it is a trusted proxy.
#[derive(Clone, Copy, Default)]
struct Peer {
    /// The thumbprint of its client certificate (`None` inside: it presented none), once read.
    certificate: Option<Option<Thumbprint>>,
    /// Whether it is a trusted proxy, once judged.
    trusted: Option<bool>,
}

type ForwardedAnswer = (Option<Thumbprint>, Result<Option<Thumbprint>, Denial>);

impl Memos {
    fn new() -> Self {
        Self {
            peers: RefCell::new(Memo::new(4096, 4096 * 8)),
            authorizations: RefCell::new(Memo::new(1024, 1 << 20)),
            forwarded: RefCell::new(Memo::new(1024, 4 << 20)),
        }
    }
}

struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {
    /// The VM is stopping (a new configuration, or Envoy shutting down): hand over the counts.
    fn on_done(&mut self) -> bool {
        if let Some(plugin) = &self.plugin {
            plugin.metrics.flush();
        }
        true
    }
}

impl RootContext for Root {
    /// Returning `false` makes Envoy refuse the plugin, so a bad configuration never runs open.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(raw) => raw.unwrap_or_default(),
            Err(status) => {
                error!("certbound: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let config = match Config::parse(&raw) {
            Ok(config) => config,
            Err(e) => {
                error!("certbound: invalid configuration: {e}");
                return false;
            }
        };
        let metrics = match Metrics::define() {
            Ok(metrics) => metrics,
            Err(status) => {
                error!("certbound: cannot define metrics: {status:?}");
                return false;
            }
        };
        let max_entries = config
            .introspection
            .as_ref()
            .map_or(0, |introspection| introspection.cache_max_entries);
        let cache = RefCell::new(Cache::new(max_entries));
        let replies = Replies::new(&config);
        self.plugin = Some(Rc::new(Plugin {
            config,
            metrics,
            log_level: Cell::new(host_log_level()),
            replies,
            cache,
            memos: Memos::new(),
        }));
        if let Err(status) = set_tick_period(FLUSH_PERIOD) {
            error!("certbound: cannot set the tick period for the counters: status {status}");
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.metrics.flush();
            plugin.log_level.set(host_log_level());
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // on_configure refused the configuration, so Envoy refused the plugin and never asks.
        let plugin = Rc::clone(self.plugin.as_ref()?);
        Some(Box::new(Check {
            context_id,
            plugin,
            connection: Cell::new(None),
            pending: None,
        }))
    }
}

struct Check {
    context_id: u32,
    plugin: Rc<Plugin>,
    /// The downstream connection's id, once this request has read it (inside: `None` when Envoy
    /// reports none).
    connection: Cell<Option<Option<[u8; 8]>>>,
    /// What the request needs once the introspection answer arrives.
    pending: Option<Pending>,
}

/// A request paused for an introspection callout.
struct Pending {
    mode: Mode,
    rules: Rules,
    certificate_header: Option<CertificateHeader>,
    key: [u8; 32],
}

/// What the introspection step made of the request's token.
enum Introspected {
    /// Not introspected: no introspection configured, no bearer token, or a JWT read as before.
    No,
    /// The cached answer, or why there is none to be had.
    Known(Result<Confirmation, Denial>),
    /// A callout is on its way, for the token with this cache key.
    Dispatched([u8; 32]),
}

impl Context for Check {
    /// The introspection answer: read it, cache it, judge the paused request and resume or deny.
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let claims = self.read_introspection(&pending, body_size);
        let certificate_header = pending.certificate_header.as_ref();
        let verdict = policy::decide_confirmation(pending.rules, claims.map(Some), || {
            self.client_certificate(certificate_header)
        });
        if let Action::Continue = self.act(pending.mode, verdict) {
            if let Err(status) = hostcalls::resume_http_request() {
                warn!(
                    "certbound: #{} cannot resume the request: {status:?}",
                    self.context_id
                );
            }
        }
    }
}

impl HttpContext for Check {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let config = &self.plugin.config;
        let metrics = &self.plugin.metrics;

        // Read and, unless a trusted proxy sent it and it is to be kept, removed on every
        // request: exempt paths and switched-off routes must not pass it on either.
        let Ok(certificate_header) = self.take_certificate_header() else {
            return self.deny(Denial::Internal);
        };

        if !config.exempt_paths.is_empty() {
            match request_header(":path") {
                Ok(Some(path)) if exempt::is_exempt(&config.exempt_paths, &path) => {
                    metrics.count(Counter::Exempt);
                    self.publish("exempt", None);
                    return self.pass(None, None);
                }
                Ok(_) => {}
                Err(()) => return self.deny(Denial::Internal),
            }
        }

        let (mode, rules) = match self.route_policy() {
            Ok((Some(mode), rules)) => (mode, rules),
            Ok((None, _)) => {
                metrics.count(Counter::Exempt);
                self.publish("off", None);
                return self.pass(None, None);
            }
            Err(()) => return self.deny(Denial::Internal),
        };

        metrics.count(Counter::Checked);
        let authorization = match config.claims_source {
            ClaimsSource::Header => match request_header("authorization") {
                Ok(authorization) => authorization,
                Err(()) => return self.act(mode, Verdict::Deny(Denial::Internal)),
            },
            ClaimsSource::JwtAuthn => None,
        };
        let introspected = match &config.introspection {
            Some(introspection) => self.introspect(introspection, rules, authorization.as_deref()),
            None => Introspected::No,
        };
        if let Introspected::Dispatched(key) = introspected {
            self.pending = Some(Pending {
                mode,
                rules,
                certificate_header,
                key,
            });
            return Action::Pause;
        }

        let client_certificate = || self.client_certificate(certificate_header.as_ref());
        let verdict = match config.claims_source {
            ClaimsSource::Header => match introspected {
                Introspected::Known(claims) => {
                    policy::decide_confirmation(rules, claims.map(Some), client_certificate)
                }
                _ => policy::decide_confirmation(
                    rules,
                    self.authorization_claims(rules, authorization.as_deref()),
                    client_certificate,
                ),
            },
            ClaimsSource::JwtAuthn => policy::decide_confirmation(
                rules,
                self.verified_confirmation(rules.cnf_encoding),
                client_certificate,
            ),
        };
        self.act(mode, verdict)
    }
}

impl Check {
    /// Acts on a verdict: passes (with the thumbprint header), or denies, or in audit mode lets
    /// through what it would deny. `Continue` means the request may go on.
    fn act(&self, mode: Mode, verdict: Verdict) -> Action {
        let metrics = &self.plugin.metrics;
        match verdict {
            Verdict::Bound(thumbprint) => {
                metrics.count(Counter::Bound);
                let config = &self.plugin.config;
                let wanted = config.filter_state || config.forward_thumbprint_header.is_some();
                let encoded = wanted.then(|| thumbprint.to_base64url());
                self.publish("bound", encoded.as_deref());
                self.pass(encoded.as_deref(), None)
            }
            Verdict::Unbound => {
                metrics.count(Counter::Unbound);
                self.publish("unbound", None);
                self.pass(None, None)
            }
            // certbound could not check: that denies in audit mode too.
            Verdict::Deny(Denial::Internal) => self.deny(Denial::Internal),
            Verdict::Deny(denial) if mode == Mode::Audit => {
                metrics.count(Counter::WouldDeny(denial));
                let reply = self.plugin.replies.get(denial);
                self.publish(reply.map_or("", |r| r.would_deny.as_str()), None);
                self.log_denial(denial, "would deny (audit mode)");
                self.pass(None, Some(denial.name()))
            }
            Verdict::Deny(denial) => self.deny(denial),
        }
    }

    /// Lets the request go on. The headers certbound writes for the upstream are set to what it
    /// decided, or removed: a client's own copy never reaches the upstream. (A denied request
    /// never reaches it either, so only passing requests pay for this.)
    fn pass(&self, thumbprint: Option<&str>, would_deny: Option<&str>) -> Action {
        let config = &self.plugin.config;
        let own = [
            (config.forward_thumbprint_header.as_deref(), thumbprint),
            (self.audit_header(), would_deny),
        ];
        for (name, value) in own {
            let Some(name) = name else { continue };
            let written = match value {
                Some(value) => hostcalls::set_map_value_bytes(
                    MapType::HttpRequestHeaders,
                    name,
                    Some(value.as_bytes()),
                )
                .map_err(|status| {
                    warn!("certbound: cannot set request header {name}: {status:?}");
                }),
                None => remove_request_header(name),
            };
            if written.is_err() {
                return self.deny(Denial::Internal);
            }
        }
        Action::Continue
    }

    /// Introspects the bearer token if it needs it: from the cache, else with a callout.
    /// Tokens certbound reads itself, and requests without one, are left to
    /// [`policy::read_authorization`], which also answers malformed and oversized credentials
    /// before anything is sent.
    fn introspect(
        &self,
        introspection: &Introspection,
        rules: Rules,
        authorization: Option<&[u8]>,
    ) -> Introspected {
        let Ok(Some(token)) = token::bearer(authorization) else {
            return Introspected::No;
        };
        if token.len() > rules.max_token_bytes || !introspection.applies_to(token) {
            return Introspected::No;
        }
        let Ok(now) = unix_now() else {
            return Introspected::Known(Err(Denial::Internal));
        };

        let key = introspection::cache_key(token);
        if let Some(claims) = self.plugin.cache.borrow().get(&key, now) {
            self.plugin.metrics.count(Counter::IntrospectionCacheHits);
            return Introspected::Known(claims);
        }

        self.plugin.metrics.count(Counter::IntrospectionCalls);
        let body = introspection::request_body(token);
        let sent = self.dispatch_http_call(
            &introspection.cluster,
            introspection.request_headers(),
            Some(body.as_bytes()),
            vec![],
            introspection.timeout,
        );
        match sent {
            Ok(_) => Introspected::Dispatched(key),
            Err(status) => {
                warn!(
                    "certbound: #{} introspection failed: cannot call cluster {} ({status:?})",
                    self.context_id, introspection.cluster
                );
                Introspected::Known(Err(Denial::IntrospectionFailed))
            }
        }
    }

    /// Reads the introspection response, caches what it says about the token, and returns it.
    /// Every failure is [`Denial::IntrospectionFailed`], with its cause logged.
    fn read_introspection(
        &self,
        pending: &Pending,
        body_size: usize,
    ) -> Result<Confirmation, Denial> {
        let Some(introspection) = &self.plugin.config.introspection else {
            return Err(Denial::Internal);
        };
        let now = unix_now()?;
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|status| status.parse::<u32>().ok());
        let size = body_size.min(introspection::MAX_RESPONSE_BYTES + 1);
        let body = match body_size {
            0 => Vec::new(),
            _ => hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
                .ok()
                .flatten()
                .unwrap_or_default(),
        };

        let encoding = pending.rules.cnf_encoding;
        match introspection::parse_response(status, &body, encoding, now) {
            Ok(answer) => {
                self.remember(introspection, pending.key, &answer, now);
                Ok(answer.claims?)
            }
            Err(failure) => {
                warn!(
                    "certbound: #{} introspection failed: {failure}",
                    self.context_id
                );
                Err(Denial::IntrospectionFailed)
            }
        }
    }

    fn remember(&self, introspection: &Introspection, key: [u8; 32], answer: &Answer, now: u64) {
        if let Ok(mut cache) = self.plugin.cache.try_borrow_mut() {
            cache.insert(key, answer, introspection.cache_ttl_s, now);
        }
    }

    /// The status a denial is answered with: `on_error_status` for a failed introspection.
    fn status_of(&self, denial: Denial) -> u32 {
        self.plugin
            .replies
            .get(denial)
            .map_or(denial.status(), |reply| reply.status)
    }

    /// Reads `certificate_header` and removes it from the request, unless it came from a
    /// trusted proxy and `strip_certificate_header` is off. `None` when no header is configured.
    fn take_certificate_header(&self) -> Result<Option<CertificateHeader>, ()> {
        let config = &self.plugin.config;
        let Some(name) = &config.certificate_header else {
            return Ok(None);
        };
        let value = request_header(name)?;
        let mut trusted = None;
        let mut repeated = false;
        if value.is_some() {
            // Envoy hands a filter only the first copy of a header it does not join itself;
            // several copies are ambiguous, and a proxy that appends rather than replaces would
            // let a client's own copy come first. Headers Envoy keeps inline it joins with commas
            // into one value (for XFCC, one element list), which the filter then reads whole;
            // counting those would cost a read of every header and always find one.
            repeated = !joined_by_envoy(name) && header_count(name)? > 1;
            let keep = !config.strip_certificate_header && *trusted.insert(self.trusted_proxy()?);
            if !keep {
                remove_request_header(name)?;
            }
        }
        Ok(Some(CertificateHeader {
            value,
            trusted,
            repeated,
        }))
    }

    /// The client certificate's thumbprint: the one a trusted proxy forwarded, else the
    /// connection's own. From a trusted proxy the header decides alone; its absence means the
    /// client presented no certificate, never "use the proxy's".
    fn client_certificate(
        &self,
        header: Option<&CertificateHeader>,
    ) -> Result<Option<Thumbprint>, Denial> {
        let config = &self.plugin.config;
        let Some(header) = header else {
            return self.peer_certificate();
        };
        let trusted = match header.trusted {
            Some(trusted) => trusted,
            None => self.trusted_proxy().map_err(|()| Denial::Internal)?,
        };
        if !trusted {
            return self.peer_certificate();
        }
        if header.repeated {
            return Err(Denial::MalformedCertificate);
        }
        let xfcc = matches!(
            config.certificate_header_format,
            HeaderFormat::Auto | HeaderFormat::Xfcc
        );
        let proxy = if xfcc && config.xfcc_element == XfccElement::Last {
            self.peer_certificate()?
        } else {
            None
        };
        self.forwarded_thumbprint(header.value.as_deref(), proxy)
    }

    /// The confirmation in the payload that jwt_authn verified and stored in dynamic metadata
    /// under `jwt_authn_payload_key`. No payload is a denial: in this mode certbound judges only
    /// claims whose signature was checked.
    fn verified_confirmation(&self, encoding: CnfEncoding) -> Result<Option<Confirmation>, Denial> {
        let key = self
            .plugin
            .config
            .jwt_authn_payload_key
            .as_deref()
            .unwrap_or_default();
        let payload = [
            "metadata",
            "filter_metadata",
            "envoy.filters.http.jwt_authn",
            key,
        ];
        let x5t = [&payload[..], &["cnf", "x5t#S256"]].concat();
        if let Some(text) = property(x5t).map_err(|()| Denial::Internal)? {
            let text = std::str::from_utf8(&text).map_err(|_| Denial::MalformedConfirmation)?;
            return confirmation::parse_x5t_s256(text, encoding)
                .map(|thumbprint| Some(Confirmation::X5tS256(thumbprint)))
                .ok_or(Denial::MalformedConfirmation);
        }
        // No x5t#S256. Without a payload there is nothing verified to judge. A payload without
        // cnf is unbound, and so is one whose cnf is a map (another confirmation method). A cnf
        // that is anything else is malformed, as when certbound decodes the token itself.
        let Some(claims) = property(payload.to_vec()).map_err(|()| Denial::Internal)? else {
            return Err(Denial::NoVerifiedClaims);
        };
        let claims = pairs::parse(&claims).ok_or(Denial::MalformedToken)?;
        if !claims.iter().any(|(name, _)| *name == b"cnf") {
            return Ok(Some(Confirmation::Unbound));
        }
        let cnf = [&payload[..], &["cnf"]].concat();
        // Envoy also renders a list as pairs (`["x5t#S256"]` as {"x5t#S256": ""}), so a cnf that
        // names x5t#S256 where the lookup above found no string is malformed too.
        let cnf = property(cnf)
            .map_err(|()| Denial::Internal)?
            .unwrap_or_default();
        match pairs::parse(&cnf) {
            Some(members) if !members.iter().any(|(name, _)| *name == b"x5t#S256") => {
                Ok(Some(Confirmation::Unbound))
            }
            _ => Err(Denial::MalformedConfirmation),
        }
    }

    /// Whether the downstream connection is a trusted proxy, by its source address or the
    /// identity (URI or DNS SAN) in its mTLS certificate: judged once per connection.
    fn trusted_proxy(&self) -> Result<bool, ()> {
        if self.plugin.config.trusted_proxies.any {
            return Ok(true);
        }
        self.per_connection(|peer| &mut peer.trusted, || self.judge_trusted_proxy())
    }

    /// [`Check::trusted_proxy`], from what Envoy reports of the connection.
    fn judge_trusted_proxy(&self) -> Result<bool, ()> {
        let trusted = &self.plugin.config.trusted_proxies;
        let source = match trusted.cidrs.is_empty() {
            true => None,
            false => property(vec!["source", "address"])?,
        };
        let mut sans = Vec::new();
        if !trusted.peer_identities.is_empty() {
            for san in ["uri_san_peer_certificate", "dns_san_peer_certificate"] {
                sans.extend(property(vec!["connection", san])?);
            }
        }
        let source = source.as_deref().map(String::from_utf8_lossy);
        let sans: Vec<_> = sans
            .iter()
            .map(|san| String::from_utf8_lossy(san))
            .collect();
        let sans: Vec<&str> = sans.iter().map(|san| san.as_ref()).collect();
        Ok(trusted.trusts(source.as_deref(), &sans))
    }

    /// The audit header to strip from the client's request: whenever a request might be audited.
    fn audit_header(&self) -> Option<&str> {
        let config = &self.plugin.config;
        let may_audit = config.mode == Mode::Audit || config.route_overrides;
        config.audit_header.as_deref().filter(|_| may_audit)
    }

    /// The mode (`None`: off) and rules for this request: the plugin's, unless the route's
    /// metadata overrides them and `route_overrides` is on.
    fn route_policy(&self) -> Result<(Option<Mode>, Rules), ()> {
        let config = &self.plugin.config;
        let mut rules = Rules::from(config);
        if !config.route_overrides {
            return Ok((Some(config.mode), rules));
        }
        let path = vec!["xds", "route_metadata", "filter_metadata", "certbound"];
        let serialized = hostcalls::get_property(path).map_err(|status| {
            warn!(
                "certbound: #{} cannot read route metadata: {status:?}",
                self.context_id
            );
        })?;
        let Some(serialized) = serialized else {
            return Ok((Some(config.mode), rules));
        };
        let policy = route::parse(&serialized).map_err(|e| {
            warn!("certbound: #{} {e}", self.context_id);
        })?;
        if let Some(require) = policy.require_bound_token {
            rules.require_bound_token = require;
        }
        Ok((policy.mode.unwrap_or(Some(config.mode)), rules))
    }

    /// Denies in enforce mode: counts, logs one line, publishes and answers with the reply built
    /// at configure time. Internal errors deny in audit mode too: certbound could not check, so it
    /// does not let through.
    fn deny(&self, denial: Denial) -> Action {
        self.plugin.metrics.count(Counter::Denied(denial));
        self.log_denial(denial, "denied");
        let Some(reply) = self.plugin.replies.get(denial) else {
            // Every denial has a reply; were one missing, the request still stops here.
            let _ = hostcalls::reset_http_request();
            return Action::Pause;
        };
        self.publish(&reply.denied, None);

        let sent = send_local_response(reply);
        if let Err(status) = sent {
            // The reply could not be sent; resetting the stream still keeps the request out.
            warn!(
                "certbound: #{} local reply failed (status {status}), resetting",
                self.context_id
            );
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    /// One line per denial: the reason, the method and the path without its query string
    /// (which may hold credentials). Never the token or the certificate. Skipped, with the
    /// header reads it needs, when Envoy's log level for wasm would drop it anyway.
    fn log_denial(&self, denial: Denial, what: &str) {
        if self.plugin.log_level.get() > LogLevel::Info as u32 {
            return;
        }
        let method = request_header(":method").ok().flatten().unwrap_or_default();
        let path = request_header(":path").ok().flatten().unwrap_or_default();
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        info!(
            "certbound: #{} {what} {} {}: {} ({})",
            self.context_id,
            String::from_utf8_lossy(&method),
            String::from_utf8_lossy(path),
            denial.name(),
            self.status_of(denial),
        );
    }

    /// Filter state for access logs: `%FILTER_STATE(wasm.certbound.verdict:PLAIN)%` and
    /// `%FILTER_STATE(wasm.certbound.thumbprint:PLAIN)%`.
    fn publish(&self, verdict: &str, thumbprint: Option<&str>) {
        if !self.plugin.config.filter_state {
            return;
        }
        let _ = hostcalls::set_property(vec!["certbound.verdict"], Some(verdict.as_bytes()));
        if let Some(thumbprint) = thumbprint {
            let _ =
                hostcalls::set_property(vec!["certbound.thumbprint"], Some(thumbprint.as_bytes()));
        }
    }
}

/// The certificate header as it arrived, and whether its sender is a trusted proxy when that was
/// already looked up.
struct CertificateHeader {
    value: Option<Vec<u8>>,
    trusted: Option<bool>,
    /// The request carried the header more than once.
    repeated: bool,
}

/// How many times a request header occurs.
fn header_count(name: &str) -> Result<usize, ()> {
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_err(|status| {
        warn!("certbound: cannot read the request headers: {status:?}");
    })?;
    Ok(headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .count())
}

/// Asks Envoy for a tick every `period`. proxy-wasm 0.2's `set_tick_period` panics when the call
/// fails; this returns the host's status instead.
fn set_tick_period(period: Duration) -> Result<(), u32> {
    #[link(wasm_import_module = "env")]
    extern "C" {
        #[link_name = "proxy_set_tick_period_milliseconds"]
        fn set_tick_period_milliseconds(period: u32) -> u32;
    }
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: a plain integer argument; the host reads no memory.
    match unsafe { set_tick_period_milliseconds(millis) } {
        0 => Ok(()),
        status => Err(status),
    }
}

/// Envoy's log level for wasm code, as the host's integer: spdlog's 0 (trace) to 5 (critical), and
/// 6 (off). proxy-wasm 0.2's `get_log_level` reads it into an enum that has no "off" and panics
/// when the call fails; this reads an integer, and a failed call reads as 0, which logs.
fn host_log_level() -> u32 {
    #[link(wasm_import_module = "env")]
    extern "C" {
        #[link_name = "proxy_get_log_level"]
        fn get_log_level(return_level: *mut u32) -> u32;
    }
    let mut level = 0_u32;
    // SAFETY: the host writes one u32 through the pointer, which is valid for the whole call.
    let status = unsafe { get_log_level(&mut level) };
    if status == 0 {
        level
    } else {
        0
    }
}

/// Certificate headers that Envoy keeps among its inline request headers, whose copies it joins.
fn joined_by_envoy(name: &str) -> bool {
    name.eq_ignore_ascii_case("x-forwarded-client-cert")
}

fn property(path: Vec<&str>) -> Result<Option<Vec<u8>>, ()> {
    hostcalls::get_property(path).map_err(|status| {
        warn!("certbound: cannot read a property from Envoy: {status:?}");
    })
}

fn remove_request_header(name: &str) -> Result<(), ()> {
    hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(|status| {
        warn!("certbound: cannot remove request header {name}: {status:?}");
    })
}

fn unix_now() -> Result<u64, Denial> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|now| now.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs())
        .ok_or(Denial::Internal)
}

/// Reads a request header as bytes (a non-UTF-8 value must not take the VM down).
fn request_header(name: &str) -> Result<Option<Vec<u8>>, ()> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).map_err(|status| {
        warn!("certbound: cannot read request header {name}: {status:?}");
    })
}

impl Check {
    /// The thumbprint of the certificate the client presented on this TLS connection: read from
    /// Envoy once per connection, and on every request when Envoy reports no connection id.
    fn peer_certificate(&self) -> Result<Option<Thumbprint>, Denial> {
        self.per_connection(|peer| &mut peer.certificate, peer_certificate)
    }

    /// One fact of the downstream connection ([`Peer`]): from the memo once the connection's
    /// first request has read it, from Envoy (`read`) otherwise, and on every request when Envoy
    /// reports no connection id.
    fn per_connection<T: Copy, E>(
        &self,
        field: fn(&mut Peer) -> &mut Option<T>,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let Some(id) = self.connection_id() else {
            return read();
        };
        let peers = &self.plugin.memos.peers;
        let mut peer: Peer = peers
            .try_borrow()
            .ok()
            .and_then(|peers| peers.get(&id))
            .unwrap_or_default();
        if let Some(known) = *field(&mut peer) {
            return Ok(known);
        }
        let value = read()?;
        *field(&mut peer) = Some(value);
        if let Ok(mut peers) = peers.try_borrow_mut() {
            peers.insert(&id, peer);
        }
        Ok(value)
    }

    /// The downstream connection's id, read from Envoy at most once per request.
    fn connection_id(&self) -> Option<[u8; 8]> {
        if let Some(known) = self.connection.get() {
            return known;
        }
        let id = read_connection_id().map(u64::to_le_bytes);
        self.connection.set(Some(id));
        id
    }

    /// What the Authorization header's bearer token confirms ([`policy::read_authorization`]):
    /// from the memo when this header value was read before. Only a
    /// Bearer credential of the right shape and size is kept: another scheme's credential (a
    /// password, say) is none of certbound's business to hold.
    fn authorization_claims(
        &self,
        rules: Rules,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Confirmation>, Denial> {
        let Some(value) = authorization else {
            return policy::read_authorization(rules, None);
        };
        let memo = &self.plugin.memos.authorizations;
        if let Some(known) = memo.try_borrow().ok().and_then(|memo| memo.get(value)) {
            return known;
        }
        let claims = policy::read_authorization(rules, Some(value));
        let bearer_token = !matches!(
            claims,
            Ok(None) | Err(Denial::MalformedAuthorization | Denial::TokenTooLarge)
        );
        if let (true, Ok(mut memo)) = (bearer_token, memo.try_borrow_mut()) {
            memo.insert(value, claims);
        }
        claims
    }

    /// The certificate a trusted proxy forwarded: from the memo when this header value was read
    /// before against the same proxy certificate.
    fn forwarded_thumbprint(
        &self,
        value: Option<&[u8]>,
        proxy: Option<Thumbprint>,
    ) -> Result<Option<Thumbprint>, Denial> {
        let config = &self.plugin.config;
        let memo = &self.plugin.memos.forwarded;
        let memoizable =
            value.is_some_and(|value| value.len() <= config.max_certificate_header_bytes);
        let (Some(value), None, true) = (value, &config.forwarded_certificate_ca, memoizable)
        else {
            let now = match config.forwarded_certificate_ca {
                Some(_) => unix_now()?,
                None => 0,
            };
            return policy::forwarded_thumbprint(config, value, proxy, now);
        };
        let known = memo.try_borrow().ok().and_then(|memo| memo.get(value));
        if let Some((read_with, answer)) = known {
            if read_with == proxy {
                return answer;
            }
        }
        let answer = policy::forwarded_thumbprint(config, Some(value), proxy, 0);
        if let Ok(mut memo) = memo.try_borrow_mut() {
            memo.insert(value, (proxy, answer));
        }
        answer
    }
}

/// Envoy's id of the downstream connection (an unsigned 64-bit integer, 8 bytes little-endian).
fn read_connection_id() -> Option<u64> {
    let bytes = hostcalls::get_property(vec!["connection", "id"]).ok()??;
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The thumbprint of the certificate the client presented on this TLS connection, as Envoy
/// computed it (after verifying it against the listener's validation context, when one is set).
/// `None` on a plaintext connection or without a client certificate.
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

/// The local reply for each denial, built once at configure time: the status (with
/// `on_error_status` applied), the `WWW-Authenticate` challenge, the JSON body, and the verdicts
/// published as filter state.
struct Replies(Vec<Reply>);

struct Reply {
    status: u32,
    grpc_status: GrpcStatusCode,
    /// `WWW-Authenticate`, `content-type` and `cache-control`, serialized as proxy-wasm passes
    /// a header map.
    headers: Vec<u8>,
    body: String,
    /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`): `certbound_<reason>`.
    details: String,
    denied: String,
    would_deny: String,
}

impl Replies {
    fn new(config: &Config) -> Self {
        let replies = Denial::ALL.iter().map(|&denial| {
            let status = match (&config.introspection, denial) {
                (Some(introspection), Denial::IntrospectionFailed) => introspection.on_error_status,
                _ => denial.status(),
            };
            Reply {
                status,
                // UNAUTHENTICATED (16); a failed authorization server is UNAVAILABLE (14).
                grpc_status: match status {
                    503 => GrpcStatusCode::Unavailable,
                    _ => GrpcStatusCode::Unauthenticated,
                },
                headers: serialize_headers(&[
                    ("www-authenticate", &denial.www_authenticate_at(status)),
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ]),
                body: denial.body_at(status),
                details: format!("certbound_{}", denial.name()),
                denied: format!("denied:{}", denial.name()),
                would_deny: format!("would_deny:{}", denial.name()),
            }
        });
        Self(replies.collect())
    }

    fn get(&self, denial: Denial) -> Option<&Reply> {
        self.0.get(denial.index())
    }
}

/// A header map as proxy-wasm passes one: the number of pairs, each key's and value's length
/// (little-endian u32), then each key and value followed by a NUL byte.
fn serialize_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&length(headers.len()));
    for (name, value) in headers {
        out.extend_from_slice(&length(name.len()));
        out.extend_from_slice(&length(value.len()));
    }
    for (name, value) in headers {
        for part in [name, value] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
    }
    out
}

/// Sends the denial's local reply. Envoy answers a gRPC request (`content-type`
/// `application/grpc` or `application/grpc+...`, as Envoy tells gRPC apart) the gRPC way itself:
/// HTTP 200 with `grpc-status` (the one given here) and the body, percent-encoded, as
/// `grpc-message`. So certbound reads no header to choose, and gRPC-Web gets the HTTP answer.
///
/// proxy-wasm 0.2's `send_http_response` always passes "no gRPC status" and panics on any status
/// but Ok; this passes the status and returns the host's answer instead.
fn send_local_response(reply: &Reply) -> Result<(), u32> {
    #[link(wasm_import_module = "env")]
    extern "C" {
        #[link_name = "proxy_send_local_response"]
        #[allow(clippy::too_many_arguments)]
        fn send_local_response(
            status_code: u32,
            details_data: *const u8,
            details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
    }
    // SAFETY: every pointer is valid for its length for the whole call, and the host only reads.
    let status = unsafe {
        send_local_response(
            reply.status,
            reply.details.as_ptr(),
            reply.details.len(),
            reply.body.as_ptr(),
            reply.body.len(),
            reply.headers.as_ptr(),
            reply.headers.len(),
            reply.grpc_status as i32,
        )
    };
    match status {
        0 => Ok(()),
        other => Err(other),
    }
}

/// Counters, defined once per VM. Envoy lists them under `wasmcustom.certbound.*` in `/stats`.
///
/// Each `proxy_increment_metric` is a crossing into the host, so the counts of passing and exempt
/// requests are added up in the VM and handed to Envoy on the root context's tick
/// ([`FLUSH_PERIOD`]), when the VM stops, and when its last request ends: they reach `/stats` and
/// the sinks up to one period late. Denials are counted at once: they already pay for a local
/// reply, and a VM that fails loses no denial it counted.
struct Metrics {
    /// Envoy's id for each counter, by [`Counter::slot`].
    ids: Vec<u32>,
    /// What each counter has gained since it was last handed to Envoy, by [`Counter::slot`].
    pending: Vec<Cell<u64>>,
}

/// How often the counts kept in the VM are handed to Envoy.
const FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// What certbound counts.
#[derive(Clone, Copy)]
enum Counter {
    Checked,
    Exempt,
    Bound,
    Unbound,
    IntrospectionCalls,
    IntrospectionCacheHits,
    Denied(Denial),
    WouldDeny(Denial),
}

impl Counter {
    /// The names of the counters without a reason, in slot order.
    const PLAIN: [&'static str; 6] = [
        "certbound.checked",
        "certbound.exempt",
        "certbound.passed.bound",
        "certbound.passed.unbound",
        "certbound.introspection.calls",
        "certbound.introspection.cache_hits",
    ];

    /// Position in [`Metrics::ids`]: the plain counters in [`Counter::PLAIN`]'s order, then one
    /// per denial reason for `denied`, then one per reason for `audit.would_deny`.
    fn slot(self) -> usize {
        let plain = Self::PLAIN.len();
        match self {
            Counter::Checked => 0,
            Counter::Exempt => 1,
            Counter::Bound => 2,
            Counter::Unbound => 3,
            Counter::IntrospectionCalls => 4,
            Counter::IntrospectionCacheHits => 5,
            Counter::Denied(denial) => plain + denial.index(),
            Counter::WouldDeny(denial) => plain + Denial::ALL.len() + denial.index(),
        }
    }

    /// Whether Envoy hears of it at once rather than on the next flush.
    fn at_once(self) -> bool {
        matches!(self, Counter::Denied(_) | Counter::WouldDeny(_))
    }
}

impl Metrics {
    fn define() -> Result<Self, Status> {
        let plain = Counter::PLAIN.iter().map(|name| name.to_string());
        let per_reason = |prefix: &'static str| {
            Denial::ALL
                .iter()
                .map(move |denial| format!("{prefix}.{}", denial.name()))
        };
        let names = plain
            .chain(per_reason("certbound.denied"))
            .chain(per_reason("certbound.audit.would_deny"));
        let ids = names
            .map(|name| hostcalls::define_metric(MetricType::Counter, &name))
            .collect::<Result<Vec<u32>, Status>>()?;
        let pending = ids.iter().map(|_| Cell::new(0)).collect();
        Ok(Self { ids, pending })
    }

    fn count(&self, counter: Counter) {
        let slot = counter.slot();
        if counter.at_once() {
            if let Some(&id) = self.ids.get(slot) {
                let _ = hostcalls::increment_metric(id, 1);
            }
        } else if let Some(pending) = self.pending.get(slot) {
            pending.set(pending.get().saturating_add(1));
        }
    }

    /// Hands what was counted since the last flush to Envoy. A count Envoy refuses is kept for
    /// the next flush.
    fn flush(&self) {
        for (&id, pending) in self.ids.iter().zip(&self.pending) {
            let count = pending.take();
            if count == 0 {
                continue;
            }
            let delta = i64::try_from(count).unwrap_or(i64::MAX);
            if hostcalls::increment_metric(id, delta).is_err() {
                pending.set(count);
            }
        }
    }
}

//! What `serve` counts, and its Prometheus exposition at `GET /metrics`.
//!
//! Every label value comes from a fixed set, so the number of series is bounded whatever clients
//! send: a path is reduced to its [`route`] class (an API route, a page, `/prompt/*`, `/demo/*`, or
//! `other`, never the raw path), a method to one of eight names, a status to its three digits. No
//! label or value is taken from a body, a header or a query: the exposition holds no secret.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `mfa_step_http_requests_total` | counter | `route`, `method`, `status` |
//! | `mfa_step_http_request_duration_seconds` | histogram (until the answer is ready to send) | `route` |
//! | `mfa_step_store_errors_total` | counter | `op`: `get`, `set`, `delete`, `increment`, `list_keys`, `commit` |
//! | `mfa_step_audit_errors_total` | counter | `op`: `head`, `append` |
//! | `mfa_step_mail_errors_total` | counter | — |
//! | `mfa_step_component_instances_in_flight` | gauge (until the answer is in memory) | — |
//! | `mfa_step_component_instance_capacity` | gauge | — |
//! | `mfa_step_http_requests_in_flight` | gauge (head to answer in memory) | — |
//! | `mfa_step_http_connections_open` | gauge | — |
//! | `mfa_step_http_refusals_total` | counter | `reason`: see [`Refusal`] |
//! | `mfa_step_http_accept_errors_total` | counter | — |
//!
//! The outcome of an action is the status its route answered (the README's error table maps each
//! status to its `kind`): the host reads nothing else of an answer, so it decides nothing.
//! Backend errors are counted where the component's imports reach the backends
//! ([`super::metered`]): each is an error a backend returned, whatever the component made of it. An
//! audit `append` refused for a moved head (`conflict`) is the chain's normal retry, not an error.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use hyper::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of the exposition: OpenMetrics text, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many component instances the engine's pooling allocator holds at once.
pub const INSTANCE_CAPACITY: i64 = crate::runtime::INSTANCE_CAPACITY as i64;

/// The component's REST routes (`guest/src/http.rs`, `guest/openapi.json`), each its own class.
const API_ROUTES: [&str; 22] = [
    "/v1/login/begin",
    "/v1/login/send-code",
    "/v1/login/verify",
    "/v1/login/enroll",
    "/v1/login/change-email",
    "/v1/login/status",
    "/v1/devices/list",
    "/v1/devices/revoke",
    "/v1/devices/revoke-all",
    "/v1/admin/credential-changed",
    "/v1/admin/policy/get",
    "/v1/admin/policy/set",
    "/v1/admin/platform-roles/get",
    "/v1/admin/platform-roles/set",
    "/v1/admin/reset-user",
    "/v1/admin/user-status",
    "/v1/admin/branding/get",
    "/v1/admin/branding/set",
    "/v1/admin/branding/preview",
    "/v1/admin/branding/preview-link",
    "/v1/admin/console-link",
    "/v1/admin/sync-roster",
];

/// Single pages, each its own class: the component's, then the host's own.
const PAGES: [&str; 15] = [
    "/healthz",
    "/openapi.json",
    "/admin/branding/preview",
    "/admin/console",
    "/admin/console/health",
    "/admin/console/policy",
    "/admin/console/branding",
    "/admin/console/branding/email",
    "/admin/console/users",
    "/admin/console/user",
    "/admin/console/audit",
    "/admin/console/audit/export",
    "/admin/console/sign-out",
    super::METRICS_PATH,
    super::READYZ_PATH,
];

/// The class of the hosted prompt's pages.
pub const PROMPT_ROUTES: &str = "/prompt/*";
/// The class of the demo identity provider's pages.
pub const DEMO_ROUTES: &str = "/demo/*";
/// The class of every other path.
pub const OTHER_ROUTE: &str = "other";

/// The route class of `path` (without its query): one of a fixed set of names.
#[must_use]
pub fn route(path: &str) -> &'static str {
    if let Some(known) = API_ROUTES.iter().chain(PAGES.iter()).find(|r| **r == path) {
        return known;
    }
    if path == "/prompt" || path.starts_with("/prompt/") {
        return PROMPT_ROUTES;
    }
    if crate::demo_idp::owns(path) {
        return DEMO_ROUTES;
    }
    OTHER_ROUTE
}

/// `method`'s name if it is one of the seven HTTP methods a client of this API might send, else
/// `other` (a method is any token a client chooses).
#[must_use]
pub fn method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why the host refused a request or closed a connection before the component saw it (the
/// budgets of [`super::admission`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 503: `--max-in-flight` requests were already in flight.
    Busy,
    /// 503: `--max-in-flight-per-client` requests from this client were already in flight.
    BusyClient,
    /// 503: no component instance came free in time.
    BusyInstances,
    /// 408: the body did not arrive within `--body-timeout`.
    BodyTimeout,
    /// Closed: no request head arrived within `--header-timeout` (a slow head, or a keep-alive
    /// connection left idle that long).
    HeaderTimeout,
    /// 400: the body could not be read (the client went away mid-body).
    Unreadable,
    /// Closed: a write of an answer made no progress for `--write-timeout` (a client that does
    /// not read).
    WriteTimeout,
}

impl Refusal {
    /// Every reason, as labelled in `mfa_step_http_refusals_total`.
    pub const ALL: [Self; 7] = [
        Self::Busy,
        Self::BusyClient,
        Self::BusyInstances,
        Self::BodyTimeout,
        Self::HeaderTimeout,
        Self::Unreadable,
        Self::WriteTimeout,
    ];

    /// The label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::BusyClient => "busy-client",
            Self::BusyInstances => "busy-instances",
            Self::BodyTimeout => "body-timeout",
            Self::HeaderTimeout => "header-timeout",
            Self::Unreadable => "unreadable-body",
            Self::WriteTimeout => "write-timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// The store calls, as labelled in `mfa_step_store_errors_total`.
pub(crate) const STORE_OPS: [&str; 6] =
    ["get", "set", "delete", "increment", "list_keys", "commit"];
/// The audit calls, as labelled in `mfa_step_audit_errors_total`.
pub(crate) const AUDIT_OPS: [&str; 2] = ["head", "append"];

/// Upper bounds of the latency buckets, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// One server's metrics. Cheap to update from any thread; [`Metrics::encode`] renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    store_errors: Family<OpLabels, Counter>,
    audit_errors: Family<OpLabels, Counter>,
    mail_errors: Counter,
    in_flight: Gauge<i64, AtomicI64>,
    requests_in_flight: Gauge<i64, AtomicI64>,
    connections_open: Gauge<i64, AtomicI64>,
    refusals: Family<ReasonLabels, Counter>,
    accept_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero; the error counters exist for each call from the start, so that a
    /// dashboard shows 0 rather than no data.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mfa_step");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route class, method and status",
            requests.clone(),
        );
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival until its answer is ready to send, by route class",
            Unit::Seconds,
            latency.clone(),
        );
        let store_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Errors the store backend returned to the component, by call",
            store_errors.clone(),
        );
        let audit_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "audit_errors",
            "Errors the audit sink returned to the component, by call (a head conflict is not one)",
            audit_errors.clone(),
        );
        let mail_errors = Counter::default();
        registry.register(
            "mail_errors",
            "Errors the mailer returned to the component",
            mail_errors.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "component_instances_in_flight",
            "Requests holding a component instance (from instantiation until the whole answer is in \
             memory, before it is sent)",
            in_flight.clone(),
        );
        let capacity = Gauge::<i64, AtomicI64>::default();
        capacity.set(INSTANCE_CAPACITY);
        registry.register(
            "component_instance_capacity",
            "Component instances the pooling allocator can hold at once",
            capacity,
        );
        let requests_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_requests_in_flight",
            "Requests admitted (from their head until their answer is ready to send), component or not",
            requests_in_flight.clone(),
        );
        let connections_open = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_connections_open",
            "Client connections open",
            connections_open.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_refusals",
            "Requests the host refused (503 busy, 408 timeout, 400 unreadable) and connections it \
             closed for a head that did not come in time or an answer the client did not read, by \
             reason",
            refusals.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "http_accept_errors",
            "Failed accepts (e.g. out of file descriptors); each is followed by a short pause",
            accept_errors.clone(),
        );
        for refusal in Refusal::ALL {
            let _ = refusals.get_or_create(&ReasonLabels {
                reason: refusal.label(),
            });
        }
        for op in STORE_OPS {
            let _ = store_errors.get_or_create(&OpLabels { op });
        }
        for op in AUDIT_OPS {
            let _ = audit_errors.get_or_create(&OpLabels { op });
        }
        Self {
            registry,
            requests,
            latency,
            store_errors,
            audit_errors,
            mail_errors,
            in_flight,
            requests_in_flight,
            connections_open,
            refusals,
            accept_errors,
        }
    }

    /// Counts one refusal.
    pub fn refused(&self, refusal: Refusal) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: refusal.label(),
            })
            .inc();
    }

    /// Counts one failed accept.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// Marks one request admitted until the returned guard is dropped.
    #[must_use]
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.requests_in_flight.inc();
        InFlight(self.clone())
    }

    /// Marks one connection open until the returned guard is dropped.
    #[must_use]
    pub fn connection(self: &Arc<Self>) -> ConnectionOpen {
        self.connections_open.inc();
        ConnectionOpen(self.clone())
    }

    /// Counts one answered request of `route` class and records how long its answer took.
    pub fn request(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: self::method(method),
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one store error in call `op` (one of [`STORE_OPS`]).
    pub(crate) fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// Counts one audit sink error in call `op` (one of [`AUDIT_OPS`]).
    pub(crate) fn audit_error(&self, op: &'static str) {
        self.audit_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// Counts one mailer error.
    pub(crate) fn mail_error(&self) {
        self.mail_errors.inc();
    }

    /// Marks one component instance in use until the returned guard is dropped.
    #[must_use]
    pub fn instance(self: &Arc<Self>) -> InstanceInUse {
        self.in_flight.inc();
        InstanceInUse(self.clone())
    }

    /// The OpenMetrics text exposition of every metric.
    ///
    /// # Errors
    /// Never in practice: the text is written to a `String`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// One component instance in use; dropping it gives the slot back in the gauge.
#[derive(Debug)]
pub struct InstanceInUse(Arc<Metrics>);

impl Drop for InstanceInUse {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// One admitted request; dropping it takes it off `mfa_step_http_requests_in_flight`.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests_in_flight.dec();
    }
}

/// One open connection; dropping it takes it off `mfa_step_http_connections_open`.
#[derive(Debug)]
pub struct ConnectionOpen(Arc<Metrics>);

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_openapi_document_is_its_own_class_or_a_prompt_page() {
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../guest/openapi.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() > 20, "{paths:?}");
        for path in paths.keys() {
            let class = route(path);
            if path == "/prompt" || path.starts_with("/prompt/") {
                assert_eq!(class, PROMPT_ROUTES, "{path}");
            } else {
                assert_eq!(class, path, "{path} must have its own class");
            }
        }
        // And no class names a route the API does not have.
        for known in API_ROUTES {
            assert!(paths.contains_key(known), "{known} is not in openapi.json");
        }
    }

    #[test]
    fn paths_a_client_makes_up_fall_into_a_few_classes() {
        assert_eq!(route("/metrics"), "/metrics");
        assert_eq!(route("/readyz"), "/readyz");
        assert_eq!(route("/demo"), DEMO_ROUTES);
        assert_eq!(route("/demo/return"), DEMO_ROUTES);
        assert_eq!(route("/prompt/anything/at/all"), PROMPT_ROUTES);
        for made_up in [
            "/",
            "/v1/login/begin/",
            "/v1/login/Begin",
            "/v1/secret-7f3a",
            "/promptx",
            "/demox",
            "//healthz",
            "",
        ] {
            assert_eq!(route(made_up), OTHER_ROUTE, "{made_up}");
        }
        assert_eq!(method(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method(&Method::POST), "POST");
    }

    #[test]
    fn the_exposition_names_every_metric_and_counts_what_happened() {
        let metrics = Arc::new(Metrics::new());
        metrics.request(
            route("/v1/login/verify"),
            &Method::POST,
            StatusCode::FORBIDDEN,
            Duration::from_millis(3),
        );
        metrics.store_error("get");
        metrics.audit_error("append");
        metrics.mail_error();
        let held = metrics.instance();
        metrics.refused(Refusal::BusyClient);
        let admitted = metrics.in_flight();
        let text = metrics.encode().unwrap();
        for line in [
            "mfa_step_http_requests_total{route=\"/v1/login/verify\",method=\"POST\",status=\"403\"} 1",
            "mfa_step_http_request_duration_seconds_count{route=\"/v1/login/verify\"} 1",
            "mfa_step_http_request_duration_seconds_bucket{le=\"0.005\",route=\"/v1/login/verify\"} 1",
            "mfa_step_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"/v1/login/verify\"} 0",
            "mfa_step_store_errors_total{op=\"get\"} 1",
            "mfa_step_store_errors_total{op=\"list_keys\"} 0",
            "mfa_step_audit_errors_total{op=\"append\"} 1",
            "mfa_step_audit_errors_total{op=\"head\"} 0",
            "mfa_step_mail_errors_total 1",
            "mfa_step_component_instances_in_flight 1",
            "mfa_step_component_instance_capacity 256",
            "mfa_step_http_refusals_total{reason=\"busy-client\"} 1",
            "mfa_step_http_refusals_total{reason=\"body-timeout\"} 0",
            "mfa_step_http_requests_in_flight 1",
            "mfa_step_http_connections_open 0",
            "mfa_step_http_accept_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        drop((held, admitted));
        let text = metrics.encode().unwrap();
        assert!(
            text.lines()
                .any(|l| l == "mfa_step_component_instances_in_flight 0"),
            "{text}"
        );
    }
}

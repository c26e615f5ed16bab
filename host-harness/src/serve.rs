//! `mfa-step serve`: an HTTP/1.1 server whose every request is handled by a fresh instance of the
//! component's `wasi:http/incoming-handler` export. The host decides nothing about MFA: it routes,
//! checks the API key where the component would (answering as it would), bounds resources, and
//! logs each request's method, path, status, duration and client address (never a header, a query
//! or a body: bodies carry codes, headers the API key, queries the prompt's signed requests and
//! results).
//!
//! The host tells the component who is calling: it removes any `x-mfa-client-ip` header the client
//! sent and sets its own from the TCP peer's address (the IP alone, no port), so a client cannot
//! pose as another address; behind proxies named with `--trusted-proxy`, from the right-most
//! untrusted `X-Forwarded-For` hop ([`client_ip`]). The component trusts that header (its
//! `client_ip_header` setting).
//!
//! Slow or many clients cannot take the component's instances from others: connections, heads,
//! bodies and requests in flight are bounded, a request takes an instance only once its whole body
//! has arrived, gives it back (and its admission) as soon as the whole answer is in memory, before
//! a byte of it is sent, and a full server answers 503 with `Retry-After` ([`admission`], which
//! draws the order of the checks). A write that makes no progress for `--write-timeout` closes its
//! connection ([`write_timeout`]): a client that never reads holds nothing but its connection, and
//! that not for long.
//!
//! With `--demo`, the paths `/demo` and `/demo/…` belong to the demo identity provider
//! ([`crate::demo_idp`]), which the host runs itself: it is the other party of the hosted prompt, not
//! part of the component. Every other path goes to the component, except two the host answers for
//! the operator:
//!
//! - `GET /metrics`: Prometheus metrics ([`metrics`]), counted by the host around the component and
//!   at its backends ([`metered`]). Like `/healthz`, it needs no API key, as is usual for a scrape
//!   target on the serving port: it holds counts by route class, method, status and backend call,
//!   and nothing taken from a request (no path beyond its class, no query, header, body, user or
//!   organization), so it tells an outsider no more than timing the public routes would. Where even
//!   that is too much, keep the port behind a proxy that does not forward `/metrics`.
//! - `GET /readyz`: 200 while the store and the audit sink answer, else 503 naming what is down
//!   ([`ready`]). `/healthz` (the component's) stays what it was: the process is alive.
//!
//! The console's audit page and exports are the component's answers, which the host completes: it
//! reads its own trail, verifies the chain from a checkpoint and fills in the rows, the chain's
//! status or the download ([`audit_view`]). The query header the component asks with is removed
//! from every answer.
//!
//! Shutdown is graceful: once `shutdown` resolves (SIGTERM or Ctrl-C in the CLI) the listener is
//! closed, idle connections are closed, and every request already received is answered, each on a
//! connection that then closes, for at most the grace period; past it, what is left is cut.
//!
//! A component that traps gets its request a bare 500 (and the log the cause): the host does not
//! make up an answer for it.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::demo_idp::DemoIdp;
use crate::host::Backends;
use crate::runtime::Runtime;

pub mod admission;
pub mod audit_view;
pub mod client_ip;
pub mod metered;
pub mod metrics;
pub mod ready;
pub mod write_timeout;

use admission::{Admission, ApiKey, Key, Limits};
use client_ip::TrustedProxies;
use metrics::{Metrics, Refusal};
use ready::Probes;
use write_timeout::WriteTimeout;

/// The header that carries the client's IP to the component (the `client_ip_header` default).
pub const CLIENT_IP_HEADER: &str = "x-mfa-client-ip";
/// Where the host serves its Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Where the host answers whether its backends are up.
pub const READYZ_PATH: &str = "/readyz";
/// How long shutdown waits for requests in flight by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long the accept loop pauses after a failed accept (out of file descriptors, mostly), so that
/// it does not spin while the condition lasts.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The largest answer the host takes from the component, which it holds whole in memory before
/// sending it (the largest, `/openapi.json`, is about 230 KiB). A larger one is a bug in the
/// component: the client gets a bare 500, the log the cause.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// The most a connection buffers of a request head (hyper's default buffer is ~400 KB; its
/// minimum 8 KiB), and the largest head it takes. A head past it gets 431 and the connection is
/// closed.
pub const MAX_HEAD: usize = 64 * 1024;
/// How often, at most, the log says the connection cap is reached.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How a server runs, beyond its component, backends and listener.
#[derive(Clone)]
pub struct Options {
    /// Serve the demo identity provider under `/demo/`.
    pub demo: Option<Arc<DemoIdp>>,
    /// How long shutdown waits for requests in flight before cutting them.
    pub shutdown_grace: Duration,
    /// Caps and deadlines.
    pub limits: Limits,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            demo: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            limits: Limits::default(),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every request received before shutdown was answered.
    Drained,
    /// The grace period ran out; the connections still open were cut.
    GraceExpired,
}

/// What every connection of one server shares.
struct Shared {
    runtime: Arc<Runtime>,
    /// The backends as the component sees them: counted in `metrics`.
    backends: Backends,
    demo: Option<Arc<DemoIdp>>,
    metrics: Arc<Metrics>,
    /// Probes over the backends as they are, outside the component's counts.
    probes: Probes,
    limits: Limits,
    admission: Arc<Admission>,
    api_key: ApiKey,
    proxies: TrustedProxies,
    /// The console's audit viewer, over the sink as it is (its reads are not the component's).
    audit_view: audit_view::AuditView,
}

/// Who answered a request, for its log line.
#[derive(Clone, Copy)]
enum Answerer {
    Host,
    /// The host, refusing a request meant for the component or the demo (401, 503, 408, 400).
    Refused,
    DemoIdp,
    Component,
}

/// Serves the component until `shutdown` resolves, then drains for [`DEFAULT_SHUTDOWN_GRACE`].
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve(
    runtime: Arc<Runtime>,
    backends: Backends,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stopped> {
    serve_with(runtime, backends, listener, Options::default(), shutdown).await
}

/// Serves the component (and with `options.demo` the demo identity provider under `/demo/`) until
/// `shutdown` resolves; then stops accepting, answers the requests in flight for at most
/// `options.shutdown_grace`, and returns.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve_with(
    runtime: Arc<Runtime>,
    backends: Backends,
    listener: TcpListener,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stopped> {
    let addr = listener.local_addr().context("read the bound address")?;
    let metrics = Arc::new(Metrics::new());
    let limits = options.limits;
    let instance_capacity = usize::try_from(crate::runtime::INSTANCE_CAPACITY).unwrap_or(1);
    let shared = Arc::new(Shared {
        runtime,
        probes: Probes::new(&backends, ready::PROBE_TIMEOUT),
        api_key: ApiKey::new(backends.config.get("api_key")),
        audit_view: audit_view::AuditView::new(
            backends.audit.clone(),
            backends.config.get("hmac_key").as_deref(),
        ),
        backends: metered::instrument(backends, &metrics),
        demo: options.demo,
        admission: Arc::new(Admission::new(&limits, instance_capacity, metrics.clone())),
        metrics,
        limits,
        proxies: options.trusted_proxies,
    });
    tracing::info!(
        %addr,
        max_connections = limits.max_connections,
        max_in_flight = limits.max_in_flight,
        max_in_flight_per_client = limits.max_in_flight_per_client,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        body_timeout_s = limits.body_timeout.as_secs_f64(),
        write_timeout_s = limits.write_timeout.as_secs_f64(),
        trusted_proxies = !shared.proxies.is_empty(),
        "serving the mfa-step component"
    );
    let graceful = GracefulShutdown::new();
    // Turned on when the grace period runs out: every connection still open is then dropped.
    let (cut, cut_watch) = tokio::sync::watch::channel(false);
    // One place per open connection, taken before `accept`: past the cap, new connections wait in
    // the kernel's backlog and hold no file descriptor of this process.
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD);
    let mut last_cap_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let place = match connections.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                // Once a minute at most: at the cap, every freed place would otherwise log a line.
                if last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    place = connections.clone().acquire_owned() => match place {
                        Ok(place) => place,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing before the next");
                    shared.metrics.accept_error();
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let open = shared.metrics.connection();
        let conn_shared = shared.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let shared = conn_shared.clone();
            async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
        });
        // Watched from here, in the accept loop, so that no accepted connection escapes a shutdown.
        let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
        let connection = graceful.watch(builder.serve_connection(io, service));
        let mut cut_watch = cut_watch.clone();
        let metrics = shared.metrics.clone();
        tokio::spawn(async move {
            // Held until the connection is gone.
            let _held = (place, open);
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    if e.is_timeout() {
                        metrics.refused(Refusal::HeaderTimeout);
                        tracing::debug!(%peer, "connection closed: no request head in time");
                    } else if write_timeout::is_write_stall(&e) {
                        metrics.refused(Refusal::WriteTimeout);
                        tracing::debug!(%peer, "connection closed: the client read nothing in time");
                    } else {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                },
                _ = cut_watch.wait_for(|cut| *cut) => {
                    tracing::debug!(%peer, "connection cut at the end of the grace period");
                }
            }
        });
    }
    drop(listener);
    let grace = options.shutdown_grace;
    tracing::info!(
        open_connections = graceful.count(),
        grace_seconds = grace.as_secs_f64(),
        "shutting down: no new connections; answering the requests in flight"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
    {
        tracing::info!("stopped: every request in flight was answered");
        Ok(Stopped::Drained)
    } else {
        tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "stopped: the grace period ran out; the connections still open are cut"
        );
        let _ = cut.send(true);
        Ok(Stopped::GraceExpired)
    }
}

/// Replaces whatever `x-mfa-client-ip` headers the client sent with one holding `peer` (an
/// IPv4-mapped IPv6 address is written as the IPv4 address it is).
pub fn set_client_ip<B>(req: &mut hyper::Request<B>, peer: IpAddr) {
    let headers = req.headers_mut();
    headers.remove(CLIENT_IP_HEADER);
    // An IP address's text is always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&peer.to_canonical().to_string()) {
        headers.insert(CLIENT_IP_HEADER, value);
    }
}

async fn handle(
    shared: &Shared,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> hyper::Response<HyperOutgoingBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = metrics::route(&path);
    let client = shared.proxies.client_ip(peer.ip(), req.headers());
    let (answerer, resp) = if path == METRICS_PATH {
        (Answerer::Host, metrics_page(&shared.metrics, &method))
    } else if path == READYZ_PATH {
        (Answerer::Host, readyz_page(&shared.probes, &method).await)
    } else {
        admitted(shared, req, &path, client).await
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    shared
        .metrics
        .request(route, &method, resp.status(), elapsed);
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    match answerer {
        // Scrapes and probes come every few seconds: worth a line only when asked for.
        Answerer::Host => {
            tracing::debug!(%peer, %client, %method, %path, status, ms, "host request")
        }
        Answerer::Refused => {
            tracing::info!(%peer, %client, %method, %path, status, ms, "request refused by the host");
        }
        Answerer::DemoIdp => {
            tracing::info!(%peer, %client, %method, %path, status, ms, "demo idp request");
        }
        Answerer::Component => {
            tracing::info!(%peer, %client, %method, %path, status, ms, "request")
        }
    }
    resp
}

/// A request for the component or the demo identity provider, through the checks that
/// [`admission`] draws: the API key, the caps, the body's deadline, an instance's slot.
async fn admitted(
    shared: &Shared,
    req: hyper::Request<hyper::body::Incoming>,
    path: &str,
    client: IpAddr,
) -> (Answerer, hyper::Response<HyperOutgoingBody>) {
    let demo = shared.demo.as_ref().filter(|_| crate::demo_idp::owns(path));
    let authenticated = if demo.is_none() && path.starts_with("/v1/") {
        match shared.api_key.check(req.headers()) {
            Key::Right => true,
            Key::Wrong => return (Answerer::Refused, admission::unauthorized()),
            Key::NotConfigured => false,
        }
    } else {
        false
    };
    let refuse = |refusal: Refusal| {
        shared.metrics.refused(refusal);
        (
            Answerer::Refused,
            admission::refused(refusal, &shared.limits),
        )
    };
    let held = match shared.admission.admit(client, authenticated) {
        Ok(held) => held,
        Err(refusal) => return refuse(refusal),
    };
    let (parts, body) = req.into_parts();
    let body = match admission::read_body(body, shared.limits.body_timeout).await {
        Ok(body) => body,
        Err(refusal) => return refuse(refusal),
    };
    let mut req = hyper::Request::from_parts(parts, Full::new(body));
    if let Some(demo) = demo {
        let page = demo.handle(req).await;
        return (
            Answerer::DemoIdp,
            page.map(|body| body.map_err(|never| match never {}).boxed_unsync()),
        );
    }
    set_client_ip(&mut req, client);
    let slot = match shared.admission.instance_slot().await {
        Ok(slot) => slot,
        Err(refusal) => return refuse(refusal),
    };
    let instance = shared.metrics.instance();
    let answer = match shared.runtime.handle(&shared.backends, req).await {
        Ok(resp) => {
            // The whole answer, read while the instance writes it: small and bounded.
            let (parts, body) = resp.into_parts();
            match Limited::new(body, MAX_ANSWER).collect().await {
                Ok(whole) => Ok((parts, whole.to_bytes())),
                Err(e) => {
                    tracing::error!(%client, path, error = %e, max_bytes = MAX_ANSWER,
                        "the component's answer could not be read whole");
                    Err(host_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        Bytes::new(),
                    ))
                }
            }
        }
        Err(e) => {
            // A trap is a bug in the component; the client gets a bare 500, the log the cause.
            tracing::error!(%client, path, error = %format!("{e:#}"), "the component failed");
            Err(host_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                Bytes::new(),
            ))
        }
    };
    // The answer is in memory: the instance's slot goes back now, before a byte is written, so
    // that a client that reads slowly or never holds none of them.
    drop((instance, slot));
    let resp = match answer {
        Ok((parts, bytes)) => {
            // The console's audit page and exports, filled in by the host, which can read its
            // trail (the query header never leaves); the admission is held while it reads.
            let (parts, bytes) = shared.audit_view.complete(parts, bytes).await;
            hyper::Response::from_parts(parts, whole_body(bytes))
        }
        Err(resp) => resp,
    };
    drop(held);
    (Answerer::Component, resp)
}

/// `GET /metrics`: the exposition.
fn metrics_page(metrics: &Metrics, method: &Method) -> hyper::Response<HyperOutgoingBody> {
    if let Some(refused) = only_get(method) {
        return refused;
    }
    match metrics.encode() {
        Ok(text) => host_page(StatusCode::OK, Some(metrics::CONTENT_TYPE), text),
        Err(e) => {
            tracing::error!(error = %e, "the metrics could not be encoded");
            host_page(StatusCode::INTERNAL_SERVER_ERROR, None, Bytes::new())
        }
    }
}

/// `GET /readyz`: 200 or 503, with what is down.
async fn readyz_page(probes: &Probes, method: &Method) -> hyper::Response<HyperOutgoingBody> {
    if let Some(refused) = only_get(method) {
        return refused;
    }
    let readiness = probes.check().await;
    host_page(
        readiness.status(),
        Some("application/json"),
        readiness.body(),
    )
}

/// The host's pages answer `GET` and `HEAD` only; anything else gets the API's 405.
fn only_get(method: &Method) -> Option<hyper::Response<HyperOutgoingBody>> {
    if *method == Method::GET || *method == Method::HEAD {
        return None;
    }
    let body = serde_json::json!({
        "error": { "kind": "method-not-allowed", "message": "use GET" }
    });
    let mut resp = host_page(
        StatusCode::METHOD_NOT_ALLOWED,
        Some("application/json"),
        body.to_string(),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(resp)
}

/// An answer held whole in memory, as hyper sends it.
fn whole_body(bytes: Bytes) -> HyperOutgoingBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An answer of the host's own, never cached.
fn host_page(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> hyper::Response<HyperOutgoingBody> {
    let mut resp = hyper::Response::new(whole_body(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    resp
}

/// Binds `addr`.
///
/// # Errors
/// The address is in use or not permitted.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_forged_client_ip_is_replaced_by_the_peer() {
        let mut req = hyper::Request::builder()
            .uri("/v1/login/begin")
            .header(CLIENT_IP_HEADER, "203.0.113.7")
            .header("X-MFA-Client-IP", "198.51.100.1")
            .header("x-forwarded-for", "192.0.2.1")
            .body(())
            .unwrap();
        set_client_ip(&mut req, "127.0.0.1".parse().unwrap());
        let values: Vec<&HeaderValue> = req.headers().get_all(CLIENT_IP_HEADER).iter().collect();
        assert_eq!(values, [&HeaderValue::from_static("127.0.0.1")]);
        // Other headers pass untouched: the component decides what they mean.
        assert_eq!(req.headers()["x-forwarded-for"], "192.0.2.1");
    }

    #[test]
    fn the_client_ip_is_set_without_a_port_and_ipv4_mapped_addresses_are_unwrapped() {
        let mut req = hyper::Request::builder().body(()).unwrap();
        set_client_ip(&mut req, "2001:db8::1".parse().unwrap());
        assert_eq!(req.headers()[CLIENT_IP_HEADER], "2001:db8::1");
        set_client_ip(&mut req, "::ffff:192.0.2.9".parse().unwrap());
        assert_eq!(req.headers()[CLIENT_IP_HEADER], "192.0.2.9");
        assert_eq!(req.headers().get_all(CLIENT_IP_HEADER).iter().count(), 1);
    }
}

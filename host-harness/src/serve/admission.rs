//! What `serve` lets in, and for how long it waits: the budgets that keep slow or many clients from
//! taking the component's instances (a fixed pool) away from everyone else.
//!
//! Per request, in this order (the host decides nothing about MFA: it routes, checks the API key
//! where the component would, bounds resources, and passes the client's address):
//!
//! ```text
//!   connection ──(cap: --max-connections; the accept loop waits, the kernel's backlog holds the rest)
//!     head ──────(deadline: --header-timeout, hyper's; past it the connection is closed)
//!     route ─────(/metrics, /readyz: answered by the host, no budget taken)
//!     /v1/ key ──(wrong or missing: the component's own 401, answered by the host, nothing read)
//!     admit ─────(--max-in-flight overall; --max-in-flight-per-client unless the key was right)
//!                 full: 503 + Retry-After, connection closed
//!     body ──────(deadline: --body-timeout; size: the component's 64 KiB + 1 byte, so that it
//!                 still answers its own 413) past the deadline: 408, connection closed
//!     instance ──(one of the pool's 256 slots, waited for at most INSTANCE_WAIT; else 503)
//!     component ─(the request, whole; its answer read whole, at most MAX_ANSWER, else 500)
//!                 the slot and the admission go back once the answer is in memory, before it is sent
//!     write ─────(deadline: --write-timeout without progress; past it the connection is closed)
//! ```
//!
//! Facilities: hyper's `header_read_timeout` (with `hyper_util`'s `TokioTimer`) for heads; tokio's
//! `Semaphore::try_acquire_owned` for the caps (an owned permit is given back on drop, however the
//! request ends) and `tokio::time::timeout` for the body and the
//! wait for a slot. `tower`'s `ConcurrencyLimit` waits instead of refusing, its `LoadShed` refuses
//! without saying when to come back, and neither has a per-client key; the few lines here do
//! exactly what is documented, without adding tower's stack to the host.
//!
//! The per-client cap keys IPv4 clients by address and IPv6 clients by their /64 (one site's
//! prefix: an attacker holding one has 2^64 addresses). API-key callers (an IdP, a load test) come
//! from few addresses by design, so they share only the overall cap.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use mfa_step_core::kernel::secret::api_key_matches;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use zeroize::Zeroizing;

use super::metrics::{Metrics, Refusal};

/// The component's largest request body (`MAX_BODY` in `guest/src/http.rs`). The host reads one
/// byte more, so that an oversized body still reaches the component, which answers its own 413.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a request whose body has arrived may wait for a component instance.
pub const INSTANCE_WAIT: Duration = Duration::from_secs(5);
/// What `Retry-After` says when the server is full.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// `--max-connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// `--max-in-flight` by default: 1024 bodies of at most 64 KiB are 64 MiB at worst.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// `--max-in-flight-per-client` by default: far above what one person's browser sends at once.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CLIENT: usize = 32;
/// `--header-timeout` by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `--body-timeout` by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// `--write-timeout` by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The budgets of one server. Each is a `serve` flag (see README, "Running `serve`").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at once; past it the accept loop waits (`--max-connections`).
    pub max_connections: usize,
    /// Requests admitted at once, from their head until their answer is ready to send
    /// (`--max-in-flight`).
    pub max_in_flight: usize,
    /// Of those, from one client address (IPv6: one /64) on routes without the API key
    /// (`--max-in-flight-per-client`).
    pub max_in_flight_per_client: usize,
    /// Time for a request's head, counted from the connection's start or the previous answer: an
    /// idle keep-alive connection is closed after it too (`--header-timeout`).
    pub header_timeout: Duration,
    /// Time for a request's whole body, counted from its head (`--body-timeout`).
    pub body_timeout: Duration,
    /// Time a write to the client may make no progress; past it the connection is closed
    /// (`--write-timeout`).
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_client: DEFAULT_MAX_IN_FLIGHT_PER_CLIENT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// The in-flight caps of one server.
pub(crate) struct Admission {
    overall: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    per_client_limit: usize,
    instances: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// One admitted request; dropping it gives its places back.
pub(crate) struct Admitted {
    _overall: OwnedSemaphorePermit,
    client: Option<(Arc<Admission>, IpAddr)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((admission, key)) = self.client.take() {
            let mut held = admission
                .per_client
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = held.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    held.remove(&key);
                }
            }
        }
        // The overall permit goes back as the field drops.
    }
}

impl Admission {
    pub(crate) fn new(limits: &Limits, instance_capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            overall: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            per_client: Mutex::new(HashMap::new()),
            per_client_limit: limits.max_in_flight_per_client.max(1),
            instances: Arc::new(Semaphore::new(instance_capacity.max(1))),
            metrics,
        }
    }

    /// Admits a request from `client`, counted against the per-client cap unless `authenticated`.
    pub(crate) fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        authenticated: bool,
    ) -> Result<(Admitted, super::metrics::InFlight), Refusal> {
        let overall = self
            .overall
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)?;
        let client = if authenticated {
            None
        } else {
            let key = client_key(client);
            let mut held = self
                .per_client
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = held.entry(key).or_insert(0);
            if *count >= self.per_client_limit {
                return Err(Refusal::BusyClient);
            }
            *count += 1;
            Some((self.clone(), key))
        };
        Ok((
            Admitted {
                _overall: overall,
                client,
            },
            self.metrics.in_flight(),
        ))
    }

    /// A component instance's slot, waited for at most [`INSTANCE_WAIT`].
    pub(crate) async fn instance_slot(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        match tokio::time::timeout(INSTANCE_WAIT, self.instances.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Closed never happens (the semaphore is never closed); either way there is no slot.
            Ok(Err(_)) | Err(_) => Err(Refusal::BusyInstances),
        }
    }
}

/// The per-client key: an IPv4 address, or an IPv6 address's /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The outcome of the host's API-key check on a `/v1/` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// The key is right: the caller shares the overall cap only.
    Right,
    /// Missing or wrong: answered with the component's own 401, nothing else done.
    Wrong,
    /// No key is configured: the component answers (500 `misconfigured`); the caller counts as
    /// unauthenticated.
    NotConfigured,
}

/// The API key as the component has it (`api_key` in its config).
pub(crate) struct ApiKey(Option<Zeroizing<String>>);

impl ApiKey {
    pub(crate) fn new(configured: Option<String>) -> Self {
        Self(configured.filter(|k| !k.is_empty()).map(Zeroizing::new))
    }

    /// The component's check (`authorize` in `guest/src/http.rs`), step for step: exactly one
    /// `Authorization` header, UTF-8, `Bearer ` and the key, compared in constant time.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Key {
        let Some(configured) = &self.0 else {
            return Key::NotConfigured;
        };
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (Some(one), None) => std::str::from_utf8(one.as_bytes())
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or(""),
            _ => "",
        };
        if api_key_matches(presented, configured) {
            Key::Right
        } else {
            Key::Wrong
        }
    }
}

/// The component's 401 for a missing or wrong key, byte for byte (`Reply::problem` and `respond`
/// in `guest/src/http.rs`; `tests::the_hosts_401_is_the_components` compares them).
pub(crate) fn unauthorized() -> hyper::Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "error": {
        "kind": "unauthorized",
        "message": "present the API key as `Authorization: Bearer <api_key>`",
        "field": null,
        "retry_after_seconds": null,
    }});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let length = HeaderValue::from(body.len());
    let mut resp = super::host_page(
        StatusCode::UNAUTHORIZED,
        Some("application/json"),
        Bytes::from(body),
    );
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, length);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A refusal of the host's: a JSON error in the API's shape, on a connection that then closes.
pub(crate) fn refused(refusal: Refusal, limits: &Limits) -> hyper::Response<HyperOutgoingBody> {
    let (status, kind, message, retry) = match refusal {
        Refusal::Busy | Refusal::BusyClient | Refusal::BusyInstances => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the server is busy; retry in {RETRY_AFTER_SECONDS} s"),
            Some(RETRY_AFTER_SECONDS),
        ),
        Refusal::BodyTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                limits.body_timeout.as_secs_f64()
            ),
            None,
        ),
        // Neither is answered (the connection is closed); the text is for completeness.
        Refusal::WriteTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the answer was not read in time".to_owned(),
            None,
        ),
        Refusal::HeaderTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request head did not arrive in time".to_owned(),
            None,
        ),
        Refusal::Unreadable => (
            StatusCode::BAD_REQUEST,
            "invalid-input",
            "the request body could not be read".to_owned(),
            None,
        ),
    };
    let body = serde_json::json!({ "error": {
        "kind": kind, "message": message, "field": null, "retry_after_seconds": retry,
    }});
    let mut resp = super::host_page(
        status,
        Some("application/json"),
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    );
    let headers = resp.headers_mut();
    if let Some(seconds) = retry {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    // The body may be unread: this connection cannot carry another request.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Reads `body` whole within `deadline`, keeping at most `MAX_BODY + 1` bytes (the rest is not
/// read: the component refuses such a body whatever follows).
pub(crate) async fn read_body<B>(body: B, deadline: Duration) -> Result<Bytes, Refusal>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let read = async move {
        let mut body = body;
        let mut bytes = BytesMut::new();
        while bytes.len() <= MAX_BODY {
            match body.frame().await {
                None => break,
                Some(Err(_)) => return Err(Refusal::Unreadable),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = (MAX_BODY + 1).saturating_sub(bytes.len());
                        bytes.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
        Ok(bytes.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(Refusal::BodyTimeout))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use http_body_util::{BodyExt as _, Full};

    use super::*;
    use crate::runtime::{Runtime, World};
    use crate::{Backends, Clock, Config};

    fn admission(overall: usize, per_client: usize) -> Arc<Admission> {
        let limits = Limits {
            max_in_flight: overall,
            max_in_flight_per_client: per_client,
            ..Limits::default()
        };
        Arc::new(Admission::new(&limits, 2, Arc::new(Metrics::new())))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_per_client_cap_counts_unauthenticated_requests_by_address_and_ipv6_by_its_64() {
        let a = admission(10, 2);
        let one = a.admit(ip("192.0.2.1"), false).unwrap();
        let two = a.admit(ip("::ffff:192.0.2.1"), false).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.1"), false).err(),
            Some(Refusal::BusyClient)
        );
        // Another address, and a caller with the key, still get in.
        let other = a.admit(ip("192.0.2.2"), false).unwrap();
        let keyed = a.admit(ip("192.0.2.1"), true).unwrap();
        // One /64 is one client.
        let v6 = a.admit(ip("2001:db8:1:2::1"), false).unwrap();
        let v6b = a.admit(ip("2001:db8:1:2:ffff::9"), false).unwrap();
        assert_eq!(
            a.admit(ip("2001:db8:1:2::3"), false).err(),
            Some(Refusal::BusyClient)
        );
        assert!(a.admit(ip("2001:db8:1:3::1"), false).is_ok());
        drop(one);
        assert!(a.admit(ip("192.0.2.1"), false).is_ok());
        drop((two, other, keyed, v6, v6b));
        // Nothing is kept for an address once its requests are done.
        assert!(a.per_client.lock().unwrap().is_empty());
    }

    #[test]
    fn the_overall_cap_holds_for_everyone_and_comes_back() {
        let a = admission(2, 5);
        let one = a.admit(ip("192.0.2.1"), true).unwrap();
        let _two = a.admit(ip("192.0.2.2"), false).unwrap();
        assert_eq!(a.admit(ip("192.0.2.3"), true).err(), Some(Refusal::Busy));
        assert_eq!(a.admit(ip("192.0.2.4"), false).err(), Some(Refusal::Busy));
        drop(one);
        assert!(a.admit(ip("192.0.2.3"), true).is_ok());
    }

    #[test]
    fn refusals_say_when_to_retry_and_close_the_connection() {
        let busy = refused(Refusal::BusyClient, &Limits::default());
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        assert_eq!(busy.headers()[header::CONNECTION], "close");
        let slow = refused(Refusal::BodyTimeout, &Limits::default());
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(slow.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(slow.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_body_is_read_whole_capped_one_byte_past_the_limit_and_within_its_deadline() {
        let small = read_body(Full::new(Bytes::from_static(b"{}")), Duration::from_secs(1));
        assert_eq!(small.await.unwrap(), Bytes::from_static(b"{}"));
        let big = Full::new(Bytes::from(vec![b'x'; 3 * MAX_BODY]));
        assert_eq!(
            read_body(big, Duration::from_secs(1)).await.unwrap().len(),
            MAX_BODY + 1
        );
        // One byte, then nothing: the deadline answers.
        let started = std::time::Instant::now();
        assert_eq!(
            read_body(
                Stalled(Some(Bytes::from_static(b"{"))),
                Duration::from_millis(100)
            )
            .await,
            Err(Refusal::BodyTimeout)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A body that sends its one chunk, then nothing, ever.
    struct Stalled(Option<Bytes>);

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(chunk) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
                None => std::task::Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn the_hosts_401_is_the_components() {
        let runtime = Arc::new(Runtime::new(World::HttpApp).unwrap());
        let backends = Backends {
            store: Arc::new(crate::backends::MemoryStore::new()),
            mailer: Arc::new(crate::backends::MemoryMailer::new()),
            audit: Arc::new(crate::backends::MemoryAuditSink::new()),
            config: Config::new([
                ("hmac_key", "00".repeat(32)),
                ("api_key", "right-key".into()),
            ]),
            clock: Clock::System,
            offload: crate::host::Offload::NONE,
        };
        let key = ApiKey::new(backends.config.get("api_key"));
        let cases: [&[&str]; 6] = [
            &[],
            &["Bearer wrong-key"],
            &["bearer right-key"],
            &["Bearer right-key", "Bearer right-key"],
            &["Bearer  right-key"],
            &["Basic cmlnaHQta2V5"],
        ];
        for auth in cases {
            let mut req = hyper::Request::builder()
                .method("POST")
                .uri("http://localhost/v1/login/begin");
            for value in auth {
                req = req.header(header::AUTHORIZATION, *value);
            }
            let req = req.body(Full::new(Bytes::from_static(b"{}"))).unwrap();
            assert_eq!(key.check(req.headers()), Key::Wrong, "{auth:?}");
            let theirs = runtime.handle(&backends, req).await.unwrap();
            let ours = unauthorized();
            assert_eq!(ours.status(), theirs.status(), "{auth:?}");
            assert_eq!(ours.headers(), theirs.headers(), "{auth:?}");
            let theirs = theirs.into_body().collect().await.unwrap().to_bytes();
            let ours = ours.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(ours, theirs, "{auth:?}");
        }
        let mut right = HeaderMap::new();
        right.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer right-key"),
        );
        assert_eq!(key.check(&right), Key::Right);
        assert_eq!(
            ApiKey::new(Some(String::new())).check(&right),
            Key::NotConfigured
        );
        assert_eq!(ApiKey::new(None).check(&right), Key::NotConfigured);
    }
}

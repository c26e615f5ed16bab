//! `mfa-step serve`: an HTTP/1.1 server whose every request is handled by a fresh instance of the
//! component's `wasi:http/incoming-handler` export. The host decides nothing; it only logs each
//! request's method, path, status and duration (never a header, a query or a body: bodies carry
//! codes, headers the API key, queries the prompt's signed requests and results).
//!
//! The host tells the component who is calling: it removes any `x-mfa-client-ip` header the client
//! sent and sets its own from the TCP peer's address (the IP alone, no port), so a client cannot
//! pose as another address. The component trusts that header (its `client_ip_header` setting).
//!
//! With `--demo`, the paths `/demo` and `/demo/…` belong to the demo identity provider
//! ([`crate::demo_idp`]), which the host runs itself: it is the other party of the hosted prompt, not
//! part of the component. Every other path goes to the component.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use http_body_util::BodyExt as _;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use wasmtime_wasi_http::io::TokioIo;

use crate::demo_idp::DemoIdp;
use crate::host::Backends;
use crate::runtime::Runtime;

/// The header that carries the client's IP to the component (the `client_ip_header` default).
pub const CLIENT_IP_HEADER: &str = "x-mfa-client-ip";

/// Serves the component until `shutdown` resolves.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve(
    runtime: Arc<Runtime>,
    backends: Backends,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    serve_with(runtime, backends, listener, None, shutdown).await
}

/// Serves the component, and with `demo` the demo identity provider under `/demo/`, until
/// `shutdown` resolves.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve_with(
    runtime: Arc<Runtime>,
    backends: Backends,
    listener: TcpListener,
    demo: Option<Arc<DemoIdp>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let addr = listener.local_addr().context("read the bound address")?;
    tracing::info!(%addr, "serving the mfa-step component");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let runtime = runtime.clone();
        let backends = backends.clone();
        let demo = demo.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let runtime = runtime.clone();
                let backends = backends.clone();
                let demo = demo.clone();
                async move { handle(runtime, backends, demo, req, peer).await }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
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
    runtime: Arc<Runtime>,
    backends: Backends,
    demo: Option<Arc<DemoIdp>>,
    mut req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Result<hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Some(demo) = demo.filter(|_| crate::demo_idp::owns(&path)) {
        let resp = demo.handle(req).await;
        tracing::info!(%peer, %method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "demo idp request");
        return Ok(resp.map(|body| body.map_err(|never| match never {}).boxed_unsync()));
    }
    set_client_ip(&mut req, peer.ip());
    match runtime.handle(&backends, req).await {
        Ok(resp) => {
            tracing::info!(%peer, %method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
            Ok(resp)
        }
        Err(e) => {
            // A trap is a bug in the component; the client gets a bare 500 and the log gets the cause.
            tracing::error!(%peer, %method, %path, error = %format!("{e:#}"), "the component failed");
            Err(e.into())
        }
    }
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

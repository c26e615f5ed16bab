//! `mfa-step serve`: an HTTP/1.1 server whose every request is handled by a fresh instance of the
//! component's `wasi:http/incoming-handler` export. The host routes nothing and decides nothing; it
//! only logs each request's method, path, status and duration (never a header or a body: bodies carry
//! codes and headers carry the API key).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use wasmtime_wasi_http::io::TokioIo;

use crate::host::Backends;
use crate::runtime::Runtime;

/// Serves until ctrl-c (or until `shutdown` resolves).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    runtime: Arc<Runtime>,
    backends: Backends,
    listener: TcpListener,
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
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let runtime = runtime.clone();
                let backends = backends.clone();
                async move { handle(runtime, backends, req, peer).await }
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

async fn handle(
    runtime: Arc<Runtime>,
    backends: Backends,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Result<hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
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

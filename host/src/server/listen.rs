//! `--listen ADDR`: `/healthz`, `/readyz` and `/metrics` for kubelet probes and
//! Prometheus, answered on the I/O thread so a scrape never waits for the event loop
//! and a busy loop never waits for a scrape. hyper is the HTTP server tokio and reqwest
//! are built on; three GET routes need nothing above it.

use crate::server::metrics::Metrics;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The event loop counts as alive while it went round within this long (it wakes at
/// least every poll interval, and one rule call is bounded far below this).
pub(crate) const ALIVE_WITHIN: Duration = Duration::from_secs(10);

/// What the probes report: the event loop's last turn, and whether start-up finished.
pub(crate) struct Status {
    started: Instant,
    /// Milliseconds after `started` of the loop's last turn.
    last_turn_ms: AtomicU64,
    ready: AtomicBool,
}

impl Status {
    pub(crate) fn new() -> Status {
        Status {
            started: Instant::now(),
            last_turn_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        }
    }

    /// The event loop went round.
    pub(crate) fn turn(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_turn_ms.store(ms, Ordering::Relaxed);
    }

    /// Probes attached, the start-up sweep done.
    pub(crate) fn set_ready(&self) {
        self.turn();
        self.ready.store(true, Ordering::Relaxed);
    }

    fn alive(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_turn_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) <= ALIVE_WITHIN.as_millis() as u64
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.alive()
    }
}

/// The thread that runs the listener and the webhook sinks, with its own runtime, so
/// neither ever runs on (or blocks) the event loop.
pub(crate) struct IoThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoThread {
    pub(crate) fn start() -> Result<IoThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rulehost-io".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .context("starting the I/O thread")?;
        Ok(IoThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `addr` now (so a taken port is a start-up error naming it) and serves the
/// endpoints on `io`. Returns the bound address (port 0 picks one).
pub(crate) fn serve(
    addr: SocketAddr,
    io: &tokio::runtime::Handle,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (--listen)"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let _guard = io.enter();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    io.spawn(accept(listener, status, metrics));
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");
    Ok(bound)
}

async fn accept(listener: tokio::net::TcpListener, status: Arc<Status>, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(error = %error, "cannot accept a connection on the listen address");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (status, metrics) = (status.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &status, &metrics);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The answer to one request.
fn respond<B>(request: &Request<B>, status: &Status, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/healthz" if status.alive() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "event loop stalled\n"),
        "/readyz" if status.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}

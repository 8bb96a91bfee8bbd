//! `WebServer`: the HTTP/1.1 server WebSocket servers attach to (4D's web server). It serves
//! static files and embedded assets, answers 404 for the rest, and routes WebSocket upgrades by
//! path to the attached [`WebSocketServer`](super::WebSocketServer)s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::termination::Terminating;
use super::upgrade::{self, defaults, Endpoint, Opening};
use super::web_options::Asset;
use super::web_options::WebServerOptions;
use crate::conn::Stream;
use crate::error::{Error, ErrorKind};
use crate::proto::handshake;

/// An HTTP/1.1 server that WebSocket servers attach to; 4D's web server.
///
/// A cheap handle: clones refer to the same server. The server runs until [`stop`] is called,
/// whether or not handles remain.
///
/// [`stop`]: WebServer::stop
///
/// ```no_run
/// # async fn run() -> Result<(), ferrosock::Error> {
/// use ferrosock::{WebServer, WebServerOptions};
/// let web = WebServer::start(WebServerOptions::default().listen("127.0.0.1:0")).await?;
/// println!("listening on {}", web.local_addr());
/// web.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WebServer {
    inner: Arc<WebInner>,
}

pub(crate) struct WebInner {
    local_addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    running: AtomicBool,
    routes: RwLock<Routes>,
    static_dir: Option<ServeDir>,
    assets: HashMap<String, Asset>,
    handshake_timeout: Duration,
    max_request_headers: usize,
    max_request_head_size: usize,
    shutdown_timeout: Duration,
    runtime: tokio::runtime::Handle,
    /// Cancelled by `stop`: stop accepting, finish HTTP requests in flight.
    stopping: CancellationToken,
    /// Cancelled when `stop`'s grace period is over: drop HTTP connections still open.
    forced: CancellationToken,
    http_connections: TaskTracker,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Routes {
    by_path: HashMap<String, Arc<dyn Endpoint>>,
    catch_all: Option<Arc<dyn Endpoint>>,
}

/// Every response body the web server sends.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

impl WebServer {
    /// Binds the listening socket and starts serving. Must be called inside a tokio runtime,
    /// which runs every connection of this server.
    ///
    /// Fails with [`ErrorKind::Io`] if the address cannot be bound (in use, say), and with
    /// [`ErrorKind::Tls`] if the TLS files cannot be read or do not fit together.
    pub async fn start(options: WebServerOptions) -> Result<WebServer, Error> {
        if options.max_request_head_size < MIN_HEAD_SIZE || options.max_request_headers == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "max_request_head_size must be at least {MIN_HEAD_SIZE} bytes and \
                     max_request_headers at least 1"
                ),
            ));
        }
        let tls = match &options.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                &files.cert_chain,
                &files.key,
            )?)),
            None => None,
        };
        let listener = TcpListener::bind(&options.listen).await.map_err(|err| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot listen on {}", options.listen),
                err,
            )
        })?;
        let local_addr = listener.local_addr().map_err(|err| {
            Error::with_source(ErrorKind::Io, "cannot read the listening address", err)
        })?;
        let static_dir = options
            .static_dir
            .as_ref()
            .map(|dir| ServeDir::new(dir).append_index_html_on_directories(true));
        let inner = Arc::new(WebInner {
            local_addr,
            tls,
            running: AtomicBool::new(true),
            routes: RwLock::new(Routes::default()),
            static_dir,
            assets: options.assets,
            handshake_timeout: options.handshake_timeout,
            max_request_headers: options.max_request_headers,
            max_request_head_size: options.max_request_head_size,
            shutdown_timeout: options.shutdown_timeout,
            runtime: tokio::runtime::Handle::current(),
            stopping: CancellationToken::new(),
            forced: CancellationToken::new(),
            http_connections: TaskTracker::new(),
            accept_task: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(inner.clone(), listener));
        *inner.accept_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(%local_addr, "web server started");
        Ok(WebServer { inner })
    }

    /// The address the server listens on (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Whether the server speaks HTTPS (and `wss://`).
    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// Whether the server is running: from `start` until `stop` is called.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Stops the server: stops listening (the port is free when this returns), terminates every
    /// attached WebSocket server with close code 1001 (their `on_terminate` callbacks run),
    /// and lets HTTP requests in flight finish. Whatever is still open after
    /// [`shutdown_timeout`](WebServerOptions::shutdown_timeout) is closed. Calling it again does
    /// nothing.
    pub async fn stop(&self) {
        self.inner.stop().await;
    }

    pub(crate) fn inner(&self) -> &Arc<WebInner> {
        &self.inner
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// Serves one connection over `stream` as if it had been accepted from `remote`: the unit
    /// tests' way in, over in-memory streams on paused time.
    #[cfg(test)]
    pub(crate) fn serve_stream(&self, stream: Stream, remote: SocketAddr) {
        let inner = self.inner.clone();
        let tracker = inner.http_connections.clone();
        tracker.spawn(serve_http(inner, stream, remote));
    }
}

impl fmt::Debug for WebServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebServer")
            .field("local_addr", &self.inner.local_addr)
            .field("tls", &self.is_tls())
            .field("running", &self.is_running())
            .finish()
    }
}

impl WebInner {
    /// Attaches a WebSocket server at `path` (`None`: the catch-all).
    pub(crate) fn register(
        &self,
        path: Option<String>,
        route: Arc<dyn Endpoint>,
    ) -> Result<(), Error> {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock that `stop` takes routes under: none is added after.
        if !self.running.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::NotStarted,
                "the web server is not running",
            ));
        }
        let slot = match &path {
            Some(path) => routes.by_path.get(path),
            None => routes.catch_all.as_ref(),
        };
        if slot.is_some() {
            let what = path
                .as_deref()
                .map_or("the catch-all (no path)".to_owned(), |p| {
                    format!("path {p}")
                });
            return Err(Error::new(
                ErrorKind::PathInUse,
                format!("a WebSocket server already serves {what} on this web server"),
            ));
        }
        match path {
            Some(path) => {
                routes.by_path.insert(path, route);
            }
            None => routes.catch_all = Some(route),
        }
        Ok(())
    }

    /// Detaches `route` from `path`, if it is still the one there.
    pub(crate) fn unregister(&self, path: Option<&str>, route: &Weak<dyn Endpoint>) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let same =
            |other: &Arc<dyn Endpoint>| std::ptr::addr_eq(Arc::as_ptr(other), Weak::as_ptr(route));
        match path {
            Some(path) => {
                if routes.by_path.get(path).is_some_and(same) {
                    routes.by_path.remove(path);
                }
            }
            None => {
                if routes.catch_all.as_ref().is_some_and(same) {
                    routes.catch_all = None;
                }
            }
        }
    }

    fn route(&self, path: &str) -> Option<Arc<dyn Endpoint>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes
            .by_path
            .get(path)
            .or(routes.catch_all.as_ref())
            .cloned()
    }

    async fn stop(self: &Arc<Self>) {
        if !self.running.swap(false, Ordering::AcqRel) {
            return;
        }
        self.stopping.cancel();
        let accept_task = self
            .accept_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = accept_task {
            // The listener is dropped when the loop ends: the port is free after this.
            let _ = task.await;
        }
        // One deadline for everything: WebSocket close handshakes and HTTP requests in flight
        // run side by side (HTTP connections were told to finish when `stopping` fired).
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let routes = std::mem::take(&mut *self.routes.write().unwrap_or_else(|p| p.into_inner()));
        let terminating: Vec<Terminating> = routes
            .by_path
            .into_values()
            .chain(routes.catch_all)
            .map(|route| route.shutdown(self.shutdown_timeout))
            .collect();
        for handle in terminating {
            // Each one forces its stragglers at the deadline, so this wait is bounded.
            handle.await;
        }
        self.http_connections.close();
        if tokio::time::timeout_at(deadline, self.http_connections.wait())
            .await
            .is_err()
        {
            self.forced.cancel();
            self.http_connections.wait().await;
        }
        tracing::info!(local_addr = %self.local_addr, "web server stopped");
    }

    async fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        if handshake::is_upgrade_request(request.headers()) {
            return self.upgrade(request, remote);
        }
        self.serve_file(request).await
    }

    /// Answers an upgrade request with the decision of the endpoint at its path; after a 101,
    /// hands the socket to the endpoint's opening.
    fn upgrade(&self, mut request: http::Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        let Some(endpoint) = self.route(request.uri().path()) else {
            return text_response(StatusCode::NOT_FOUND, "Not Found");
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (parts, _body) = request.into_parts();
        let accept = match upgrade::check(&parts) {
            Ok(accept) => accept,
            Err(bad) => {
                tracing::debug!(%remote, "bad upgrade request: {}", bad.why);
                return with_body(bad.head());
            }
        };
        let (head, opening) = upgrade::response(endpoint.decide(&parts, remote), accept);
        if let Some(opening) = opening {
            self.runtime.spawn(open_upgraded(on_upgrade, opening));
        }
        with_body(head)
    }

    async fn serve_file(&self, request: http::Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        if let Some(dir) = &self.static_dir {
            let Ok(response) = dir.clone().oneshot(request).await;
            if response.status() != StatusCode::NOT_FOUND {
                let mut response = response.map(|body| body.boxed_unsync());
                response.headers_mut().insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                return response;
            }
        }
        match self.assets.get(&path) {
            Some(asset) if method == Method::GET || method == Method::HEAD => {
                let body = if method == Method::HEAD {
                    Bytes::new()
                } else {
                    asset.body.clone()
                };
                let mut response = Response::new(full(body));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, asset.content_type.clone());
                headers.insert(header::CONTENT_LENGTH, asset.body.len().into());
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                response
            }
            _ => text_response(StatusCode::NOT_FOUND, "Not Found"),
        }
    }
}

async fn accept_loop(inner: Arc<WebInner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.stopping.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                // Small frames go out at once; ferrosock batches writes itself.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(%remote, "cannot set TCP_NODELAY: {err}");
                }
                let inner = inner.clone();
                inner.http_connections.clone().spawn(async move {
                    let stream = match &inner.tls {
                        None => Stream::Plain(stream),
                        Some(acceptor) => {
                            let accept = acceptor.accept(stream);
                            match tokio::time::timeout(inner.handshake_timeout, accept).await {
                                Ok(Ok(tls)) => Stream::ServerTls(Box::new(tls)),
                                Ok(Err(err)) => {
                                    tracing::debug!(%remote, "TLS handshake failed: {err}");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%remote, "TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    serve_http(inner, stream, remote).await;
                });
            }
            Err(err) => {
                // Out of file descriptors, most likely: wait a moment rather than spin.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// hyper's smallest read buffer.
const MIN_HEAD_SIZE: usize = 8192;

async fn serve_http(inner: Arc<WebInner>, stream: Stream, remote: SocketAddr) {
    let service_inner = inner.clone();
    let service = hyper::service::service_fn(move |request| {
        let inner = service_inner.clone();
        async move { Ok::<_, Infallible>(inner.handle(request, remote).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(inner.handshake_timeout)
        .max_buf_size(inner.max_request_head_size);
    if inner.max_request_headers != defaults::MAX_REQUEST_HEADERS {
        // hyper keeps its default on the stack; another size costs an allocation per request.
        builder.max_headers(inner.max_request_headers);
    }
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%remote, "HTTP connection ended: {err}");
            }
        }
        _ = inner.stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = inner.forced.cancelled() => {}
            }
        }
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text answer. The text is fixed per status: error pages say nothing about the
/// server's internals.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response head of the upgrade core, with its body: none for a 101, the fixed text of
/// the status for a refusal.
fn with_body(head: http::Response<()>) -> Response<Body> {
    let status = head.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        head.map(|()| Empty::new().map_err(|never| match never {}).boxed_unsync())
    } else {
        head.map(|()| full(Bytes::from_static(upgrade::refusal_text(status).as_bytes())))
    }
}

/// After a 101: waits for hyper to hand the socket over, then runs the connection.
async fn open_upgraded(on_upgrade: hyper::upgrade::OnUpgrade, opening: Box<dyn Opening>) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            return opening.failed(format!(
                "an accepted upgrade did not complete (the 101 could not be sent): {err}"
            ))
        }
    };
    // The web server serves every connection as `TokioIo<Stream>`; taking it back out of
    // hyper's `Upgraded` box removes a dynamic call from every read and write.
    // Taken out before the connection runs: hyper's `read_buf` shares its read buffer, which
    // the connection must not keep alive for its whole life (5 KB per idle connection).
    let (stream, read_buf) = match upgraded.downcast::<TokioIo<Stream>>() {
        Ok(parts) => (parts.io.into_inner(), BytesMut::from(&parts.read_buf[..])),
        Err(_) => {
            return opening
                .failed("an upgraded connection of an unexpected type: closed".to_owned())
        }
    };
    opening.open(stream, read_buf).await;
}

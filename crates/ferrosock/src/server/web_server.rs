//! `WebServer`: the HTTP/1.1 and HTTP/2 server WebSocket servers attach to (4D's web server).
//! It serves static files and embedded assets, answers 404 for the rest, and routes WebSocket
//! upgrades (HTTP/1.1) and extended CONNECTs (HTTP/2, RFC 8441) by path to the attached
//! [`WebSocketServer`](super::WebSocketServer)s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
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
use crate::stats::Refusal;

/// An HTTP/1.1 and HTTP/2 server that WebSocket servers attach to; 4D's web server.
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
    /// `None`: HTTP/1.1 only.
    http2: Option<Http2>,
    runtime: tokio::runtime::Handle,
    /// Cancelled by `stop`: stop accepting, finish HTTP requests in flight.
    stopping: CancellationToken,
    /// Cancelled by `stop` once every WebSocket got its close: HTTP/2 connections send GOAWAY.
    websockets_closed: CancellationToken,
    /// Cancelled when `stop`'s grace period is over: drop HTTP connections still open.
    forced: CancellationToken,
    http_connections: TaskTracker,
    /// The accept loops (one, or one per thread in thread-per-core mode): each drops its
    /// listening socket when it ends.
    accept_loops: TaskTracker,
    /// Cancelled when `stop` is over: the threads of thread-per-core mode end.
    finished: CancellationToken,
}

/// The HTTP/2 settings of [`WebServerOptions`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Http2 {
    pub(super) max_streams: u32,
    pub(super) stream_window: u32,
    pub(super) websockets_per_second: u32,
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
    /// which runs every connection of this server — or, with
    /// [`threads`](WebServerOptions::threads), starts that many threads of the server's own,
    /// each with its own listening socket and runtime.
    ///
    /// Fails with [`ErrorKind::Io`] if the address cannot be bound (in use, say) or a thread
    /// cannot be started, with [`ErrorKind::Tls`] if the TLS files cannot be read or do not fit
    /// together, and with [`ErrorKind::InvalidArgument`] for `threads(0)`.
    pub async fn start(options: WebServerOptions) -> Result<WebServer, Error> {
        if options.threads == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "threads must be at least 1",
            ));
        }
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
                options.http2,
            )?)),
            None => None,
        };
        let cannot_listen = |err| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot listen on {}", options.listen),
                err,
            )
        };
        let mut listeners = match options.threads {
            None => vec![TcpListener::bind(&options.listen)
                .await
                .map_err(cannot_listen)?],
            Some(threads) => bind_shared(&options.listen, threads)
                .await
                .map_err(cannot_listen)?,
        };
        let local_addr = listeners[0].local_addr().map_err(|err| {
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
            http2: options.http2.then_some(Http2 {
                max_streams: options.http2_max_streams.max(1),
                stream_window: options.http2_stream_window.clamp(1 << 14, MAX_WINDOW),
                websockets_per_second: options.http2_websockets_per_second.max(1),
            }),
            runtime: tokio::runtime::Handle::current(),
            stopping: CancellationToken::new(),
            websockets_closed: CancellationToken::new(),
            forced: CancellationToken::new(),
            http_connections: TaskTracker::new(),
            accept_loops: TaskTracker::new(),
            finished: CancellationToken::new(),
        });
        let web = WebServer { inner };
        if options.threads.is_none() {
            let listener = listeners.remove(0);
            let accept = accept_loop(web.inner.clone(), listener);
            tokio::spawn(web.inner.accept_loops.track_future(accept));
        } else {
            for (index, listener) in listeners.into_iter().enumerate() {
                if let Err(err) = spawn_thread(&web.inner, index, listener) {
                    // The threads already started end with the server.
                    web.stop().await;
                    return Err(Error::with_source(
                        ErrorKind::Io,
                        "cannot start the web server's threads",
                        err,
                    ));
                }
            }
        }
        tracing::info!(%local_addr, threads = ?options.threads, "web server started");
        Ok(web)
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
        // Each listener is dropped when its loop ends: the port is free after this.
        self.accept_loops.close();
        self.accept_loops.wait().await;
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
        // Every WebSocket has had its close: HTTP/2 connections may now send GOAWAY.
        self.websockets_closed.cancel();
        self.http_connections.close();
        if tokio::time::timeout_at(deadline, self.http_connections.wait())
            .await
            .is_err()
        {
            self.forced.cancel();
            self.http_connections.wait().await;
        }
        // The threads of thread-per-core mode end; their runtimes drop what is left.
        self.finished.cancel();
        tracing::info!(local_addr = %self.local_addr, "web server stopped");
    }

    /// Answers one HTTP/1.1 request: an upgrade, or a file.
    async fn handle(
        self: Arc<Self>,
        mut request: http::Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        if !handshake::is_upgrade_request(request.headers()) {
            return self.serve_file(request).await;
        }
        let on_upgrade = hyper::upgrade::on(&mut request);
        let (parts, _body) = request.into_parts();
        let (response, opening) = self.websocket(&parts, remote, None).await;
        if let Some(opening) = opening {
            // Once hyper sent the 101, it hands the socket over. On this thread: in
            // thread-per-core mode the WebSocket stays where its HTTP connection was accepted.
            tokio::spawn(upgrade::open_upgraded(on_upgrade, opening));
        }
        response
    }

    /// Answers a WebSocket handshake — an HTTP/1.1 upgrade, or an HTTP/2 CONNECT — with the
    /// decision of the endpoint at its path: the response, and the opening to run once it is
    /// sent. `opens` limits the WebSockets an HTTP/2 connection opens.
    pub(super) async fn websocket(
        &self,
        parts: &http::request::Parts,
        remote: SocketAddr,
        opens: Option<&Mutex<OpenRate>>,
    ) -> (Response<Body>, Option<Box<dyn Opening>>) {
        // Checked before routing: an HTTP/2 CONNECT without `:protocol` has no path.
        let mut checked = match upgrade::check(parts) {
            Ok(checked) => checked,
            Err(bad) => {
                tracing::debug!(%remote, "bad upgrade request: {}", bad.why);
                if let Some(endpoint) = self.route(parts.uri.path()) {
                    endpoint.refused(Refusal::BadRequest);
                }
                return (with_body(bad.head()), None);
            }
        };
        let Some(endpoint) = self.route(parts.uri.path()) else {
            return (text_response(StatusCode::NOT_FOUND, "Not Found"), None);
        };
        if let Some(opens) = opens {
            let allowed = opens.lock().unwrap_or_else(|p| p.into_inner()).take();
            if !allowed {
                tracing::debug!(%remote, "HTTP/2 connection opening WebSockets too fast: 429");
                endpoint.refused(Refusal::RateLimited);
                let refusal = upgrade::refusal(StatusCode::TOO_MANY_REQUESTS);
                return (with_body(refusal), None);
            }
        }
        let offered = std::mem::take(&mut checked.offered);
        let decision = upgrade::decide(endpoint, parts, Some(remote), offered).await;
        let (head, opening) = upgrade::response(decision, checked);
        (with_body(head), opening)
    }

    /// The largest request head accepted, in bytes.
    pub(super) fn max_request_head_size(&self) -> usize {
        self.max_request_head_size
    }

    /// How long a request (and a TLS or HTTP/2 handshake) may take to arrive.
    pub(super) fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Cancelled once every WebSocket had its close, as the server stops.
    pub(super) fn websockets_closed(&self) -> &CancellationToken {
        &self.websockets_closed
    }

    /// Cancelled when the stop's grace period is over.
    pub(super) fn forced(&self) -> &CancellationToken {
        &self.forced
    }

    /// A file of the static folder or an embedded asset, or 404.
    pub(super) async fn serve_file<B>(&self, request: http::Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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

/// Listening sockets for thread-per-core mode: `threads` sockets bound to the same address
/// with `SO_REUSEPORT`, so that the kernel spreads incoming connections over them. The first
/// one picks the port when `listen` asks for port 0; the others bind the port it got.
async fn bind_shared(listen: &str, threads: usize) -> io::Result<Vec<TcpListener>> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(listen).await? {
        match bind_reuseport(addr) {
            Ok(first) => {
                let addr = first.local_addr()?;
                let mut listeners = vec![first];
                for _ in 1..threads {
                    listeners.push(bind_reuseport(addr)?);
                }
                return Ok(listeners);
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// One listening socket with `SO_REUSEPORT` (and `SO_REUSEADDR`, as tokio's `bind` sets it).
fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The accept queue of each listening socket (tokio's `TcpListener::bind` uses the same).
const LISTEN_BACKLOG: u32 = 1024;

/// Starts thread `index` of thread-per-core mode: a current-thread runtime serving what
/// `listener` accepts, until the server is stopped. The listener moves to the thread's own
/// runtime; the thread is counted among the accept loops from here, so that `stop` waits for
/// it even if it has not started running yet.
fn spawn_thread(inner: &Arc<WebInner>, index: usize, listener: TcpListener) -> io::Result<()> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let accepting = inner.accept_loops.token();
    let inner = inner.clone();
    std::thread::Builder::new()
        .name(format!("ferrosock-web-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(inner.clone(), listener).await,
                    Err(err) => tracing::error!("web server thread {index} cannot listen: {err}"),
                }
                drop(accepting);
                // Connections accepted here go on running here until the server has stopped.
                inner.finished.cancelled().await;
            });
        })?;
    Ok(())
}

/// hyper's smallest read buffer.
const MIN_HEAD_SIZE: usize = 8192;

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
pub(super) const MAX_WINDOW: u32 = (1 << 31) - 1;

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one HTTP connection, in HTTP/2 if the client asked for it (ALPN over TLS, the
/// preface in plain text) and the server speaks it, in HTTP/1.1 otherwise.
async fn serve_http(inner: Arc<WebInner>, stream: Stream, remote: SocketAddr) {
    let http2 = match (&inner.http2, &stream) {
        (None, _) => None,
        (Some(http2), Stream::ServerTls(tls)) => {
            let alpn = tls.get_ref().1.alpn_protocol();
            (alpn == Some(crate::tls::ALPN_H2)).then_some(*http2)
        }
        (Some(http2), Stream::Plain(tcp)) => {
            let preface = tokio::time::timeout(inner.handshake_timeout, starts_with_preface(tcp));
            let preface = tokio::select! {
                preface = preface => matches!(preface, Ok(true)),
                _ = inner.stopping.cancelled() => return,
            };
            preface.then_some(*http2)
        }
        (Some(_), _) => None,
    };
    match http2 {
        Some(settings) => super::web_http2::serve(inner, stream, remote, settings).await,
        None => serve_http1(inner, stream, remote).await,
    }
}

/// Whether the client's first bytes are the HTTP/2 preface, peeked at (not consumed). Its
/// first three bytes decide: no HTTP/1.1 request starts with `PRI` (RFC 9113 §3.4 reserves
/// the method), and h2 checks the rest of the preface.
async fn starts_with_preface(tcp: &tokio::net::TcpStream) -> bool {
    const DECIDES: usize = 3;
    let mut buf = [0; DECIDES];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 || buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == DECIDES {
            return true;
        }
        // One or two bytes, `P` or `PR`: the start of the preface or of a POST, PUT or PATCH
        // sent a byte at a time. `peek` returns at once while they wait: look again later.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The WebSockets an HTTP/2 connection may still open: a token bucket of
/// `http2_max_streams` tokens, refilled at `http2_websockets_per_second`.
#[derive(Debug)]
pub(super) struct OpenRate {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: tokio::time::Instant,
}

impl OpenRate {
    pub(super) fn new(settings: &Http2) -> OpenRate {
        let burst = f64::from(settings.max_streams);
        OpenRate {
            tokens: burst,
            burst,
            per_second: f64::from(settings.websockets_per_second),
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Serves an HTTP/1.1 connection, where a WebSocket takes the connection over.
async fn serve_http1(inner: Arc<WebInner>, stream: Stream, remote: SocketAddr) {
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
    if upgrade::is_accepted(&head) {
        head.map(|()| Empty::new().map_err(|never| match never {}).boxed_unsync())
    } else {
        head.map(|()| full(Bytes::from_static(upgrade::refusal_text(status).as_bytes())))
    }
}

//! Doors: a [`WebSocketServer`] behind another Rust web stack — an axum route, a tower
//! service, a hyper server — instead of ferrosock's own [`WebServer`](crate::WebServer).
//!
//! Every door goes through the same upgrade core as the web server: the request is checked
//! (an HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT where the server enables it, RFC 8441),
//! `on_connection` decides, permessage-deflate and the subprotocol are agreed, and once hyper
//! hands the connection over it runs with the server's callbacks, limits, topics and broker.
//! A server for doors is made with [`WebSocketServer::detached`]; its `path` is not used
//! (routing is the router's).
//!
//! - [`WebSocketServer::upgrade`]: the call under the others. It takes an `http::Request`
//!   whose extensions hold hyper's `OnUpgrade` (every request hyper serves has it) and
//!   returns the response to send.
//! - [`WebSocketServer::service`]: a [`tower::Service`] for hyper-util's servers, axum's
//!   `route_service`, or any tower stack (layers around the WebSocket route see the
//!   handshake request, and its answer).
//! - With the `axum` feature, [`WebSocketServer::route`] gives the `MethodRouter` for an
//!   axum `Router`, and axum's `ConnectInfo<SocketAddr>` tells the client's address.
//!
//! # The client's address
//! A door does not see the socket: [`Request::remote_address`](crate::Request::remote_address)
//! comes from the request's extensions — a [`RemoteAddr`] the application inserts (a tower
//! layer, or the accept loop of a hyper server), or axum's `ConnectInfo<SocketAddr>` (with the
//! `axum` feature, when the app is served with `into_make_service_with_connect_info`). Without
//! either it is empty.
//!
//! # Graceful shutdown
//! A server behind a door is not stopped by its HTTP server: axum's and hyper-util's graceful
//! shutdown wait for HTTP requests, not for the WebSockets they upgraded (axum#3003). Call
//! [`WebSocketServer::shutdown`] from the shutdown signal and await it: every WebSocket gets
//! a close frame with 1001, and it resolves once they have all ended. See
//! `examples/axum.rs` for the recipe with SIGTERM.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

use super::termination::Terminating;
use super::upgrade;
use super::{ServerHandler, WebSocketServer};
use crate::proto::CloseCode;
use crate::stats::Refusal;

/// The body of every response a door gives: empty for an accepted WebSocket, a short fixed
/// text for a refusal.
pub type Body = Full<Bytes>;

/// The client's address, inserted in a request's extensions for a door to find
/// (see [the module](self)): a door cannot see the socket.
///
/// ```no_run
/// # async fn run(listener: tokio::net::TcpListener, service: ferrosock::door::WebSocketService<impl ferrosock::ServerHandler>) -> std::io::Result<()> {
/// use ferrosock::door::RemoteAddr;
/// use tower::ServiceBuilder;
/// let (tcp, remote) = listener.accept().await?;
/// // Every request of this connection says where it came from.
/// let service = ServiceBuilder::new()
///     .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
///         request.extensions_mut().insert(RemoteAddr(remote));
///         request
///     })
///     .service(service);
/// # let _ = (tcp, service); Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RemoteAddr(pub SocketAddr);

/// A [`WebSocketServer`] as a [`tower::Service`]: every request is a WebSocket handshake,
/// answered by [`WebSocketServer::upgrade`]. Cheap to clone. Made by
/// [`WebSocketServer::service`].
pub struct WebSocketService<H: ServerHandler> {
    wss: WebSocketServer<H>,
}

impl<H: ServerHandler> WebSocketServer<H> {
    /// Answers a WebSocket handshake that another HTTP server received (HTTP/1.1 upgrade, or
    /// HTTP/2 extended CONNECT): checks it, asks `on_connection`, and returns the response —
    /// 101 (200 over HTTP/2) with the agreed extensions and subprotocol, or the refusal (400,
    /// 403, 405 with `Allow` for another method, 426, 500, 503; 404 once the server is
    /// terminated). Once the response is sent,
    /// hyper hands the connection over and it runs on this server's runtime.
    ///
    /// The request must come from hyper (its extensions hold hyper's `OnUpgrade`), and
    /// hyper's HTTP/1.1 connection must be served `with_upgrades()` (hyper-util's `auto`
    /// builder's `serve_connection_with_upgrades`, and axum, do it). A request that is no
    /// handshake gets 400 (426 for another WebSocket version), a handshake without
    /// `OnUpgrade` gets 500, and `on_connection` is called for neither. Any path is accepted,
    /// and the body is ignored.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # fn demo<H: ServerHandler>(wss: WebSocketServer<H>) {
    /// use std::convert::Infallible;
    /// // A hyper service_fn that serves WebSockets at /ws and 404 elsewhere.
    /// let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
    ///     let wss = wss.clone();
    ///     async move {
    ///         if request.uri().path() == "/ws" {
    ///             return Ok::<_, Infallible>(wss.upgrade(request));
    ///         }
    ///         let mut not_found = http::Response::new(door::Body::from("Not Found"));
    ///         *not_found.status_mut() = http::StatusCode::NOT_FOUND;
    ///         Ok(not_found)
    ///     }
    /// });
    /// # let _ = service; }
    /// ```
    pub fn upgrade<B>(&self, mut request: http::Request<B>) -> http::Response<Body> {
        let remote = remote_addr(request.extensions());
        let on_upgrade = request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>();
        let (parts, _body) = request.into_parts();
        let mut checked = match upgrade::check(&parts) {
            Ok(checked) => checked,
            Err(bad) => {
                let shown = remote.map_or_else(|| "(unknown)".to_owned(), |r| r.to_string());
                tracing::debug!(remote = %shown, "bad upgrade request: {}", bad.why);
                self.inner().stats.refused(Refusal::of_status(bad.status()));
                return with_body(bad.head());
            }
        };
        // hyper puts it in every upgrade request and CONNECT it serves.
        let Some(on_upgrade) = on_upgrade else {
            tracing::error!(
                "a WebSocket handshake that did not come from hyper (no OnUpgrade): 500"
            );
            self.inner().stats.refused(Refusal::InternalError);
            return with_body(upgrade::refusal(StatusCode::INTERNAL_SERVER_ERROR));
        };
        let offered = std::mem::take(&mut checked.offered);
        let decision = self.endpoint().decide(&parts, remote, offered);
        let (head, opening) = upgrade::response(decision, checked);
        if let Some(opening) = opening {
            self.inner()
                .runtime
                .spawn(upgrade::open_upgraded(on_upgrade, opening));
        }
        with_body(head)
    }

    /// This server as a [`tower::Service`] for another HTTP server (see
    /// [`upgrade`](Self::upgrade)).
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # async fn run<H: ServerHandler>(wss: WebSocketServer<H>) -> std::io::Result<()> {
    /// use hyper_util::rt::{TokioExecutor, TokioIo};
    /// use hyper_util::server::conn::auto;
    /// use hyper_util::service::TowerToHyperService;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// loop {
    ///     let (tcp, _) = listener.accept().await?;
    ///     let service = TowerToHyperService::new(wss.service());
    ///     tokio::spawn(async move {
    ///         // HTTP/1.1 and HTTP/2 (with extended CONNECT) on one port.
    ///         let mut builder = auto::Builder::new(TokioExecutor::new());
    ///         builder.http2().enable_connect_protocol();
    ///         let _ = builder
    ///             .serve_connection_with_upgrades(TokioIo::new(tcp), service)
    ///             .await;
    ///     });
    /// }
    /// # }
    /// ```
    pub fn service(&self) -> WebSocketService<H> {
        WebSocketService { wss: self.clone() }
    }

    /// Terminates the server because the application is going away: every connection gets
    /// a close frame with 1001 (going away), new handshakes get 404, and the sockets still
    /// open after `grace` are closed without waiting for their peers. Await the returned
    /// handle to wait until every connection's `on_terminate`, then the server's, has run.
    ///
    /// This is what [`WebServer::stop`](crate::WebServer::stop) does to the servers attached
    /// to it; behind a door, call it from the HTTP server's shutdown signal (see
    /// [the door module](crate::door)). For this side's callbacks it is a normal end: no
    /// `on_error`.
    pub fn shutdown(&self, grace: Duration) -> Terminating {
        self.inner().terminate(CloseCode::GOING_AWAY, Some(grace))
    }
}

/// The client's address among a request's extensions.
fn remote_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    if let Some(RemoteAddr(remote)) = extensions.get::<RemoteAddr>() {
        return Some(*remote);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    None
}

/// A response head of the upgrade core, with its body.
fn with_body(head: http::Response<()>) -> http::Response<Body> {
    let status = head.status();
    if upgrade::is_accepted(&head) {
        head.map(|()| Body::default())
    } else {
        head.map(|()| Body::from(upgrade::refusal_text(status)))
    }
}

impl<H: ServerHandler, B> tower::Service<http::Request<B>> for WebSocketService<H> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        ready(Ok(self.wss.upgrade(request)))
    }
}

impl<H: ServerHandler> Clone for WebSocketService<H> {
    fn clone(&self) -> Self {
        WebSocketService {
            wss: self.wss.clone(),
        }
    }
}

impl<H: ServerHandler> std::fmt::Debug for WebSocketService<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketService")
            .field("wss", &self.wss)
            .finish()
    }
}

#[cfg(feature = "axum")]
impl<H: ServerHandler> WebSocketServer<H> {
    /// The route of this server in an axum `Router` (feature `axum`): every method, so that
    /// HTTP/1.1 upgrades (GET) and HTTP/2 extended CONNECTs both reach it.
    ///
    /// The client's address comes from axum's `ConnectInfo<SocketAddr>` when the app is
    /// served with `into_make_service_with_connect_info::<SocketAddr>()`. For HTTP/2
    /// WebSockets, axum's server must enable extended CONNECT (see `examples/axum.rs`).
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # async fn run<H: ServerHandler>(wss: WebSocketServer<H>) -> std::io::Result<()> {
    /// use std::net::SocketAddr;
    /// let app = axum::Router::new()
    ///     .route("/hello", axum::routing::get(|| async { "hello" }))
    ///     .route("/chat", wss.route());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    /// # }
    /// ```
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> axum::routing::MethodRouter<S> {
        axum::routing::any_service(self.service())
    }
}

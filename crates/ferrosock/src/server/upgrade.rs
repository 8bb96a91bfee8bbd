//! The upgrade core: what a WebSocket server answers to an upgrade request, whatever carries
//! the request (the web server's HTTP/1.1 or HTTP/2, a stream the application accepted
//! itself, another framework's router through a door).
//!
//! An [`Endpoint`] takes a request's parts and returns a [`Decision`]: accept, with the
//! extensions agreed and the [`Opening`] that runs the connection once its socket is handed
//! over; or refuse, with a status. Only the HTTP layers turn a decision into a response
//! ([`response`] builds the head they all send), and the WebSocket server never builds one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderValue};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::termination::Terminating;
use crate::conn::Stream;
use crate::proto::handshake;
use crate::stats::Refusal;

/// The request limits every HTTP layer starts from: the web server's defaults
/// (`WebServerOptions`) and the limits of `WebSocketServer::accept`.
pub(crate) mod defaults {
    use std::time::Duration;

    /// How long a request may take to arrive (and, for `accept`, to be answered).
    pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// The most header fields in a request (hyper's default, kept on its stack).
    pub(crate) const MAX_REQUEST_HEADERS: usize = 100;
    /// The most bytes of request line and headers.
    pub(crate) const MAX_REQUEST_HEAD_SIZE: usize = 32 << 10;
}

/// What an endpoint answers to a valid upgrade request.
pub(crate) enum Decision {
    /// 101 Switching Protocols (200 for an HTTP/2 extended CONNECT), with
    /// `Sec-WebSocket-Extensions: extensions` when some were agreed and
    /// `Sec-WebSocket-Protocol: protocol` when one was chosen; then `opening` runs the
    /// connection over the upgraded socket.
    Accept {
        extensions: Option<String>,
        protocol: Option<String>,
        opening: Box<dyn Opening>,
    },
    /// Refused with this status (403 from `on_connection`, 503 when full, 404 once
    /// terminated, 500 when `on_connection` panicked).
    Refuse(StatusCode),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Accept {
                extensions,
                protocol,
                ..
            } => f
                .debug_struct("Accept")
                .field("extensions", extensions)
                .field("protocol", protocol)
                .finish_non_exhaustive(),
            Decision::Refuse(status) => f.debug_tuple("Refuse").field(status).finish(),
        }
    }
}

/// A future the HTTP layer spawns or awaits.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An accepted connection waiting for its socket.
pub(crate) trait Opening: Send + 'static {
    /// The 101 went out: opens the connection over `stream` (registered, `on_open` run, here
    /// and now: call it where the connection is to be driven), where `read_buf` holds the
    /// bytes read past the request, and returns its driver to run.
    fn open(self: Box<Self>, stream: Stream, read_buf: BytesMut) -> Task;
    /// The 101 could not be delivered (the peer left, the HTTP layer failed): `why`.
    fn failed(self: Box<Self>, why: String);
}

/// What an HTTP layer needs of a WebSocket server, whatever its handler type.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// Decides on a valid upgrade request (already checked by [`check`], which found the
    /// subprotocols `offered`) from `remote` (`None`: the HTTP layer does not know it).
    fn decide(
        self: Arc<Self>,
        request: &http::request::Parts,
        remote: Option<SocketAddr>,
        offered: Vec<String>,
    ) -> Decision;

    /// Terminates the endpoint because its HTTP layer stops: close 1001 to every connection,
    /// forced after `grace`.
    fn shutdown(self: Arc<Self>, grace: Duration) -> Terminating;

    /// Whether the endpoint's callbacks may block ([`ServerOptions::blocking_callbacks`]).
    ///
    /// [`ServerOptions::blocking_callbacks`]: crate::ServerOptions::blocking_callbacks
    fn blocking(&self) -> bool;

    /// Counts an upgrade to this endpoint that the HTTP layer refused before asking it (a bad
    /// handshake, a rate limit). Its own refusals are counted by [`decide`](Self::decide).
    fn refused(&self, why: Refusal);
}

/// [`Endpoint::decide`], on tokio's blocking pool when the endpoint's callbacks may block and
/// this thread runs a current-thread runtime, where `block_in_place` cannot hand the thread's
/// other connections to another thread (thread-per-core mode): `on_connection` may then wait
/// on a database without stalling them.
pub(crate) async fn decide(
    endpoint: Arc<dyn Endpoint>,
    request: &http::request::Parts,
    remote: Option<SocketAddr>,
    offered: Vec<String>,
) -> Decision {
    if !(endpoint.blocking() && crate::common::on_current_thread_runtime()) {
        return endpoint.decide(request, remote, offered);
    }
    let request = request.clone();
    let counted = endpoint.clone();
    let decided = tokio::task::spawn_blocking(move || endpoint.decide(&request, remote, offered));
    match decided.await {
        Ok(decision) => decision,
        // The runtime is shutting down (a panic in `on_connection` is caught inside).
        Err(_) => {
            counted.refused(Refusal::Unavailable);
            Decision::Refuse(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// An upgrade request that does not pass [`check`].
#[derive(Debug)]
pub(crate) struct BadRequest {
    status: StatusCode,
    /// The method a 405 allows: GET for HTTP/1.1, CONNECT for HTTP/2.
    allow: &'static str,
    /// What is wrong, for the log.
    pub(crate) why: String,
}

impl BadRequest {
    /// The status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The head of the answer: 400, or 426 with the version supported.
    pub(crate) fn head(&self) -> http::Response<()> {
        let mut refusal = refusal(self.status);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            // RFC 9110 §15.5.6.
            let allow = HeaderValue::from_static(self.allow);
            refusal.headers_mut().insert(header::ALLOW, allow);
        }
        if self.status == StatusCode::UPGRADE_REQUIRED {
            refusal.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(handshake::VERSION),
            );
        }
        refusal
    }
}

/// A valid opening handshake, as [`check`] found it.
#[derive(Debug)]
pub(crate) struct Checked {
    /// `Some(accept)`: an HTTP/1.1 upgrade, answered 101 with this `Sec-WebSocket-Accept`.
    /// `None`: an HTTP/2 extended CONNECT (RFC 8441), answered 200.
    accept: Option<HeaderValue>,
    /// The subprotocols offered, in the client's order.
    pub(crate) offered: Vec<String>,
}

/// Checks an opening handshake: an HTTP/1.1 upgrade (RFC 6455 §4.2.1) or an HTTP/2 extended
/// CONNECT (RFC 8441 §4), and the subprotocols it offers; or says what is wrong.
pub(crate) fn check(request: &http::request::Parts) -> Result<Checked, BadRequest> {
    let http2 = request.version == http::Version::HTTP_2;
    let bad = |err: handshake::HandshakeError| BadRequest {
        status: err.status(),
        allow: if http2 { "CONNECT" } else { "GET" },
        why: err.to_string(),
    };
    let accept = if http2 {
        // `:protocol` as hyper gives it (the doors), or as h2 does (the web server).
        let protocol = match request.extensions.get::<hyper::ext::Protocol>() {
            Some(protocol) => Some(protocol.as_str()),
            None => request
                .extensions
                .get::<h2::ext::Protocol>()
                .map(h2::ext::Protocol::as_str),
        };
        handshake::validate_extended_connect(&request.method, protocol, &request.headers)
            .map_err(bad)?;
        None
    } else {
        let accept =
            handshake::validate_request(&request.method, request.version, &request.headers)
                .map_err(bad)?;
        Some(accept)
    };
    let offered = handshake::offered_protocols(&request.headers).map_err(bad)?;
    Ok(Checked { accept, offered })
}

/// The response head of a decision on a `checked` request, and the opening to run once it is
/// sent.
pub(crate) fn response(
    decision: Decision,
    checked: Checked,
) -> (http::Response<()>, Option<Box<dyn Opening>>) {
    match decision {
        Decision::Accept {
            extensions,
            protocol,
            opening,
        } => {
            let mut response = http::Response::new(());
            if checked.accept.is_some() {
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            }
            // RFC 8441 §5: over HTTP/2 a 200 opens the stream; no key, no accept, no Upgrade.
            let headers = response.headers_mut();
            if let Some(accept) = checked.accept {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
            if let Some(extensions) = extensions.and_then(|e| HeaderValue::from_str(&e).ok()) {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
            }
            // A token, chosen among the offers: always a valid value.
            if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
            }
            (response, Some(opening))
        }
        Decision::Refuse(status) => (refusal(status), None),
    }
}

/// Whether a response head of the upgrade core accepts the WebSocket (101, or 200 over
/// HTTP/2): no body follows it.
pub(crate) fn is_accepted(head: &http::Response<()>) -> bool {
    matches!(
        head.status(),
        StatusCode::SWITCHING_PROTOCOLS | StatusCode::OK
    )
}

/// A refusal's head: the status, with a short plain-text body that [`refusal_text`] gives.
pub(crate) fn refusal(status: StatusCode) -> http::Response<()> {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The body of a refusal: fixed per status, so that error pages say nothing about the
/// server's internals.
pub(crate) fn refusal_text(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UPGRADE_REQUIRED => "Bad WebSocket handshake",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed",
        StatusCode::NOT_FOUND => "Not Found",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
        StatusCode::TOO_MANY_REQUESTS => "Too Many Requests",
        StatusCode::REQUEST_TIMEOUT => "Request Timeout",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// Once the answer is out: waits for hyper to hand the connection over (an HTTP/1.1 socket,
/// or an HTTP/2 stream), then runs it.
pub(crate) async fn open_upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    opening: Box<dyn Opening>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            return opening.failed(format!(
                "an accepted upgrade did not complete (the answer could not be sent, or the \
                 HTTP server does not hand upgraded connections over): {err}"
            ))
        }
    };
    let (stream, read_buf) = unbox(upgraded);
    opening.open(stream, read_buf).await;
}

/// The connection inside hyper's `Upgraded`, taken out of its box when it is a socket of a
/// known type — the web server's own, or the `TokioIo<TcpStream>` of hyper-util's servers
/// (and so axum's): that removes a dynamic call from every read and write. Taken out before
/// the connection runs, with a copy of what hyper read past the request: hyper's read buffer
/// must not stay alive for the connection's whole life (5 KB per idle connection). An HTTP/2
/// stream, or a socket of another type, stays in the box.
fn unbox(upgraded: hyper::upgrade::Upgraded) -> (Stream, BytesMut) {
    let upgraded = match upgraded.downcast::<TokioIo<Stream>>() {
        Ok(parts) => return (parts.io.into_inner(), BytesMut::from(&parts.read_buf[..])),
        Err(upgraded) => upgraded,
    };
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let stream = Stream::Plain(parts.io.into_inner());
            return (stream, BytesMut::from(&parts.read_buf[..]));
        }
        Err(upgraded) => upgraded,
    };
    match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
        Ok(parts) => {
            let stream = Stream::Plain(parts.io.into_inner());
            (stream, BytesMut::from(&parts.read_buf[..]))
        }
        Err(upgraded) => (Stream::from_io(TokioIo::new(upgraded)), BytesMut::new()),
    }
}

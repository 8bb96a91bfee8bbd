//! The upgrade core: what a WebSocket server answers to an upgrade request, whatever carries
//! the request (the web server's HTTP/1.1, a stream the application accepted itself, and,
//! later, HTTP/2 or another framework's router).
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

use super::termination::Terminating;
use crate::conn::Stream;
use crate::proto::handshake;

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
    /// 101 Switching Protocols, with `Sec-WebSocket-Extensions: extensions` when some were
    /// agreed; then `opening` runs the connection over the upgraded socket.
    Accept {
        extensions: Option<String>,
        opening: Box<dyn Opening>,
    },
    /// Refused with this status (403 from `on_connection`, 503 when full, 404 once
    /// terminated, 500 when `on_connection` panicked).
    Refuse(StatusCode),
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Accept { extensions, .. } => f
                .debug_struct("Accept")
                .field("extensions", extensions)
                .finish_non_exhaustive(),
            Decision::Refuse(status) => f.debug_tuple("Refuse").field(status).finish(),
        }
    }
}

/// A future the HTTP layer spawns or awaits.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An accepted connection waiting for its socket.
pub(crate) trait Opening: Send + 'static {
    /// The 101 went out: runs the connection over `stream`, where `read_buf` holds the bytes
    /// read past the request.
    fn open(self: Box<Self>, stream: Stream, read_buf: BytesMut) -> Task;
    /// The 101 could not be delivered (the peer left, the HTTP layer failed): `why`.
    fn failed(self: Box<Self>, why: String);
}

/// What an HTTP layer needs of a WebSocket server, whatever its handler type.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// Decides on a valid upgrade request (already checked by [`check`]) from `remote`.
    fn decide(self: Arc<Self>, request: &http::request::Parts, remote: SocketAddr) -> Decision;

    /// Terminates the endpoint because its HTTP layer stops: close 1001 to every connection,
    /// forced after `grace`.
    fn shutdown(self: Arc<Self>, grace: Duration) -> Terminating;
}

/// An upgrade request that does not pass [`check`].
#[derive(Debug)]
pub(crate) struct BadRequest {
    status: StatusCode,
    /// What is wrong, for the log.
    pub(crate) why: String,
}

impl BadRequest {
    /// The head of the answer: 400, or 426 with the version supported.
    pub(crate) fn head(&self) -> http::Response<()> {
        let mut refusal = refusal(self.status);
        if self.status == StatusCode::UPGRADE_REQUIRED {
            refusal.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(handshake::VERSION),
            );
        }
        refusal
    }
}

/// Checks an upgrade request (RFC 6455 §4.2.1): its `Sec-WebSocket-Accept`, or what is wrong.
pub(crate) fn check(request: &http::request::Parts) -> Result<HeaderValue, BadRequest> {
    handshake::validate_request(&request.method, request.version, &request.headers).map_err(|err| {
        BadRequest {
            status: err.status(),
            why: err.to_string(),
        }
    })
}

/// The response head of a decision on a request whose accept key is `accept`, and the opening
/// to run once a 101 is sent.
pub(crate) fn response(
    decision: Decision,
    accept: HeaderValue,
) -> (http::Response<()>, Option<Box<dyn Opening>>) {
    match decision {
        Decision::Accept {
            extensions,
            opening,
        } => {
            let mut response = http::Response::new(());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            if let Some(extensions) = extensions.and_then(|e| HeaderValue::from_str(&e).ok()) {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
            }
            (response, Some(opening))
        }
        Decision::Refuse(status) => (refusal(status), None),
    }
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
        StatusCode::NOT_FOUND => "Not Found",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
        StatusCode::REQUEST_TIMEOUT => "Request Timeout",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

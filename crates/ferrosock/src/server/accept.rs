//! A WebSocket server over a stream the application accepted itself: the upgrade request is
//! read from the stream (as tokio-tungstenite's `accept_async` does), answered through the
//! upgrade core, and the connection runs on the stream.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::upgrade::{self, defaults, Opening};
use super::{ServerHandler, WebSocketServer};
use crate::conn::{Io, Stream};
use crate::error::{Error, ErrorKind};
use crate::stats::Refusal;

impl<H: ServerHandler> WebSocketServer<H> {
    /// Serves one WebSocket connection over `stream`, a connection the application accepted
    /// itself (TCP, TLS, a Unix socket, an in-memory pipe) from `remote`: reads the HTTP/1.1
    /// upgrade request from it, answers it as a web server would (`on_connection`, the
    /// limits, permessage-deflate), and runs the connection on this server's runtime with its
    /// callbacks, like any other of its connections.
    ///
    /// Returns once the request is answered: `Ok` after a 101 (the connection then lives on
    /// by itself), or the error — [`ErrorKind::Handshake`] with
    /// [`Error::http_status`] for a request refused (400, 403, 404, 426, 431, 503),
    /// [`ErrorKind::Timeout`] when the request was not read and answered within 10 s (a
    /// request with a body is refused with 400: bytes after the head are frames),
    /// [`ErrorKind::Io`] when the stream failed. A refused request gets its HTTP answer
    /// before the stream is dropped. Any path is accepted: routing by path is the caller's.
    ///
    /// Works on a server from [`detached`](Self::detached) or [`new`](Self::new) alike.
    pub async fn accept<S>(&self, stream: S, remote: SocketAddr) -> Result<(), Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // One deadline for the whole handshake: reading the request and writing the answer.
        let deadline = tokio::time::Instant::now() + defaults::HANDSHAKE_TIMEOUT;
        let timed_out = || {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "the upgrade request was not read and answered within {} s",
                    defaults::HANDSHAKE_TIMEOUT.as_secs()
                ),
            )
        };
        let mut stream = stream;
        let decided = tokio::time::timeout_at(deadline, self.decide_on(&mut stream, remote)).await;
        let (head, opening, leftover) = match decided {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(timed_out()),
        };
        match tokio::time::timeout_at(deadline, write_head(&mut stream, &head)).await {
            Ok(Ok(())) => {
                // Opened in the task: the connection's setup (and `on_open`) runs where it
                // will be driven.
                let stream = Stream::from_io(stream);
                self.inner()
                    .runtime
                    .spawn(async move { opening.open(stream, leftover).await });
                Ok(())
            }
            Ok(Err(err)) => {
                opening.failed(format!("the 101 could not be sent: {err}"));
                Err(Error::with_source(ErrorKind::Io, "sending the 101", err))
            }
            Err(_) => {
                opening.failed("the 101 could not be sent within the handshake timeout".to_owned());
                Err(timed_out())
            }
        }
    }

    /// Reads the request and decides on it: the 101 to send and the opening to run after it,
    /// with the bytes read past the request; or the refusal, answered here, as the error.
    async fn decide_on<S: Io>(
        &self,
        stream: &mut S,
        remote: SocketAddr,
    ) -> Result<(http::Response<()>, Box<dyn Opening>, BytesMut), Error> {
        let (parts, leftover) = match read_head(stream).await {
            Ok(Ok(request)) => request,
            Ok(Err(status)) => {
                self.inner().stats.refused(Refusal::of_status(status));
                let refusal = upgrade::refusal(status);
                return Err(answer(stream, refusal, "a malformed request").await);
            }
            Err(err) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    "reading the upgrade request",
                    err,
                ))
            }
        };
        let mut checked = match upgrade::check(&parts) {
            Ok(checked) => checked,
            Err(bad) => {
                self.inner().stats.refused(Refusal::of_status(bad.status()));
                return Err(answer(stream, bad.head(), &bad.why).await);
            }
        };
        let offered = std::mem::take(&mut checked.offered);
        let decision = upgrade::decide(self.endpoint(), &parts, Some(remote), offered).await;
        let (head, opening) = upgrade::response(decision, checked);
        match opening {
            Some(opening) => Ok((head, opening, leftover)),
            None => Err(answer(stream, head, "refused").await),
        }
    }
}

/// Reads a request head. `Ok(Err(status))`: it is not a valid HTTP/1.x request head (400), or
/// too large (431).
async fn read_head<S: Io>(
    stream: &mut S,
) -> std::io::Result<Result<(http::request::Parts, BytesMut), http::StatusCode>> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; defaults::MAX_REQUEST_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let parts = to_parts(&request);
                // A copy of its own: the head's buffer is freed with this function.
                let leftover = BytesMut::from(&buf[len..]);
                return Ok(parts.map(|parts| (parts, leftover)));
            }
            Ok(httparse::Status::Partial) if buf.len() < defaults::MAX_REQUEST_HEAD_SIZE => {
                continue
            }
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Ok(Err(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
            }
            Err(_) => return Ok(Err(http::StatusCode::BAD_REQUEST)),
        }
    }
}

/// The parts of a parsed request head, for the upgrade core.
fn to_parts(request: &httparse::Request<'_, '_>) -> Result<http::request::Parts, http::StatusCode> {
    let bad = |_| http::StatusCode::BAD_REQUEST;
    let mut builder = http::Request::builder()
        .method(request.method.unwrap_or_default())
        .uri(request.path.unwrap_or_default())
        .version(match request.version {
            Some(0) => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        });
    for header in request.headers.iter() {
        // An upgrade request has no body (RFC 6455 §4.1): bytes after the head are frames.
        let name = header.name;
        let is_body = name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && header.value != b"0");
        if is_body {
            return Err(http::StatusCode::BAD_REQUEST);
        }
        builder = builder.header(header.name, header.value);
    }
    builder.body(()).map(|r| r.into_parts().0).map_err(bad)
}

/// Answers a request that is not upgraded; the error says why.
async fn answer<S: Io>(stream: &mut S, head: http::Response<()>, what: &str) -> Error {
    let status = head.status();
    let body = upgrade::refusal_text(status);
    let mut head = head;
    head.headers_mut()
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    head.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    // The refusal is the error; a peer gone before reading it changes nothing.
    if write_head(stream, &head).await.is_ok() {
        let _ = stream.write_all(body.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
    Error::new(
        ErrorKind::Handshake,
        format!("{what}: answered with HTTP {status}"),
    )
    .with_status(status.as_u16())
}

/// Writes a response head (status line, headers, blank line).
async fn write_head<S: Io>(stream: &mut S, head: &http::Response<()>) -> std::io::Result<()> {
    let status = head.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in head.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await?;
    stream.flush().await
}

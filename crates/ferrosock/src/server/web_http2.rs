//! The web server's HTTP/2 (RFC 9113) connections, served with the `h2` crate: requests for
//! files, and WebSockets on extended CONNECT streams (RFC 8441).
//!
//! hyper serves HTTP/2 too, but its upgraded stream cannot end with RST_STREAM: dropped, it
//! ends with END_STREAM, and RFC 8441 §5 keeps RST_STREAM(CANCEL) for where RFC 6455 drops
//! the TCP connection (a close timeout, an abort). Served with `h2` directly, a WebSocket's
//! stream is an `H2Stream`: END_STREAM when the driver shuts it down after a close
//! handshake, RST_STREAM(CANCEL) when it is dropped without that; and what it writes is handed
//! to h2 only as the peer's window allows, so what waits for a stalled peer stays in the
//! connection's queue, under its byte budget. `h2` does the framing, the flow control and the
//! SETTINGS; this file only connects its streams to the web server.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::header;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use super::web_server::{Body, Http2, OpenRate, WebInner, MAX_WINDOW};
use crate::conn::{H2Stream, Stream};

/// Serves one HTTP/2 connection until it ends, or until the web server stops: then, once every
/// WebSocket had its close, GOAWAY, and the streams in flight finish (until `forced`). A
/// connection without a stream for `handshake_timeout` — a client that sent its preface and
/// nothing more, or one whose last WebSocket ended — gets GOAWAY too, and is dropped if it
/// does not finish within another `handshake_timeout`.
pub(super) async fn serve(
    inner: Arc<WebInner>,
    stream: Stream,
    remote: SocketAddr,
    settings: Http2,
) {
    let connection_window = settings
        .stream_window
        .saturating_mul(settings.max_streams)
        .min(MAX_WINDOW);
    let mut builder = h2::server::Builder::new();
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(settings.max_streams)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(connection_window)
        .max_header_list_size(u32::try_from(inner.max_request_head_size()).unwrap_or(u32::MAX));
    let handshake = builder.handshake::<_, Bytes>(stream);
    let mut connection = match tokio::time::timeout(inner.handshake_timeout(), handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            tracing::debug!(%remote, "HTTP/2 handshake failed: {err}");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "HTTP/2 handshake timed out");
            return;
        }
    };
    let opens = Arc::new(Mutex::new(OpenRate::new(&settings)));
    let streams = Arc::new(Streams::default());
    let timeout = inner.handshake_timeout();
    let idle = tokio::time::sleep(timeout);
    tokio::pin!(idle);
    let mut going_away = false;
    loop {
        let idle_now = streams.open.load(Ordering::Acquire) == 0;
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    let task = answer(inner.clone(), request, respond, remote, opens.clone());
                    let open = Open::new(&streams);
                    tokio::spawn(async move {
                        task.await;
                        drop(open);
                    });
                }
                Some(Err(err)) => {
                    tracing::debug!(%remote, "HTTP/2 connection ended: {err}");
                    return;
                }
                None => return,
            },
            // RFC 8441 §5 and RFC 9113 §6.8: the WebSockets on this connection get their
            // close (1001) first, then GOAWAY; streams in flight finish.
            _ = inner.websockets_closed().cancelled(), if !going_away => {
                going_away = true;
                connection.graceful_shutdown();
            }
            _ = inner.forced().cancelled() => return,
            // The last stream ended: the idle time counts from now.
            _ = streams.idle.notified() => {
                idle.as_mut().reset(tokio::time::Instant::now() + timeout);
            }
            _ = &mut idle, if idle_now => {
                if going_away {
                    tracing::debug!(%remote, "HTTP/2 connection did not finish after GOAWAY");
                    return;
                }
                tracing::debug!(%remote, "HTTP/2 connection idle: GOAWAY");
                going_away = true;
                connection.graceful_shutdown();
                idle.as_mut().reset(tokio::time::Instant::now() + timeout);
            }
        }
    }
}

/// The streams of a connection being answered, and a wake-up when none is left.
#[derive(Default)]
struct Streams {
    open: AtomicUsize,
    idle: Notify,
}

/// One stream being answered; dropped when its answer (or its WebSocket) is over.
struct Open(Arc<Streams>);

impl Open {
    fn new(streams: &Arc<Streams>) -> Open {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Open(streams.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A permit is kept if the loop is not waiting right now.
            self.0.idle.notify_one();
        }
    }
}

/// Answers one stream: a WebSocket's extended CONNECT, or a request for a file.
async fn answer(
    inner: Arc<WebInner>,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    remote: SocketAddr,
    opens: Arc<Mutex<OpenRate>>,
) {
    let (parts, recv) = request.into_parts();
    if parts.method == http::Method::CONNECT {
        let (response, opening) = inner.websocket(&parts, remote, Some(&*opens)).await;
        let Some(opening) = opening else {
            drop(recv);
            send(respond, response).await;
            return;
        };
        // A 200 without END_STREAM: the stream is the WebSocket's from here (RFC 8441 §5).
        let (head, _) = response.into_parts();
        match respond.send_response(http::Response::from_parts(head, ()), false) {
            Ok(send) => {
                let stream = H2Stream::new(send, recv);
                opening.open(Stream::from_io(stream), BytesMut::new()).await;
            }
            Err(err) => opening.failed(format!("the 200 could not be sent: {err}")),
        }
        return;
    }
    drop(recv);
    let request = http::Request::from_parts(parts, http_body_util::Empty::<Bytes>::new());
    let response = inner.serve_file(request).await;
    send(respond, response).await;
}

/// Sends a response and its body, as the peer's window allows.
async fn send(mut respond: SendResponse<Bytes>, response: http::Response<Body>) {
    let (mut head, body) = response.into_parts();
    // Connection-specific headers do not exist in HTTP/2 (RFC 9113 §8.2.2).
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        head.headers.remove(name);
    }
    let head = http::Response::from_parts(head, ());
    if http_body::Body::is_end_stream(&body) {
        let _ = respond.send_response(head, true);
        return;
    }
    let Ok(mut stream) = respond.send_response(head, false) else {
        return;
    };
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The file could not be read to its end: the stream ends in error.
            stream.send_reset(Reason::INTERNAL_ERROR);
            return;
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        while data.has_remaining() {
            stream.reserve_capacity(data.len());
            let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(granted)) => granted,
                // The peer reset the stream or left.
                _ => return,
            };
            if granted == 0 {
                continue;
            }
            let chunk = data.split_to(granted.min(data.len()));
            if stream.send_data(chunk, false).is_err() {
                return;
            }
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

//! The client's HTTP/2 (RFC 8441): one connection per origin, shared by the WebSockets that
//! ask for HTTP/2, each on a stream of its own. `h2` does the framing, the flow control and
//! the SETTINGS; this file chooses the connection and opens the extended CONNECT.
//!
//! A connection carries as many WebSockets as the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! allows; the next ones open another connection to the origin.
//!
//! The client waits for the server's SETTINGS (they precede the answer to a PING) before it
//! chooses. When ALPN chooses `http/1.1`, that connection carries the WebSocket. Without
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL` or with no stream allowed, or from a plain-text server
//! that does not speak HTTP/2 at all (`ws://` tries it by prior knowledge), the WebSocket goes
//! over HTTP/1.1 on a new connection, and the origin is remembered as such for a minute. Over TLS, where ALPN chose `h2`, a connection that
//! fails is an error (one the reconnection policy retries), not a "no".

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;

use super::connect::{
    client_handshake, handshake, handshake_failed, refusal, transport, Established, Outcome, Target,
};
use super::proxy::Proxy;
use super::ClientOptions;
use crate::conn::{H2Stream, Stream};
use crate::error::{Error, ErrorKind};

/// How long an origin that does not take WebSockets over HTTP/2 goes straight to HTTP/1.1.
const HTTP1_MEMORY: Duration = Duration::from_secs(60);

/// The stream window the client grants: what a server may send a WebSocket ahead of its
/// reading. The connection's window is that times `STREAMS_WINDOWED`, as on the server, so
/// that a few slow sockets cannot stall the others sharing the connection.
const STREAM_WINDOW: u32 = 256 * 1024;
const STREAMS_WINDOWED: u32 = 128;

/// What makes two sockets able to share a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Origin {
    secure: bool,
    host: String,
    port: u16,
    /// The proxy, credentials included: another user is another tunnel.
    proxy: Option<Proxy>,
    /// The TLS configuration: other roots or client certificates, another connection.
    tls: Option<SameConfig>,
}

/// A TLS configuration, equal to itself only: kept alive by the key, so that its address is
/// never another configuration's.
#[derive(Clone, Debug)]
struct SameConfig(Arc<rustls::ClientConfig>);

impl PartialEq for SameConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SameConfig {}

impl std::hash::Hash for SameConfig {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    /// One connection, and more while each is at the server's stream limit.
    Open(Vec<Connection>),
    Http1Only(Instant),
}

impl Slot {
    /// Holds nothing worth keeping.
    fn is_idle(&self) -> bool {
        match self {
            Slot::Empty => true,
            Slot::Open(connections) => connections.iter().all(|c| c.closed.load(Ordering::Acquire)),
            Slot::Http1Only(since) => since.elapsed() >= HTTP1_MEMORY,
        }
    }
}

struct Connection {
    send: SendRequest<Bytes>,
    /// Set when h2's connection task ends.
    closed: Arc<AtomicBool>,
    /// The WebSockets open or opening on it.
    streams: Arc<AtomicUsize>,
}

impl Connection {
    /// Takes a stream of this connection, if it is alive and below the server's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    fn reserve(&self) -> Option<Reserved> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let limit = self.send.current_max_send_streams();
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| Reserved(Some(self.streams.clone())))
    }
}

/// A stream counted in its connection's count: given back when dropped, unless its WebSocket
/// took it over.
struct Reserved(Option<Arc<AtomicUsize>>);

impl Reserved {
    fn into_count(mut self) -> Arc<AtomicUsize> {
        self.0.take().expect("taken once")
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(open) = self.0.take() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

type Pool = Mutex<HashMap<Origin, Arc<tokio::sync::Mutex<Slot>>>>;

static POOL: LazyLock<Pool> = LazyLock::new(Pool::default);

/// Opens the WebSocket on an HTTP/2 stream to `target`'s origin; `None` when the server does
/// not take WebSockets over HTTP/2 (the caller goes on with HTTP/1.1).
pub(crate) async fn open(
    target: &Target,
    proxy: Option<&Proxy>,
    headers: &[(String, String)],
    options: &ClientOptions,
) -> Result<Option<Outcome>, Error> {
    let origin = Origin {
        secure: target.secure,
        host: target.host.clone(),
        port: target.port,
        proxy: proxy.cloned(),
        tls: options.tls.clone().map(SameConfig),
    };
    let slot = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // Origins no socket uses any more leave the pool (a slot in use is locked or shared).
        pool.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |slot| !slot.is_idle())
        });
        pool.entry(origin).or_default().clone()
    };
    // A pooled connection may have gone away since (a GOAWAY): then one new dial.
    for pooled_tries in [true, false] {
        // One dial per origin at a time: sockets cut off together share the next connection.
        let mut guard = slot.lock().await;
        if let Slot::Open(connections) = &mut *guard {
            connections.retain(|c| !c.closed.load(Ordering::Acquire));
        }
        let pooled = match &*guard {
            Slot::Open(connections) if pooled_tries => connections
                .iter()
                .find_map(|c| Some((c.send.clone(), c.reserve()?, Some(c.closed.clone())))),
            _ => None,
        };
        let ((send, reserved, closed), pooled) = match (pooled, &*guard) {
            (Some(taken), _) => (taken, true),
            (None, Slot::Http1Only(since)) if since.elapsed() < HTTP1_MEMORY => return Ok(None),
            (None, _) => match dial(target, proxy, options).await? {
                Dialed::Http2(connection) => {
                    let reserved = connection.reserve().ok_or_else(|| {
                        Error::new(
                            ErrorKind::Handshake,
                            "the server allows no stream on its HTTP/2 connection",
                        )
                    })?;
                    let taken = (connection.send.clone(), reserved, None);
                    match &mut *guard {
                        Slot::Open(connections) => connections.push(connection),
                        other => *other = Slot::Open(vec![connection]),
                    }
                    (taken, false)
                }
                Dialed::Http1(stream) => {
                    // ALPN chose HTTP/1.1: this connection carries the WebSocket. Nothing to
                    // remember: asking again costs nothing.
                    drop(guard);
                    return handshake(stream, target, headers, options).await.map(Some);
                }
                Dialed::NoWebSockets(why) => {
                    tracing::debug!(origin = %target.authority(), "{why}: HTTP/1.1 instead");
                    *guard = Slot::Http1Only(Instant::now());
                    return Ok(None);
                }
            },
        };
        drop(guard);
        // Waits while the server's stream limit is reached.
        let send = match send.ready().await {
            Ok(send) => send,
            Err(err) if pooled => {
                // Gone away (GOAWAY, or the connection failed): no socket picks it again.
                if let Some(closed) = closed {
                    closed.store(true, Ordering::Release);
                }
                tracing::debug!(origin = %target.authority(), "pooled HTTP/2 connection gone: {err}");
                continue;
            }
            Err(err) => {
                return Err(Error::with_source(
                    ErrorKind::Handshake,
                    "the HTTP/2 connection ended before the WebSocket's stream could open",
                    err,
                ))
            }
        };
        return extended_connect(send, reserved, target, headers, options)
            .await
            .map(Some);
    }
    unreachable!("the second round dials or returns")
}

enum Dialed {
    Http2(Connection),
    Http1(Stream),
    NoWebSockets(String),
}

/// A new connection to the origin: HTTP/2 with extended CONNECT, or why not.
async fn dial(
    target: &Target,
    proxy: Option<&Proxy>,
    options: &ClientOptions,
) -> Result<Dialed, Error> {
    let (stream, alpn) = transport(target, proxy, options, &[b"h2", b"http/1.1"]).await?;
    if target.secure && alpn.as_deref() != Some(b"h2") {
        return Ok(Dialed::Http1(stream));
    }
    // Over TLS, ALPN said h2: a failure from here is the connection's, not a "no". In plain
    // text, prior knowledge met a server that may speak HTTP/1.1 only: that is a "no".
    let failed = |what: &str, err: h2::Error| {
        if target.secure {
            Err(Error::with_source(
                ErrorKind::Handshake,
                format!("the HTTP/2 connection failed: {what}"),
                err,
            ))
        } else {
            Ok(Dialed::NoWebSockets(format!(
                "the server does not speak HTTP/2 ({what}: {err})"
            )))
        }
    };
    let (send, mut connection) = match h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_WINDOW * STREAMS_WINDOWED)
        .handshake::<_, Bytes>(stream)
        .await
    {
        Ok(parts) => parts,
        Err(err) => return failed("the preface", err),
    };
    let mut ping = connection.ping_pong().expect("taken once, here");
    let closed = Arc::new(AtomicBool::new(false));
    let ended = closed.clone();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("HTTP/2 connection ended: {err}");
        }
        ended.store(true, Ordering::Release);
    });
    // The server's SETTINGS come first (RFC 9113 §3.4), before the answer to this PING.
    if let Err(err) = ping.ping(h2::Ping::opaque()).await {
        return failed("no SETTINGS", err);
    }
    if !send.is_extended_connect_protocol_enabled() {
        return Ok(Dialed::NoWebSockets(
            "the server does not enable extended CONNECT (RFC 8441)".to_owned(),
        ));
    }
    if send.current_max_send_streams() == 0 {
        return Ok(Dialed::NoWebSockets(
            "the server allows no stream (SETTINGS_MAX_CONCURRENT_STREAMS 0)".to_owned(),
        ));
    }
    Ok(Dialed::Http2(Connection {
        send,
        closed,
        streams: Arc::default(),
    }))
}

/// The extended CONNECT (RFC 8441 §4) on a stream of `send`'s connection.
async fn extended_connect(
    mut send: SendRequest<Bytes>,
    reserved: Reserved,
    target: &Target,
    headers: &[(String, String)],
    options: &ClientOptions,
) -> Result<Outcome, Error> {
    let failed = |what: &str, err: h2::Error| {
        Error::with_source(
            ErrorKind::Handshake,
            format!("the HTTP/2 opening handshake failed: {what}"),
            err,
        )
    };
    let handshake = client_handshake(options);
    let scheme = if target.secure { "https" } else { "http" };
    // `:authority` as HTTP/1.1's `Host`: the port only when it is not the scheme's default.
    let uri = format!("{scheme}://{}{}", target.host_header, target.resource);
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(())
        .map_err(|err| Error::with_source(ErrorKind::InvalidUrl, "not an HTTP/2 target", err))?;
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let map = request.headers_mut();
    *map = handshake.extended_connect_headers();
    for (name, value) in headers {
        // `:authority` says the host over HTTP/2.
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        let name = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes());
        let value = http::HeaderValue::from_str(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    let (response, stream) = send
        .send_request(request, false)
        .map_err(|err| failed("the stream could not be opened", err))?;
    let response = response.await.map_err(|err| failed("no answer", err))?;
    let (head, body) = response.into_parts();
    if !head.status.is_success() {
        return refusal(head.status.as_u16(), &head.headers);
    }
    let accepted = handshake
        .check_extended_connect(head.status.as_u16(), &head.headers)
        .map_err(handshake_failed)?;
    Ok(Outcome::Open(Established {
        stream: Stream::from_io(H2Stream::new(stream, body).counted_in(reserved.into_count())),
        leftover: BytesMut::new(),
        deflate: accepted.deflate,
        protocol: accepted.protocol,
    }))
}

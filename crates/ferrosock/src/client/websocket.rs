//! `WebSocket`: a client socket (4D's `4D.WebSocket`), on the same driver as the server.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use super::connect::{establish, request_headers, ClientOptions, Established, Target};
use super::ClientHandler;
use crate::common::{next_id, Compress, Incoming, Status};
use crate::conn::{self, Callbacks, DriverConfig, Ending, Shared, Stream};
use crate::error::{Error, ErrorKind};
use crate::event::{ErrorEvent, ErrorInfo, OpenEvent, TerminateEvent};
use crate::handle::{end_events, message_event, Core};
use crate::message::{DataType, Message};
use crate::proto::close::MAX_REASON_LEN;
use crate::proto::deflate::Negotiated;
use crate::proto::{CloseCode, Role};

/// A WebSocket client connection (4D's `4D.WebSocket`).
///
/// Two ways to open one:
/// - [`WebSocket::new`] returns at once, with status `Connecting`; the connection is made in
///   the background and the handler hears how it went (`on_open`, or `on_error` then
///   `on_terminate` with 1006).
/// - [`WebSocket::connect`] is awaited: it returns the connected socket (its `on_open` has
///   run) or the error, and then no callback fires for the failed attempt.
///
/// A cheap handle: clones refer to the same socket, usable from any thread. The connection
/// lives until it is closed (by [`terminate`](Self::terminate), by the server, or by a
/// failure), whether or not handles remain.
///
/// ```no_run
/// use ferrosock::{ClientHandler, MessageEvent, WebSocket};
///
/// struct Printer;
/// impl ClientHandler for Printer {
///     fn on_message(&self, _ws: &WebSocket<Self>, event: MessageEvent) {
///         println!("{}", event.data.to_text());
///     }
/// }
///
/// # async fn run() -> Result<(), ferrosock::Error> {
/// let ws = WebSocket::connect("ws://127.0.0.1:8080/echo", Printer).await?;
/// ws.send("Hello world")?;
/// ws.terminate();
/// ws.closed().await; // on_terminate has run
/// # Ok(()) }
/// ```
pub struct WebSocket<H: ClientHandler> {
    inner: Arc<ClientInner<H>>,
}

struct ClientInner<H> {
    core: Core,
    url: String,
    handler: H,
    data_type: DataType,
    /// The subprotocol the server chose, set once the handshake succeeded.
    protocol: std::sync::OnceLock<String>,
    /// True once `on_terminate` has run.
    ended: watch::Sender<bool>,
}

/// What a connection attempt needs, checked before anything is spawned.
struct Plan {
    target: Target,
    headers: Vec<(String, String)>,
    options: ClientOptions,
}

impl<H: ClientHandler> WebSocket<H> {
    /// Opens a client socket to `url` (`ws://host[:port]path[?query]` or `wss://…`) in the
    /// background; see the type's docs. Must be called within a tokio runtime.
    ///
    /// Fails at once, with nothing spawned and no callback, for an invalid URL or scheme
    /// ([`ErrorKind::InvalidUrl`]), invalid handler headers, or no runtime
    /// ([`ErrorKind::InvalidArgument`]).
    pub fn new(url: &str, handler: H) -> Result<Self, Error> {
        WebSocket::with_options(url, handler, ClientOptions::default())
    }

    /// [`new`](Self::new) with options (connect timeout, limits, TLS roots).
    pub fn with_options(url: &str, handler: H, options: ClientOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                "WebSocket::new must be called within a tokio runtime",
            )
        })?;
        let (ws, plan) = WebSocket::prepare(url, handler, options)?;
        let task = ws.clone();
        runtime.spawn(async move {
            match establish(&plan.target, &plan.headers, &plan.options, None).await {
                Ok(established) => {
                    let config = task.open(&established, &plan.options);
                    task.drive(established, config).await;
                }
                Err(err) => task.connection_failed(&err),
            }
        });
        Ok(ws)
    }

    /// Connects to `url` and returns once the socket is open and its `on_open` has run.
    ///
    /// Errors: [`ErrorKind::InvalidUrl`], [`ErrorKind::Dns`], [`ErrorKind::Connect`] (refused,
    /// unreachable), [`ErrorKind::Tls`], [`ErrorKind::Handshake`] (with
    /// [`Error::http_status`] when the server answered with another status than 101),
    /// [`ErrorKind::Timeout`]. Dropping the future abandons the attempt.
    pub async fn connect(url: &str, handler: H) -> Result<Self, Error> {
        WebSocket::connect_with(url, handler, ClientOptions::default()).await
    }

    /// [`connect`](Self::connect) with options (connect timeout, limits, TLS roots).
    pub async fn connect_with(
        url: &str,
        handler: H,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        WebSocket::connect_on(url, handler, options, None).await
    }

    /// [`connect_with`](Self::connect_with) over `stream`, a connection the application opened
    /// itself (through a proxy, over a Unix socket, with its own TLS, an in-memory pipe), as
    /// tokio-tungstenite's `client_async` does: the opening handshake is sent on it, and the
    /// connection runs on it. `url` gives the `Host` header and the resource requested; its
    /// scheme does not wrap the stream in TLS (a `wss://` URL needs a stream that is TLS
    /// already). Same errors as [`connect`](Self::connect), but for DNS, TCP and TLS.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # struct Printer; impl ClientHandler for Printer {}
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
    /// tcp.set_nodelay(true)?;
    /// let ws = WebSocket::connect_over("ws://127.0.0.1:8080/echo", tcp, Printer, ClientOptions::default()).await?;
    /// ws.send("hello")?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_over<S>(
        url: &str,
        stream: S,
        handler: H,
        options: ClientOptions,
    ) -> Result<Self, Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        WebSocket::connect_on(url, handler, options, Some(Stream::from_io(stream))).await
    }

    async fn connect_on(
        url: &str,
        handler: H,
        options: ClientOptions,
        over: Option<Stream>,
    ) -> Result<Self, Error> {
        let (ws, plan) = WebSocket::prepare(url, handler, options)?;
        match establish(&plan.target, &plan.headers, &plan.options, over).await {
            Ok(established) => {
                let config = ws.open(&established, &plan.options);
                let task = ws.clone();
                tokio::spawn(async move { task.drive(established, config).await });
                Ok(ws)
            }
            Err(err) => {
                ws.shared().finish();
                ws.inner.ended.send_replace(true);
                Err(err)
            }
        }
    }

    fn prepare(url: &str, handler: H, options: ClientOptions) -> Result<(Self, Plan), Error> {
        let target = Target::parse(url)?;
        options.deflate.validate().map_err(|why| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("permessage-deflate: {why}"),
            )
        })?;
        options.validate()?;
        let headers = request_headers(&handler.headers())?;
        let core = Core::new(next_id(), Role::Client, Status::Connecting, &options.limits);
        let ws = WebSocket {
            inner: Arc::new(ClientInner {
                core,
                url: url.to_owned(),
                data_type: handler.data_type(),
                handler,
                protocol: std::sync::OnceLock::new(),
                ended: watch::Sender::new(false),
            }),
        };
        Ok((
            ws,
            Plan {
                target,
                headers,
                options,
            },
        ))
    }

    /// The handshake succeeded: `Connected`, then `on_open`. Returns how the driver runs.
    fn open(&self, established: &Established, options: &ClientOptions) -> DriverConfig {
        // Before `Connected`: a send from on_open already goes the compressing way.
        self.inner
            .core
            .negotiated(established.deflate, &options.deflate);
        if let Some(protocol) = &established.protocol {
            let _ = self.inner.protocol.set(protocol.clone());
        }
        self.shared().set_connected();
        self.guard("on_open", |h, ws| h.on_open(ws, OpenEvent::new()));
        DriverConfig::new(Role::Client, &options.limits)
    }

    async fn drive(self, established: Established, config: DriverConfig) {
        let Established {
            stream, leftover, ..
        } = established;
        conn::run(stream, leftover, config, ClientCallbacks { ws: self }).await;
    }

    /// The background attempt failed: `on_error`, then `on_terminate` with 1006.
    fn connection_failed(&self, err: &Error) {
        self.shared().finish();
        let cause = crate::error::chain(err);
        let info = ErrorInfo::close(CloseCode::ABNORMAL, Some(&cause));
        self.guard("on_error", |h, ws| {
            h.on_error(ws, ErrorEvent::new(vec![info]))
        });
        let event = TerminateEvent::new(CloseCode::ABNORMAL, "", false);
        self.guard("on_terminate", |h, ws| h.on_terminate(ws, event));
        self.inner.ended.send_replace(true);
    }

    /// How received messages are converted (from the handler's `data_type`).
    pub fn data_type(&self) -> DataType {
        self.inner.data_type
    }

    /// The handler given to `new` or `connect`.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// The socket's id: unique in the process, shared with server connections' ids.
    pub fn id(&self) -> u64 {
        self.inner.core.id()
    }

    /// `Connecting`, `Connected`, `Closing` or `Closed`.
    pub fn status(&self) -> Status {
        self.inner.core.status()
    }

    /// Exactly the URL given to `new` or `connect`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The subprotocol the server chose among those offered
    /// ([`ClientOptions::protocols`](crate::ClientOptions::protocols)); `None` when it chose
    /// none, and while the socket is still connecting. A server that chooses one the client
    /// did not offer fails the connection (an [`ErrorKind::Handshake`] error).
    pub fn protocol(&self) -> Option<&str> {
        self.inner.protocol.get().map(String::as_str)
    }

    /// permessage-deflate as the opening handshake settled it: `None` when the server declined
    /// it (or it was not offered), and while the socket is still connecting.
    ///
    /// A server may leave out of its answer the server-side parameters the client asked for
    /// (uWebSockets-based servers do): the client then decompresses with what the answer
    /// says, a window of up to 15 bits kept for the connection (`decompress_window_bits` 15,
    /// `decompress_reset` false), which costs it an inflate context of about 51 KiB for the
    /// connection's life (docs/DEFLATE.md). See [`PerMessageDeflate`](crate::PerMessageDeflate).
    pub fn compression(&self) -> Option<Negotiated> {
        self.inner.core.compression()
    }

    /// Sends a message: a `Text` as a text frame, a `Blob` as a binary frame, an `Object` as a
    /// text frame with its JSON, masked with a fresh random key. Never blocks.
    ///
    /// Fails with [`ErrorKind::NotConnected`] unless the socket is `Connected` (nothing is
    /// queued while connecting), and with [`ErrorKind::BufferFull`] when the outgoing byte
    /// budget would be exceeded.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.send_with(message, Compress::Auto)
    }

    /// [`send`](Self::send), choosing whether this message is compressed when
    /// permessage-deflate was negotiated (with `Compress::Auto`, messages shorter than the
    /// threshold are not).
    pub fn send_with(&self, message: impl Into<Message>, compress: Compress) -> Result<(), Error> {
        self.inner.core.send(message.into(), compress)
    }

    /// The bytes queued on this socket and not yet written, as its budget
    /// ([`Limits::max_outgoing_bytes`](crate::Limits::max_outgoing_bytes)) counts them: each
    /// message's payload (compressed, once compressed) plus
    /// [`QUEUED_MESSAGE_OVERHEAD`](crate::memory::QUEUED_MESSAGE_OVERHEAD). The browser's
    /// `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.inner.core.buffered_amount()
    }

    /// Resolves once a message of `bytes` bytes fits this socket's outgoing budget (its queue
    /// is empty or has room for it) while it is `Connected` — a socket still connecting is
    /// waited for — or once it is closing or closed (then a send fails, as it says). uWebSockets calls this moment `drain`; `send` itself never waits. The
    /// process-wide cap ([`crate::memory`]) is not awaited: a send can still be refused by it.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # async fn upload<H: ClientHandler>(ws: WebSocket<H>, chunks: Vec<Bytes>) -> Result<(), Error> {
    /// for chunk in chunks {
    ///     ws.writable(chunk.len()).await; // paced by the server's reading, not by errors
    ///     ws.send(Message::Blob(chunk))?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn writable(&self, bytes: usize) {
        self.inner.core.writable(bytes).await;
    }

    /// Closes the connection normally (1000): a close frame, then the server's close frame and
    /// its TCP close are awaited. Called while connecting, it closes as soon as the connection
    /// is open. Does nothing if already closing.
    pub fn terminate(&self) {
        self.close(CloseCode::NORMAL, "");
    }

    /// Closes the connection with `code` and `reason` (4D's `terminate(code; reason)`).
    ///
    /// `code` must be 1000 or in 3000–4999, and `reason` at most 123 bytes of UTF-8;
    /// otherwise [`ErrorKind::InvalidArgument`] is returned and nothing is closed.
    pub fn terminate_with(&self, code: u16, reason: &str) -> Result<(), Error> {
        if code != 1000 && !(3000..=4999).contains(&code) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("close code {code}: a client may close with 1000 or 3000-4999"),
            ));
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "close reason of {} bytes: at most {MAX_REASON_LEN}",
                    reason.len()
                ),
            ));
        }
        self.close(CloseCode(code), reason);
        Ok(())
    }

    /// Resolves once the socket is closed and `on_terminate` has run (at once if it has).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut ended = self.inner.ended.subscribe();
        async move {
            // An error means the sender is gone, which only happens once everything has ended.
            let _ = ended.wait_for(|ended| *ended).await;
        }
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.inner.core.close(code, reason, None);
    }

    fn shared(&self) -> &Shared {
        self.inner.core.shared()
    }

    /// Runs a callback; a panic fails the connection with 1011 and is reported at its end.
    fn guard(&self, callback: &str, f: impl FnOnce(&H, &Self)) {
        self.inner
            .core
            .guard(callback, || f(&self.inner.handler, self));
    }
}

/// Plugs a client socket's handler into the driver.
struct ClientCallbacks<H: ClientHandler> {
    ws: WebSocket<H>,
}

impl<H: ClientHandler> Callbacks for ClientCallbacks<H> {
    fn shared(&self) -> &Shared {
        self.ws.shared()
    }

    fn on_message(&mut self, message: Incoming) {
        // As on the server (SPEC §3, §4): a message that cannot be converted is reported, not
        // delivered, and the connection stays open.
        match message_event(message, self.ws.inner.data_type) {
            Ok(event) => self.ws.guard("on_message", |h, ws| h.on_message(ws, event)),
            Err(info) => self.ws.guard("on_error", |h, ws| {
                h.on_error(ws, ErrorEvent::new(vec![info]))
            }),
        }
    }

    fn on_end(self, ending: Ending) {
        let ws = self.ws;
        let (error, event) = end_events(&ending);
        if let Some(info) = error {
            ws.guard("on_error", |h, ws| {
                h.on_error(ws, ErrorEvent::new(vec![info]))
            });
        }
        ws.guard("on_terminate", |h, ws| h.on_terminate(ws, event));
        ws.inner.ended.send_replace(true);
    }
}

impl<H: ClientHandler> Clone for WebSocket<H> {
    fn clone(&self) -> Self {
        WebSocket {
            inner: self.inner.clone(),
        }
    }
}

impl<H: ClientHandler> PartialEq for WebSocket<H> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<H: ClientHandler> Eq for WebSocket<H> {}

impl<H: ClientHandler> fmt::Debug for WebSocket<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("id", &self.id())
            .field("url", &self.url())
            .field("status", &self.status())
            .finish()
    }
}

//! `WebSocket`: a client socket (4D's `4D.WebSocket`), on the same driver as the server.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use tokio::sync::{oneshot, watch, Notify};

use super::connect::{establish, request_headers, Established, Target};
use super::reconnect::{Ending as Retried, Reconnect};
use super::{ClientHandler, ClientOptions};
use crate::common::{next_id, Compress, Incoming, Status};
use crate::conn::{self, Callbacks, DriverConfig, Ending, Shared, Stream};
use crate::error::{Error, ErrorKind};
use crate::event::{ErrorEvent, ErrorInfo, OpenEvent, ReconnectEvent, TerminateEvent};
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
/// **Reconnection** ([`ClientOptions::reconnect`]): when a connection ends, or an attempt
/// fails, for a reason the policy retries, the socket waits and connects again to the same
/// URL, as often as the policy allows. The 4D contract holds for each connection — `on_open`
/// … `on_terminate` (a failed attempt: `on_error`, then `on_terminate` with 1006) — and
/// [`ClientHandler::on_reconnect`] says when the next attempt comes. Meanwhile the socket is
/// `Connecting` and [`send`](Self::send) fails with [`ErrorKind::NotConnected`]: nothing is
/// queued for a connection that may never come (send from `on_open` to resume). The socket
/// keeps its [`id`](Self::id) and [`url`](Self::url). [`terminate`](Self::terminate) stops
/// reconnecting; [`closed`](Self::closed) resolves once no connection will follow. Only
/// sockets opened with [`new`](Self::new) retry their first attempt; [`connect`](Self::connect)
/// returns its error.
///
/// **HTTP/2** ([`ClientOptions::http2`]): sockets to one origin (with the same proxy and TLS
/// configuration) share one HTTP/2 connection, each on a stream of its own; a stream's end or
/// reset ends that socket alone. A shared connection that drops ends each of its sockets with
/// 1006, and those that reconnect share the next connection. The connection stays open, idle,
/// until the server closes it.
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
    /// The current connection's core: one per connection, replaced when reconnecting.
    core: RwLock<Arc<Core>>,
    id: u64,
    url: String,
    handler: H,
    data_type: DataType,
    /// The subprotocols offered.
    protocols: Vec<String>,
    /// The index in `protocols` of the one the server chose for the current connection;
    /// `NO_PROTOCOL` when none.
    protocol: AtomicUsize,
    /// Set by `terminate`: no more reconnection.
    stopped: AtomicBool,
    /// Wakes a wait between reconnection attempts when `terminate` is called.
    stop: Notify,
    /// True once the last `on_terminate` has run and no reconnection follows.
    ended: watch::Sender<bool>,
}

const NO_PROTOCOL: usize = usize::MAX;

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
        runtime.spawn(ws.clone().run(plan, None));
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
    /// already). Same errors as [`connect`](Self::connect), but for DNS, TCP and TLS. A redirect
    /// is not followed (it would need a connection ferrosock opens): the 3xx is an
    /// [`ErrorKind::Handshake`] error with its status. Nor can such a socket reconnect.
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
        if over.is_some() && options.reconnect.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a socket over the application's own stream cannot reconnect: leave ClientOptions::reconnect unset",
            ));
        }
        let (ws, plan) = WebSocket::prepare(url, handler, options)?;
        match establish(&plan.target, &plan.headers, &plan.options, over).await {
            Ok(established) => {
                // on_open runs before `connect` returns.
                let core = ws.core();
                let config = ws.open(&established, &plan.options, &core);
                tokio::spawn(ws.clone().run(plan, Some((established, config, core))));
                Ok(ws)
            }
            Err(err) => {
                ws.core().shared().finish();
                ws.inner.ended.send_replace(true);
                Err(err)
            }
        }
    }

    /// The socket's life: its connections in turn, as long as the reconnection policy wants
    /// another, then `ended`. `first` is a connection `connect` already opened.
    async fn run(self, plan: Plan, first: Option<(Established, DriverConfig, Arc<Core>)>) {
        // `closed()` resolves however this ends, a panic or a runtime shutdown included.
        let _ended = EndedOnDrop(&self.inner.ended);
        let mut first = first;
        let mut attempt = 0u32;
        loop {
            let core = self.core();
            let opened_at = Instant::now();
            let ending = match first.take() {
                Some((established, config, core)) => {
                    Ended::Closed(self.drive(established, config, core).await)
                }
                None => match establish(&plan.target, &plan.headers, &plan.options, None).await {
                    Ok(established) => {
                        let config = self.open(&established, &plan.options, &core);
                        Ended::Closed(self.drive(established, config, core).await)
                    }
                    Err(err) => {
                        self.connection_failed(&err, &core);
                        Ended::Failed(err)
                    }
                },
            };
            let Some(policy) = &plan.options.reconnect else {
                break;
            };
            // A connection that stayed open resets the count; one cut at once does not, so
            // that a server that accepts and drops every connection still meets the backoff
            // and the attempt limit.
            if matches!(ending, Ended::Closed(_)) && opened_at.elapsed() >= policy.stable_after() {
                attempt = 0;
            }
            let retried = match &ending {
                Ended::Closed(code) => Retried::Closed(*code),
                Ended::Failed(err) => Retried::Failed(err),
            };
            if self.inner.stopped.load(Ordering::Acquire) || !self.retries(policy, &retried) {
                break;
            }
            attempt = attempt.saturating_add(1);
            if policy.max_attempts.is_some_and(|max| attempt > max) {
                break;
            }
            let (delay, cause) = match &ending {
                Ended::Closed(code) => (policy.delay(attempt, None), format!("closed with {code}")),
                Ended::Failed(err) => (
                    policy.delay(attempt, err.retry_after()),
                    crate::error::chain(err),
                ),
            };
            // A new connection's core: `Connecting` from here.
            let next = Arc::new(Core::new(
                self.inner.id,
                Role::Client,
                Status::Connecting,
                &plan.options.limits,
                None,
            ));
            *self.inner.core.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
            self.inner.protocol.store(NO_PROTOCOL, Ordering::Release);
            // `terminate` may have come since the check above, before the swap.
            if self.inner.stopped.load(Ordering::Acquire) {
                next.shared().finish();
                break;
            }
            tracing::debug!(id = self.inner.id, attempt, ?delay, %cause, "reconnecting");
            let event = ReconnectEvent::new(attempt, delay, cause);
            next.guard_final("on_reconnect", || {
                self.inner.handler.on_reconnect(&self, event)
            });
            let stopped = self.inner.stop.notified();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped => {}
            }
            if self.inner.stopped.load(Ordering::Acquire) {
                next.shared().finish();
                break;
            }
        }
    }

    /// The policy's decision; a rule of the application's that panics retries nothing.
    fn retries(&self, policy: &Reconnect, ending: &Retried<'_>) -> bool {
        let mut wanted = false;
        if let Err(cause) = crate::handle::guarded("the reconnection rule (retry_if)", || {
            wanted = policy.wants(ending);
        }) {
            tracing::error!(id = self.inner.id, "{cause}: no reconnection");
        }
        wanted
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
        let id = next_id();
        let core = Core::new(id, Role::Client, Status::Connecting, &options.limits, None);
        let ws = WebSocket {
            inner: Arc::new(ClientInner {
                core: RwLock::new(Arc::new(core)),
                id,
                url: url.to_owned(),
                data_type: handler.data_type(),
                handler,
                protocols: options.protocols.clone(),
                protocol: AtomicUsize::new(NO_PROTOCOL),
                stopped: AtomicBool::new(false),
                stop: Notify::new(),
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
    fn open(
        &self,
        established: &Established,
        options: &ClientOptions,
        core: &Core,
    ) -> DriverConfig {
        // Before `Connected`: a send from on_open already goes the compressing way.
        core.negotiated(established.deflate, &options.deflate);
        let chosen = established
            .protocol
            .as_ref()
            .and_then(|chosen| self.inner.protocols.iter().position(|p| p == chosen));
        self.inner
            .protocol
            .store(chosen.unwrap_or(NO_PROTOCOL), Ordering::Release);
        core.shared().set_connected();
        self.guard("on_open", |h, ws| h.on_open(ws, OpenEvent::new()));
        DriverConfig::new(Role::Client, &options.limits)
    }

    /// Runs a connection to its end; returns its close code.
    async fn drive(&self, established: Established, config: DriverConfig, core: Arc<Core>) -> u16 {
        let Established {
            stream, leftover, ..
        } = established;
        let (code, ended) = oneshot::channel();
        let callbacks = ClientCallbacks {
            ws: self.clone(),
            core,
            code: Some(code),
        };
        conn::run(stream, leftover, config, callbacks).await;
        ended.await.unwrap_or(CloseCode::ABNORMAL.0)
    }

    /// An attempt failed: `on_error`, then `on_terminate` with 1006.
    fn connection_failed(&self, err: &Error, core: &Core) {
        core.shared().finish();
        let cause = crate::error::chain(err);
        let info = ErrorInfo::close(CloseCode::ABNORMAL, Some(&cause));
        core.guard_final("on_error", || {
            self.inner
                .handler
                .on_error(self, ErrorEvent::new(vec![info]))
        });
        let event = TerminateEvent::new(CloseCode::ABNORMAL, "", false);
        core.guard_final("on_terminate", || {
            self.inner.handler.on_terminate(self, event)
        });
    }

    /// The current connection's core.
    fn core(&self) -> Arc<Core> {
        self.core_ref().clone()
    }

    fn core_ref(&self) -> RwLockReadGuard<'_, Arc<Core>> {
        self.inner.core.read().unwrap_or_else(|e| e.into_inner())
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
    ///
    /// A reconnecting socket keeps its id across connections.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// `Connecting`, `Connected`, `Closing` or `Closed`.
    ///
    /// A socket waiting to reconnect is `Connecting`.
    pub fn status(&self) -> Status {
        self.core_ref().status()
    }

    /// Exactly the URL given to `new` or `connect`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The subprotocol the server chose among those offered
    /// ([`ClientOptions::protocols`](crate::ClientOptions::protocols)); `None` when it chose
    /// none, and while the socket is still connecting. A server that chooses one the client
    /// did not offer fails the connection (an [`ErrorKind::Handshake`] error). A reconnected
    /// socket says what its current connection agreed.
    pub fn protocol(&self) -> Option<&str> {
        let index = self.inner.protocol.load(Ordering::Acquire);
        self.inner.protocols.get(index).map(String::as_str)
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
        self.core_ref().compression()
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
        self.core_ref().send(message.into(), compress)
    }

    /// The bytes queued on this socket and not yet written, as its budget
    /// ([`Limits::max_outgoing_bytes`](crate::Limits::max_outgoing_bytes)) counts them: each
    /// message's payload (compressed, once compressed) plus
    /// [`QUEUED_MESSAGE_OVERHEAD`](crate::memory::QUEUED_MESSAGE_OVERHEAD). The browser's
    /// `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.core_ref().buffered_amount()
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
        let core = self.core();
        core.writable(bytes).await;
    }

    /// Closes the connection normally (1000): a close frame, then the server's close frame and
    /// its TCP close are awaited. Called while connecting, it closes as soon as the connection
    /// is open. Does nothing if already closing. It also stops a reconnecting socket: no
    /// attempt follows, and one awaited is called off (its socket `Closed` at once).
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
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.stop.notify_one();
        self.core_ref().close(code, reason, None);
    }

    /// Runs a callback; a panic fails the connection with 1011 and is reported at its end.
    fn guard(&self, callback: &str, f: impl FnOnce(&H, &Self)) {
        let core = self.core();
        core.guard(callback, || f(&self.inner.handler, self));
    }
}

/// Plugs a client socket's handler into the driver.
struct ClientCallbacks<H: ClientHandler> {
    ws: WebSocket<H>,
    /// This connection's core.
    core: Arc<Core>,
    /// Where the close code goes, for the reconnection policy.
    code: Option<oneshot::Sender<u16>>,
}

impl<H: ClientHandler> Callbacks for ClientCallbacks<H> {
    fn shared(&self) -> &Shared {
        self.core.shared()
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
        if let Some(code) = self.code {
            let _ = code.send(ending.code.0);
        }
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

/// Sets `ended` when dropped: at the end of `run`, however it ends.
struct EndedOnDrop<'a>(&'a watch::Sender<bool>);

impl Drop for EndedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// How one connection of a socket ended.
enum Ended {
    Closed(u16),
    Failed(Error),
}

//! `WebSocketServer`: WebSocket endpoints attached to a [`WebServer`], and their registry of
//! connections.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use http::HeaderValue;
use hyper::body::Incoming as IncomingBody;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{watch, Notify};

use super::topics::Prepared;
use super::web_server::{switching_protocols, text_response, Body, Route, WebInner};
use super::{ConnectionHandler, Request, ServerHandler, WebServer, WebSocketConnection};
use crate::broker::{Broker, BrokerInbox, BrokerNews, Channel, Envelope};
use crate::conn::{self, next_id, Callbacks, DriverConfig, Ending, Incoming, Stream};
use crate::error::{panic_message, Error, ErrorKind};
use crate::event::{
    ConnectionEvent, ErrorEvent, ErrorInfo, MessageEvent, OpenEvent, ServerTerminateEvent,
    TerminateEvent,
};
use crate::limits::Limits;
use crate::message::{DataType, Message};
use crate::proto::deflate::{Negotiated, PerMessageDeflate};
use crate::proto::{CloseCode, OpCode, Role};

/// Options of a [`WebSocketServer`] (4D's `options` object, plus limits).
///
/// ```
/// use ferrosock::{DataType, Limits, ServerOptions};
/// let options = ServerOptions::default()
///     .path("/chat")
///     .data_type(DataType::Object)
///     .max_connections(1000)
///     .limits(Limits::default().max_message_size(1 << 20));
/// assert_eq!(options.path.as_deref(), Some("/chat"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The path the server answers, e.g. `/chat` (a missing leading `/` is added). `None`: the
    /// catch-all for upgrades that no other server's path matches. Default: `None`.
    pub path: Option<String>,
    /// How received messages are converted for `on_message`. Default: [`DataType::Text`].
    pub data_type: DataType,
    /// Per-connection limits. Default: [`Limits::default()`].
    pub limits: Limits,
    /// The most connections open at once; upgrades beyond it get HTTP 503.
    /// Default: 10 000.
    pub max_connections: usize,
    /// permessage-deflate: clients' offers are accepted by default.
    /// Default: [`PerMessageDeflate::default()`].
    pub deflate: PerMessageDeflate,
    /// Run the handlers' callbacks as blocking code, for handlers that block (a synchronous
    /// database query, a file read, a lock held elsewhere).
    ///
    /// Callbacks normally run on the runtime's I/O threads, inside the connection's task: a
    /// callback that blocks holds up every connection waiting for that thread. With this
    /// option each callback runs under [`tokio::task::block_in_place`]: while it runs, the
    /// thread stops being an I/O thread and the runtime hands that thread's other connections to
    /// another one, so only the blocked connection waits (its reads pause: its own
    /// backpressure). Callbacks of one connection still run one at a time, in order.
    ///
    /// It costs a thread handover per callback, so leave it off for handlers that do not block.
    /// It needs the multi-thread runtime ([`WebSocketServer::new`] fails on a current-thread
    /// one). The server's own `on_open` runs in the caller of `new`, as always.
    /// Default: `false`.
    pub blocking_callbacks: bool,
    /// Carries [`publish`](WebSocketServer::publish) and
    /// [`broadcast`](WebSocketServer::broadcast) to the other nodes serving this endpoint
    /// (see [`crate::broker`]). Default: none, messages reach this server's connections only.
    pub broker: Option<Arc<dyn Broker>>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            path: None,
            data_type: DataType::Text,
            limits: Limits::default(),
            max_connections: 10_000,
            deflate: PerMessageDeflate::default(),
            blocking_callbacks: false,
            broker: None,
        }
    }
}

impl ServerOptions {
    /// Sets [`ServerOptions::path`].
    pub fn path(mut self, path: impl Into<String>) -> ServerOptions {
        self.path = Some(path.into());
        self
    }

    /// Sets [`ServerOptions::data_type`].
    pub fn data_type(mut self, data_type: DataType) -> ServerOptions {
        self.data_type = data_type;
        self
    }

    /// Sets [`ServerOptions::limits`].
    pub fn limits(mut self, limits: Limits) -> ServerOptions {
        self.limits = limits;
        self
    }

    /// Sets [`ServerOptions::max_connections`].
    pub fn max_connections(mut self, max: usize) -> ServerOptions {
        self.max_connections = max;
        self
    }

    /// Sets [`ServerOptions::deflate`] (`PerMessageDeflate::disabled()` declines every offer).
    pub fn deflate(mut self, settings: PerMessageDeflate) -> ServerOptions {
        self.deflate = settings;
        self
    }

    /// Sets [`ServerOptions::blocking_callbacks`].
    ///
    /// ```
    /// use ferrosock::ServerOptions;
    /// // A handler that queries a database synchronously in on_message:
    /// let options = ServerOptions::default().path("/orders").blocking_callbacks(true);
    /// assert!(options.blocking_callbacks);
    /// ```
    pub fn blocking_callbacks(mut self, blocking: bool) -> ServerOptions {
        self.blocking_callbacks = blocking;
        self
    }

    /// Sets [`ServerOptions::broker`].
    pub fn broker(mut self, broker: impl Broker) -> ServerOptions {
        self.broker = Some(Arc::new(broker));
        self
    }
}

/// The subscribers of each topic, by connection id.
type Subscribers<H> = HashMap<String, BTreeMap<u64, WebSocketConnection<H>>>;

/// A WebSocket server (4D's `4D.WebSocketServer`): an endpoint on a running [`WebServer`],
/// sharing its host and port.
///
/// A cheap handle: clones refer to the same server.
///
/// ```no_run
/// # use ferrosock::*;
/// # struct Upper; struct UpperConnection;
/// # impl ServerHandler for Upper { type Connection = UpperConnection;
/// #   fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<UpperConnection> { Some(UpperConnection) } }
/// # impl ConnectionHandler for UpperConnection { type Server = Upper;
/// #   fn on_message(&self, ws: &WebSocketConnection<Upper>, e: MessageEvent) { let _ = ws.send(e.data.to_text().to_uppercase()); } }
/// # async fn run() -> Result<(), Error> {
/// let web = WebServer::start(WebServerOptions::default()).await?;
/// let wss = WebSocketServer::new(&web, Upper, ServerOptions::default().path("/upper"))?;
/// // ... later:
/// wss.terminate().await;
/// # Ok(()) }
/// ```
pub struct WebSocketServer<H: ServerHandler> {
    inner: Arc<ServerInner<H>>,
}

struct ServerInner<H: ServerHandler> {
    handler: H,
    path: Option<String>,
    data_type: DataType,
    limits: Limits,
    max_connections: usize,
    deflate: PerMessageDeflate,
    /// [`ServerOptions::blocking_callbacks`].
    blocking_callbacks: bool,
    /// This server's id among the nodes of its broker: copies of its own messages coming back
    /// are recognised by it.
    node: u64,
    broker: Option<Arc<dyn Broker>>,
    /// The subscribers of each topic.
    topics: RwLock<Subscribers<H>>,
    web: Weak<WebInner>,
    runtime: tokio::runtime::Handle,
    /// Open connections by id; ids grow with arrival, so this is arrival order.
    registry: Mutex<BTreeMap<u64, WebSocketConnection<H>>>,
    /// Connections from `on_connection` to the end of `on_terminate`, registered or not yet.
    /// Invariant: `active <= max_connections`.
    active: AtomicUsize,
    all_ended: Notify,
    terminated: AtomicBool,
    done: watch::Sender<bool>,
}

impl<H: ServerHandler> WebSocketServer<H> {
    /// Creates a WebSocket server on `web` and starts it: `handler.on_open` runs before this
    /// returns.
    ///
    /// Fails with [`ErrorKind::NotStarted`] if the web server is not running and with
    /// [`ErrorKind::PathInUse`] if another WebSocket server has the same path (or is the
    /// catch-all too) on it.
    pub fn new(web: &WebServer, handler: H, options: ServerOptions) -> Result<Self, Error> {
        let path = normalize_path(options.path.as_deref());
        if options.max_connections == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max_connections must be at least 1",
            ));
        }
        if options.blocking_callbacks
            && web.runtime().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "blocking_callbacks needs the multi-thread runtime: a current-thread runtime \
                 has no other thread to hand the connections to",
            ));
        }
        let inner = Arc::new(ServerInner {
            handler,
            path,
            data_type: options.data_type,
            limits: options.limits,
            max_connections: options.max_connections,
            deflate: options.deflate,
            blocking_callbacks: options.blocking_callbacks,
            node: rand::random(),
            broker: options.broker,
            topics: RwLock::new(HashMap::new()),
            web: Arc::downgrade(web.inner()),
            runtime: web.runtime().clone(),
            registry: Mutex::new(BTreeMap::new()),
            active: AtomicUsize::new(0),
            all_ended: Notify::new(),
            terminated: AtomicBool::new(false),
            done: watch::Sender::new(false),
        });
        web.inner().register(inner.path.clone(), inner.clone())?;
        if let Some(broker) = &inner.broker {
            broker.start(ServerInner::inbox(&inner));
        }
        let wss = WebSocketServer { inner };
        // In the caller's context, which may not be a runtime thread: never block_in_place.
        wss.guard_here("on_open", |h, wss| h.on_open(wss, OpenEvent::new()));
        Ok(wss)
    }

    /// A snapshot of the open connections, in order of arrival.
    pub fn connections(&self) -> Vec<WebSocketConnection<H>> {
        self.inner.registry().values().cloned().collect()
    }

    /// How received messages are converted.
    pub fn data_type(&self) -> DataType {
        self.inner.data_type
    }

    /// The handler given to [`new`](Self::new).
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// The path this server answers, or `None` for the catch-all.
    pub fn path(&self) -> Option<&str> {
        self.inner.path.as_deref()
    }

    /// The per-connection limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// True from the moment [`terminate`](Self::terminate) is called or the web server stops.
    pub fn terminated(&self) -> bool {
        self.inner.terminated.load(Ordering::Acquire)
    }

    /// Stops the server: new upgrades to its path get 404, every connection gets a close frame
    /// (1000), and once every peer has answered (or its close timeout passed) the sockets are
    /// closed, each connection's `on_terminate` runs, then the server's.
    ///
    /// Does not block; await the returned handle to wait for the end. Calling it again returns
    /// a handle on the same termination.
    pub fn terminate(&self) -> Terminating {
        self.inner.terminate(CloseCode::NORMAL, None)
    }

    /// Like [`terminate`](Self::terminate), but after `timeout` the sockets still open are
    /// closed without waiting for their peers. A zero timeout closes every socket at once,
    /// without close frames: the peers see 1006.
    pub fn terminate_with_timeout(&self, timeout: Duration) -> Terminating {
        self.inner.terminate(CloseCode::NORMAL, Some(timeout))
    }

    /// Sends `message` to every connection subscribed to `topic`
    /// ([`WebSocketConnection::subscribe`]) on this server and, through the
    /// [broker](ServerOptions::broker), on every other node. Returns how many connections of
    /// this server it was queued for.
    ///
    /// The frame is built once (and compressed once per window size, for connections without
    /// context takeover) and shared by every subscriber. Never waits: a subscriber whose byte
    /// budget is full misses the message, and its budget policy applies to it alone
    /// ([`Limits::max_outgoing_bytes`]). Callable from any thread or task, inside callbacks or
    /// not. Messages published from one thread reach each subscriber in that order.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # fn demo<H: ServerHandler>(wss: &WebSocketServer<H>) {
    /// let delivered = wss.publish("prices/EURUSD", "1.0842");
    /// # }
    /// ```
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        let prepared = Prepared::new(message.into());
        let delivered = self.inner.deliver(Channel::Topic(topic), &prepared, None);
        self.inner.relay(Channel::Topic(topic), &prepared);
        delivered
    }

    /// Sends `message` to every connection of this server (and of the other nodes, through the
    /// broker) but the one whose id is `except` on this server: the chat pattern, where a
    /// member's message goes to everyone else. Returns how many connections of this server it
    /// was queued for. Same guarantees as [`publish`](Self::publish).
    pub fn broadcast(&self, message: impl Into<Message>, except: Option<u64>) -> usize {
        let prepared = Prepared::new(message.into());
        let delivered = self.inner.deliver(Channel::All, &prepared, except);
        self.inner.relay(Channel::All, &prepared);
        delivered
    }

    pub(crate) fn add_subscriber(&self, topic: &str, connection: &WebSocketConnection<H>) {
        self.inner.add_subscriber(topic, connection);
    }

    pub(crate) fn remove_subscriber(&self, topic: &str, id: u64) {
        self.inner.remove_subscriber(topic, id);
    }

    /// The topics with at least one subscriber on this server, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.inner.topics_read().keys().cloned().collect();
        topics.sort();
        topics
    }

    /// Runs a server callback; a panic in it is reported through `on_error`.
    fn guard(&self, callback: &str, f: impl FnOnce(&H, &Self)) {
        self.inner.call(|| self.guard_here(callback, f));
    }

    /// Reports a server-level error through the handler's `on_error`.
    fn report(&self, info: ErrorInfo) {
        self.guard("on_error", |h, wss| {
            h.on_error(wss, ErrorEvent::new(vec![info]))
        });
    }

    /// An outage goes to the handler's `on_error`; a recovery to the log.
    fn broker_news(&self, news: BrokerNews) {
        match news {
            BrokerNews::Outage(what) => {
                tracing::warn!(path = ?self.path(), "broker unreachable: {what}");
                self.report(ErrorInfo::new(
                    ErrorInfo::BROKER_UNREACHABLE,
                    format!("broker unreachable: {what}; local delivery goes on"),
                    ErrorInfo::BROKER,
                ));
            }
            BrokerNews::Recovered => {
                tracing::info!(path = ?self.path(), "broker reachable again");
            }
        }
    }

    /// [`guard`](Self::guard) on the calling thread, whatever `blocking_callbacks` says.
    fn guard_here(&self, callback: &str, f: impl FnOnce(&H, &Self)) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(&self.inner.handler, self))) {
            let message = format!("{callback} panicked: {}", panic_message(&*panic));
            tracing::error!(path = ?self.path(), "{message}");
            let event = ErrorEvent::new(vec![ErrorInfo::new(
                ErrorInfo::CALLBACK_PANICKED,
                message,
                ErrorInfo::FERROSOCK,
            )]);
            let report = || self.inner.handler.on_error(self, event);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(report)) {
                tracing::error!(path = ?self.path(), "on_error panicked: {}", panic_message(&*panic));
            }
        }
    }
}

impl<H: ServerHandler> ServerInner<H> {
    fn topics_read(&self) -> RwLockReadGuard<'_, Subscribers<H>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn topics_write(&self) -> RwLockWriteGuard<'_, Subscribers<H>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a subscriber (the connection records the topic on its side).
    fn add_subscriber(&self, topic: &str, connection: &WebSocketConnection<H>) {
        self.topics_write()
            .entry(topic.to_owned())
            .or_default()
            .insert(connection.id(), connection.clone());
    }

    /// Removes a subscriber; a topic without subscribers is forgotten.
    fn remove_subscriber(&self, topic: &str, id: u64) {
        let mut topics = self.topics_write();
        if let Some(subscribers) = topics.get_mut(topic) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                topics.remove(topic);
            }
        }
    }

    /// Queues `prepared` on this server's connections of `channel`, but `except`.
    fn deliver(&self, channel: Channel<'_>, prepared: &Prepared, except: Option<u64>) -> usize {
        let send =
            |connection: &WebSocketConnection<H>| prepared.send(connection.shared(), &self.deflate);
        match channel {
            Channel::Topic(topic) => self.topics_read().get(topic).map_or(0, |subscribers| {
                subscribers
                    .values()
                    .filter(|c| Some(c.id()) != except)
                    .map(send)
                    .filter(|sent| *sent)
                    .count()
            }),
            Channel::All => self
                .registry()
                .values()
                .filter(|c| Some(c.id()) != except)
                .map(send)
                .filter(|sent| *sent)
                .count(),
        }
    }

    /// Hands a message published here to the broker, for the other nodes.
    fn relay(&self, channel: Channel<'_>, prepared: &Prepared) {
        if let Some(broker) = &self.broker {
            let (opcode, payload) = prepared.parts();
            let envelope = Envelope {
                origin: self.node,
                binary: opcode == OpCode::Binary,
                payload,
            };
            broker.publish(channel, envelope.encode());
        }
    }

    /// The inbox this server gives its broker. It holds the server weakly: a broker outliving
    /// its server delivers nowhere.
    fn inbox(inner: &Arc<Self>) -> BrokerInbox {
        let (deliver_to, report_to) = (Arc::downgrade(inner), Arc::downgrade(inner));
        BrokerInbox::new(
            move |channel, payload| {
                if let Some(inner) = deliver_to.upgrade() {
                    inner.deliver_remote(channel, payload);
                }
            },
            move |news| {
                if let Some(inner) = report_to.upgrade() {
                    WebSocketServer { inner }.broker_news(news);
                }
            },
            inner.runtime.clone(),
        )
    }

    /// A message another node published: to this server's connections of `channel`.
    fn deliver_remote(&self, channel: Channel<'_>, payload: &[u8]) {
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(path = ?self.path, "a broker message that is not ferrosock's: dropped");
            return;
        };
        if envelope.origin == self.node {
            return; // this server delivered it when it was published
        }
        let data = Bytes::copy_from_slice(envelope.payload);
        let message = if envelope.binary {
            Message::Blob(data)
        } else {
            match ByteString::try_from(data) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    tracing::warn!(path = ?self.path, "a broker text message that is not UTF-8: dropped");
                    return;
                }
            }
        };
        self.deliver(channel, &Prepared::new(message), None);
    }

    /// Runs a callback, as blocking code if [`ServerOptions::blocking_callbacks`] says so.
    fn call<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.blocking_callbacks {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }

    fn registry(&self) -> MutexGuard<'_, BTreeMap<u64, WebSocketConnection<H>>> {
        // Updates are single inserts and removes: a panic elsewhere cannot leave it half-done.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn terminate(self: &Arc<Self>, code: CloseCode, timeout: Option<Duration>) -> Terminating {
        let handle = Terminating {
            done: self.done.subscribe(),
        };
        if self.terminated.swap(true, Ordering::AcqRel) {
            return handle;
        }
        if let Some(web) = self.web.upgrade() {
            let route: Arc<dyn Route> = self.clone();
            web.unregister(self.path.as_deref(), &route);
        }
        // Taken after `terminated` is set: a connection registering from now on sees the flag
        // (both happen under the registry lock), one registered before is in this snapshot.
        let connections: Vec<_> = self.registry().values().cloned().collect();
        let immediate = timeout == Some(Duration::ZERO);
        for connection in &connections {
            if immediate {
                connection.abort();
            } else {
                // The termination's timeout governs each close handshake, longer or shorter
                // than the connections' own close timeout.
                connection.shared().command(conn::Command::Close {
                    code,
                    reason: String::new(),
                    timeout,
                });
            }
        }
        let inner = self.clone();
        self.runtime.spawn(async move {
            match timeout {
                Some(limit) if !limit.is_zero() => {
                    if tokio::time::timeout(limit, inner.all_ended())
                        .await
                        .is_err()
                    {
                        let stragglers: Vec<_> = inner.registry().values().cloned().collect();
                        for connection in stragglers {
                            connection.abort();
                        }
                        inner.all_ended().await;
                    }
                }
                _ => inner.all_ended().await,
            }
            let wss = WebSocketServer { inner };
            wss.guard("on_terminate", |h, wss| {
                h.on_terminate(wss, ServerTerminateEvent::new())
            });
            wss.inner.done.send_replace(true);
        });
        handle
    }

    /// Waits until no connection is active.
    async fn all_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl<H: ServerHandler> Route for ServerInner<H> {
    fn upgrade(
        self: Arc<Self>,
        mut request: http::Request<IncomingBody>,
        remote: SocketAddr,
        accept: HeaderValue,
    ) -> http::Response<Body> {
        let wss = WebSocketServer { inner: self };
        if wss.terminated() {
            return text_response(http::StatusCode::NOT_FOUND, "Not Found");
        }
        let Some(slot) = Slot::reserve(&wss.inner) else {
            wss.report(ErrorInfo::new(
                ErrorInfo::SERVER_FULL,
                format!(
                    "client {} refused with HTTP 503: {} connections are open (max_connections)",
                    remote.ip().to_canonical(),
                    wss.inner.max_connections
                ),
                ErrorInfo::FERROSOCK,
            ));
            return text_response(http::StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        };
        let event = ConnectionEvent {
            request: Request::from_http(&request, remote),
        };
        let mut handler = None;
        wss.guard("on_connection", |h, wss| {
            handler = Some(h.on_connection(wss, event))
        });
        let handler = match handler {
            Some(Some(handler)) => handler,
            Some(None) => return text_response(http::StatusCode::FORBIDDEN, "Forbidden"),
            None => {
                return text_response(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                )
            }
        };
        let offers = request
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS);
        let (deflate, extensions) = match wss
            .inner
            .deflate
            .server_accept(offers.iter().map(HeaderValue::as_bytes))
        {
            Some((agreed, response)) => (Some(agreed), Some(response)),
            None => (None, None),
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let connection = WebSocketConnection::new(next_id(), handler, wss.clone(), deflate);
        connection.shared().set_deflate(deflate.as_ref());
        wss.inner
            .runtime
            .spawn(run_connection(connection, on_upgrade, slot, deflate));
        switching_protocols(accept, extensions)
    }

    fn shutdown(self: Arc<Self>, grace: Duration) -> Terminating {
        self.terminate(CloseCode::GOING_AWAY, Some(grace))
    }
}

/// After the 101: waits for hyper to hand the socket over, registers the connection, runs
/// `on_open` and the driver.
async fn run_connection<H: ServerHandler>(
    connection: WebSocketConnection<H>,
    on_upgrade: OnUpgrade,
    slot: Slot<H>,
    deflate: Option<Negotiated>,
) {
    let wss = connection.wss().clone();
    let failed = |why: String| {
        tracing::debug!(id = connection.id(), "{why}");
        wss.report(ErrorInfo::new(
            ErrorInfo::UPGRADE_FAILED,
            why,
            ErrorInfo::FERROSOCK,
        ));
    };
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            return failed(format!(
                "an accepted upgrade did not complete (the 101 could not be sent): {err}"
            ))
        }
    };
    // The web server serves every connection as `TokioIo<Stream>`; taking it back out
    // of hyper's `Upgraded` box removes a dynamic call from every read and write.
    let (stream, read_buf) = match upgraded.downcast::<TokioIo<Stream>>() {
        Ok(parts) => (parts.io.into_inner(), BytesMut::from(&parts.read_buf[..])),
        Err(_) => return failed("an upgraded connection of an unexpected type: closed".to_owned()),
    };
    {
        let mut registry = wss.inner.registry();
        if wss.terminated() {
            // Terminated while the 101 was on its way: this connection never opens.
            return;
        }
        registry.insert(connection.id(), connection.clone());
    }
    let config =
        DriverConfig::new(Role::Server, &wss.inner.limits).deflate(deflate, &wss.inner.deflate);
    let mut callbacks = ServerCallbacks {
        connection,
        data_type: wss.inner.data_type,
        _slot: slot,
    };
    callbacks.guard("on_open", |h, ws| h.on_open(ws, OpenEvent::new()));
    conn::run(stream, read_buf, config, callbacks).await;
}

/// Plugs a connection's handler into the driver.
struct ServerCallbacks<H: ServerHandler> {
    connection: WebSocketConnection<H>,
    data_type: DataType,
    /// Released (dropped) after `on_terminate`, so the server's `on_terminate` comes after.
    _slot: Slot<H>,
}

impl<H: ServerHandler> ServerCallbacks<H> {
    /// Runs a connection callback. A panic fails the connection with 1011; the cause is
    /// reported through `on_error` when the connection ends.
    fn guard(&mut self, callback: &str, f: impl FnOnce(&H::Connection, &WebSocketConnection<H>)) {
        let connection = &self.connection;
        let call = || catch_unwind(AssertUnwindSafe(|| f(connection.handler(), connection)));
        if let Err(panic) = connection.wss().inner.call(call) {
            let cause = format!("{callback} panicked: {}", panic_message(&*panic));
            tracing::error!(id = connection.id(), "{cause}");
            connection.fail_internal(cause);
        }
    }

    /// Runs a callback after the end, where nothing is left to fail.
    fn guard_final(&self, callback: &str, f: impl FnOnce(&H::Connection, &WebSocketConnection<H>)) {
        let connection = &self.connection;
        let call = || catch_unwind(AssertUnwindSafe(|| f(connection.handler(), connection)));
        if let Err(panic) = connection.wss().inner.call(call) {
            tracing::error!(
                id = connection.id(),
                "{callback} panicked: {}",
                panic_message(&*panic)
            );
        }
    }
}

impl<H: ServerHandler> Callbacks for ServerCallbacks<H> {
    fn shared(&self) -> &conn::Shared {
        self.connection.shared()
    }

    fn on_message(&mut self, message: Incoming) {
        match Message::convert(message, self.data_type) {
            Ok(data) => self.guard("on_message", |h, ws| {
                h.on_message(ws, MessageEvent { data })
            }),
            Err(err) => {
                let info = ErrorInfo::new(
                    ErrorInfo::INVALID_JSON,
                    format!("message is not valid JSON: {err}"),
                    ErrorInfo::JSON,
                );
                self.guard("on_error", |h, ws| {
                    h.on_error(ws, ErrorEvent::new(vec![info]))
                });
            }
        }
    }

    fn on_end(self, ending: Ending) {
        let wss = self.connection.wss();
        wss.inner.registry().remove(&self.connection.id());
        self.connection.leave_topics();
        if ending.is_error() {
            let info = ErrorInfo::close(ending.code, ending.cause.as_deref());
            self.guard_final("on_error", |h, ws| {
                h.on_error(ws, ErrorEvent::new(vec![info]))
            });
        }
        let event = TerminateEvent::new(ending.code, &ending.reason, ending.was_clean);
        self.guard_final("on_terminate", |h, ws| h.on_terminate(ws, event));
    }
}

/// One of a server's `max_connections` places, held from `on_connection` to `on_terminate`.
struct Slot<H: ServerHandler> {
    server: Arc<ServerInner<H>>,
}

impl<H: ServerHandler> Slot<H> {
    fn reserve(server: &Arc<ServerInner<H>>) -> Option<Slot<H>> {
        server
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < server.max_connections).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            server: server.clone(),
        })
    }
}

impl<H: ServerHandler> Drop for Slot<H> {
    fn drop(&mut self) {
        if self.server.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.server.all_ended.notify_waiters();
        }
    }
}

/// A handle on a server's termination (or a web server's stop). Await it to wait until every
/// connection has ended and `on_terminate` has run; dropping it changes nothing.
#[derive(Clone, Debug)]
pub struct Terminating {
    done: watch::Receiver<bool>,
}

impl Terminating {
    /// Whether the termination is complete.
    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }
}

impl IntoFuture for Terminating {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        Box::pin(async move {
            // An error means the sender is gone: nothing is left to wait for.
            let _ = self.done.wait_for(|done| *done).await;
        })
    }
}

/// `chat` → `/chat`; `""` → catch-all; a query is ignored.
fn normalize_path(path: Option<&str>) -> Option<String> {
    let path = path?.split('?').next().unwrap_or_default().trim();
    if path.is_empty() {
        return None;
    }
    Some(if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    })
}

impl<H: ServerHandler> Clone for WebSocketServer<H> {
    fn clone(&self) -> Self {
        WebSocketServer {
            inner: self.inner.clone(),
        }
    }
}

impl<H: ServerHandler> fmt::Debug for WebSocketServer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketServer")
            .field("path", &self.path())
            .field("data_type", &self.data_type())
            .field("connections", &self.inner.registry().len())
            .field("terminated", &self.terminated())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path(Some("chat")), Some("/chat".to_owned()));
        assert_eq!(normalize_path(Some("/chat?x=1")), Some("/chat".to_owned()));
        assert_eq!(normalize_path(Some("")), None);
        assert_eq!(normalize_path(None), None);
    }
}

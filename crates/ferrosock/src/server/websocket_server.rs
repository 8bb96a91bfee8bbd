//! `WebSocketServer`: the handle of a WebSocket endpoint (4D's `4D.WebSocketServer`) and its
//! public API. Its jobs each have a home beside it: options ([`super::options`]), the registry
//! of connections and topics ([`super::registry`]), the broker relay ([`super::relay`]),
//! termination ([`super::termination`]), and the answer to upgrades with the connections'
//! callbacks ([`super::endpoint`]). It knows no HTTP layer: [`super::mount`] attaches it to a
//! [`WebServer`](crate::WebServer), and [`accept`](WebSocketServer::accept) serves a stream the
//! application accepted itself.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::options::{normalize_path, ServerOptions};
use super::registry::Registry;
use super::termination::Terminating;
use super::upgrade::Endpoint;
use super::{ServerHandler, WebSocketConnection};
use crate::broker::{Broker, Channel};
use crate::conn::Prepared;
use crate::error::{Error, ErrorKind};
use crate::event::{ErrorEvent, ErrorInfo, OpenEvent};
use crate::handle::guarded;
use crate::limits::Limits;
use crate::message::{DataType, Message};
use crate::proto::deflate::PerMessageDeflate;
use crate::proto::CloseCode;
use crate::stats::{Counters, ServerStats, StatsHandle};

/// A WebSocket server (4D's `4D.WebSocketServer`): an endpoint on a running
/// [`WebServer`](crate::WebServer), sharing its host and port, or serving the streams the
/// application accepts itself ([`detached`](WebSocketServer::detached)).
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

pub(super) struct ServerInner<H: ServerHandler> {
    pub(super) handler: H,
    pub(super) path: Option<String>,
    pub(super) data_type: DataType,
    pub(super) limits: Limits,
    pub(super) deflate: PerMessageDeflate,
    /// [`ServerOptions::protocols`].
    pub(super) protocols: Vec<String>,
    /// [`ServerOptions::blocking_callbacks`].
    pub(super) blocking_callbacks: bool,
    /// This server's id among the nodes of its broker: copies of its own messages coming back
    /// are recognised by it.
    pub(super) node: u64,
    pub(super) broker: Option<Arc<dyn Broker>>,
    pub(super) registry: Arc<Registry<H>>,
    pub(super) runtime: tokio::runtime::Handle,
    /// Detaches the server from the HTTP layer it is mounted on, at its termination.
    pub(super) detach: Mutex<Option<Box<dyn FnOnce() + Send + Sync>>>,
    pub(super) terminated: AtomicBool,
    pub(super) done: watch::Sender<bool>,
    /// What [`WebSocketServer::stats`] reads.
    pub(crate) stats: Arc<Counters>,
}

impl<H: ServerHandler> WebSocketServer<H> {
    /// A WebSocket server attached to no web server: it serves the streams given to
    /// [`accept`](Self::accept) (a TCP or TLS stream the application accepted, an in-memory
    /// pipe), and is terminated like any other. `handler.on_open` runs before this returns.
    /// Must be called within a tokio runtime, which runs its connections.
    ///
    /// Fails with [`ErrorKind::InvalidArgument`] for `max_connections` 0, or outside a tokio
    /// runtime.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # struct Echo; struct EchoConnection;
    /// # impl ServerHandler for Echo { type Connection = EchoConnection;
    /// #   fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<EchoConnection> { Some(EchoConnection) } }
    /// # impl ConnectionHandler for EchoConnection { type Server = Echo;
    /// #   fn on_message(&self, ws: &WebSocketConnection<Echo>, e: MessageEvent) { let _ = ws.send(e.data); } }
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let wss = WebSocketServer::detached(Echo, ServerOptions::default())?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
    /// loop {
    ///     let (stream, remote) = listener.accept().await?;
    ///     let wss = wss.clone();
    ///     // Reads the upgrade request from the stream, answers it, runs the connection.
    ///     tokio::spawn(async move { wss.accept(stream, remote).await });
    /// }
    /// # }
    /// ```
    pub fn detached(handler: H, options: ServerOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                "WebSocketServer::detached must be called within a tokio runtime",
            )
        })?;
        let wss = WebSocketServer::create(handler, options, runtime)?;
        wss.start();
        Ok(wss)
    }

    /// Checks the options and builds the server, not yet started.
    pub(super) fn create(
        handler: H,
        options: ServerOptions,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, Error> {
        if options.max_connections == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max_connections must be at least 1",
            ));
        }
        crate::request::check_protocols(&options.protocols)?;
        let path = normalize_path(options.path.as_deref());
        let stats = Arc::new(Counters::new(path.clone(), options.broker.is_some()));
        let inner = Arc::new(ServerInner {
            handler,
            stats,
            path,
            data_type: options.data_type,
            limits: options.limits,
            deflate: options.deflate,
            protocols: options.protocols,
            blocking_callbacks: options.blocking_callbacks,
            node: rand::random(),
            broker: options.broker,
            registry: Arc::new(Registry::new(options.max_connections)),
            runtime,
            detach: Mutex::new(None),
            terminated: AtomicBool::new(false),
            done: watch::Sender::new(false),
        });
        Ok(WebSocketServer { inner })
    }

    /// Starts a created server: its broker, then `on_open`, in the caller's context.
    pub(super) fn start(&self) {
        if let Some(broker) = &self.inner.broker {
            broker.start(ServerInner::inbox(&self.inner));
        }
        // In the caller's context, which may not be a runtime thread: never block_in_place.
        self.guard_here("on_open", |h, wss| h.on_open(wss, OpenEvent::new()));
    }

    /// This server as its HTTP layers see it.
    pub(super) fn endpoint(&self) -> Arc<dyn Endpoint> {
        self.inner.clone()
    }

    /// Sets what detaches this server from its HTTP layer when it terminates.
    pub(super) fn on_detach(&self, detach: impl FnOnce() + Send + Sync + 'static) {
        *self.inner.detach.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(detach));
    }

    pub(super) fn from_inner(inner: Arc<ServerInner<H>>) -> Self {
        WebSocketServer { inner }
    }

    pub(super) fn inner(&self) -> &Arc<ServerInner<H>> {
        &self.inner
    }

    /// The permessage-deflate settings connections are accepted with.
    pub(crate) fn deflate_settings(&self) -> &PerMessageDeflate {
        &self.inner.deflate
    }

    /// A snapshot of the open connections, in order of arrival.
    pub fn connections(&self) -> Vec<WebSocketConnection<H>> {
        self.inner.registry.snapshot()
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
        let prepared = prepare(message.into());
        let delivered = self
            .inner
            .registry
            .deliver(Channel::Topic(topic), &prepared, None);
        self.inner.relay(Channel::Topic(topic), &prepared);
        delivered
    }

    /// Sends `message` to every connection of this server (and of the other nodes, through the
    /// broker) but the one whose id is `except` on this server: the chat pattern, where a
    /// member's message goes to everyone else. Returns how many connections of this server it
    /// was queued for. Same guarantees as [`publish`](Self::publish).
    pub fn broadcast(&self, message: impl Into<Message>, except: Option<u64>) -> usize {
        let prepared = prepare(message.into());
        let delivered = self.inner.registry.deliver(Channel::All, &prepared, except);
        self.inner.relay(Channel::All, &prepared);
        delivered
    }

    pub(crate) fn add_subscriber(&self, topic: &str, connection: &WebSocketConnection<H>) {
        if let Some(new_topic) = self.inner.registry.add_subscriber(topic, connection) {
            self.inner.stats.subscription(true, new_topic);
        }
    }

    pub(crate) fn remove_subscriber(&self, topic: &str, id: u64) {
        if let Some(emptied) = self.inner.registry.remove_subscriber(topic, id) {
            self.inner.stats.subscription(false, emptied);
        }
    }

    /// A snapshot of this server's counters: connections, handshakes, messages and bytes each
    /// way, closes by code, and more ([`ServerStats`]). Sums a few dozen atomics: no lock, no
    /// work per connection.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # fn run<H: ServerHandler>(wss: &WebSocketServer<H>) {
    /// let stats = wss.stats();
    /// println!("{} clients, {} messages in", stats.connections, stats.messages_received());
    /// # }
    /// ```
    pub fn stats(&self) -> ServerStats {
        self.stats_handle().snapshot()
    }

    /// A handle on this server's counters, for an exporter: `'static` and of one type
    /// whatever the handler, so that the servers of a process are read together
    /// ([`stats::write_prometheus`](crate::stats::write_prometheus)).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.inner.stats.clone())
    }

    /// The topics with at least one subscriber on this server, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.inner.registry.topics()
    }

    /// Runs a server callback; a panic in it is reported through `on_error`.
    pub(super) fn guard(&self, callback: &str, f: impl FnOnce(&H, &Self)) {
        self.inner.call(|| self.guard_here(callback, f));
    }

    /// Reports a server-level error through the handler's `on_error`.
    pub(super) fn report(&self, info: ErrorInfo) {
        self.guard("on_error", |h, wss| {
            h.on_error(wss, ErrorEvent::new(vec![info]))
        });
    }

    /// [`guard`](Self::guard) on the calling thread, whatever `blocking_callbacks` says.
    pub(super) fn guard_here(&self, callback: &str, f: impl FnOnce(&H, &Self)) {
        if let Err(message) = guarded(callback, || f(&self.inner.handler, self)) {
            tracing::error!(path = ?self.path(), "{message}");
            self.inner.stats.panicked();
            let event = ErrorEvent::new(vec![ErrorInfo::new(
                ErrorInfo::CALLBACK_PANICKED,
                message,
                ErrorInfo::FERROSOCK,
            )]);
            if let Err(message) = guarded("on_error", || self.inner.handler.on_error(self, event)) {
                tracing::error!(path = ?self.path(), "{message}");
            }
        }
    }
}

impl<H: ServerHandler> ServerInner<H> {
    /// Runs a callback, as blocking code if [`ServerOptions::blocking_callbacks`] says so and
    /// this is a multi-thread runtime's thread. On a current-thread runtime the callbacks that
    /// come often are handed to the blocking pool before they get here (`on_connection` by
    /// [`upgrade::decide`](super::upgrade::decide), a connection's by its [`Serial`]); what
    /// remains (an error report) runs in place.
    ///
    /// [`Serial`]: super::serial::Serial
    pub(super) fn call<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.blocking_callbacks && !crate::common::on_current_thread_runtime() {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }
}

/// A message made ready for many connections.
fn prepare(message: Message) -> Prepared {
    let (opcode, payload) = message.into_frame();
    Prepared::new(opcode, payload)
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
            .field("connections", &self.inner.registry.connections().len())
            .field("terminated", &self.terminated())
            .finish()
    }
}

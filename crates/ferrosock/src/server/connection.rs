//! `WebSocketConnection`: the handle of one accepted connection.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ServerHandler, WebSocketServer};
use crate::common::{Compress, Status};
use crate::conn::Shared;
use crate::error::Error;
use crate::handle::Core;
use crate::message::Message;
use crate::proto::deflate::Negotiated;
use crate::proto::{CloseCode, Role};

/// One connection accepted by a [`WebSocketServer`] (4D's `4D.WebSocketConnection`).
///
/// A cheap handle: clones refer to the same connection, and it can be kept and used from any
/// thread (to send from another task, for one).
pub struct WebSocketConnection<H: ServerHandler> {
    inner: Arc<ConnInner<H>>,
}

struct ConnInner<H: ServerHandler> {
    core: Core,
    handler: H::Connection,
    wss: WebSocketServer<H>,
    /// The topics subscribed to; `None` once the connection has ended.
    topics: Mutex<Option<BTreeSet<String>>>,
    /// The subprotocol agreed in the handshake.
    protocol: Option<Box<str>>,
}

impl<H: ServerHandler> WebSocketConnection<H> {
    pub(crate) fn new(
        id: u64,
        handler: H::Connection,
        wss: WebSocketServer<H>,
        compression: Option<Negotiated>,
        protocol: Option<String>,
    ) -> Self {
        let core = Core::new(
            id,
            Role::Server,
            Status::Connected,
            wss.limits(),
            Some(wss.inner().stats.clone()),
        );
        core.negotiated(compression, wss.deflate_settings());
        WebSocketConnection {
            inner: Arc::new(ConnInner {
                core,
                handler,
                wss,
                topics: Mutex::new(Some(BTreeSet::new())),
                protocol: protocol.map(String::into_boxed_str),
            }),
        }
    }

    /// The connection handler that `on_connection` returned.
    pub fn handler(&self) -> &H::Connection {
        &self.inner.handler
    }

    /// The connection's id: unique in the process, shared with client sockets' ids.
    pub fn id(&self) -> u64 {
        self.inner.core.id()
    }

    /// `Connected`, then `Closing` once a close frame is sent or received, then `Closed`.
    pub fn status(&self) -> Status {
        self.inner.core.status()
    }

    /// The server that accepted this connection.
    pub fn wss(&self) -> &WebSocketServer<H> {
        &self.inner.wss
    }

    /// The subprotocol agreed in the opening handshake (ferrosock extension; see
    /// [`ServerOptions::protocols`](crate::ServerOptions::protocols)), or `None`.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.protocol.as_deref()
    }

    /// permessage-deflate as negotiated in the upgrade, or `None` when the client did not
    /// offer it or the server declined.
    pub fn compression(&self) -> Option<Negotiated> {
        self.inner.core.compression()
    }

    /// Sends a message: a `Text` as a text frame, a `Blob` as a binary frame, an `Object` as a
    /// text frame with its JSON. Never blocks: the message is queued for the connection's task.
    ///
    /// Fails with [`ErrorKind::NotConnected`](crate::ErrorKind::NotConnected) unless the connection is `Connected`, and with
    /// [`ErrorKind::BufferFull`](crate::ErrorKind::BufferFull) when the outgoing byte budget would be exceeded (and then,
    /// by default, the connection is closed with 1008; see
    /// [`BackpressurePolicy`](crate::BackpressurePolicy)). Nothing is queued on an error.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.send_with(message, Compress::Auto)
    }

    /// [`send`](Self::send), choosing whether this message is compressed when
    /// permessage-deflate was negotiated (with `Compress::Auto`, messages shorter than the
    /// threshold are not).
    pub fn send_with(&self, message: impl Into<Message>, compress: Compress) -> Result<(), Error> {
        self.inner.core.send(message.into(), compress)
    }

    /// The bytes queued on this connection and not yet written to its socket, as its budget
    /// ([`Limits::max_outgoing_bytes`](crate::Limits::max_outgoing_bytes)) counts them: each
    /// message's payload (compressed, once compressed) plus
    /// [`QUEUED_MESSAGE_OVERHEAD`](crate::memory::QUEUED_MESSAGE_OVERHEAD). Browsers and Node
    /// ws call it `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.inner.core.buffered_amount()
    }

    /// Resolves once a message of `bytes` bytes fits this connection's outgoing budget — its
    /// queue is empty or has room for it — or once the connection is no longer `Connected`
    /// (then a send fails, as it says). uWebSockets calls this moment `drain`. `send` itself
    /// never waits: a producer that must not lose messages awaits this before each send.
    ///
    /// The process-wide cap ([`crate::memory`]) is shared among all connections and not
    /// awaited: a send can still be refused by it.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # async fn feed<H: ServerHandler>(ws: WebSocketConnection<H>, rows: Vec<String>) -> Result<(), Error> {
    /// for row in rows {
    ///     ws.writable(row.len()).await; // a slow reader slows this loop down, not the server
    ///     ws.send(row)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn writable(&self, bytes: usize) {
        self.inner.core.writable(bytes).await;
    }

    /// Subscribes this connection to `topic`: from now on,
    /// [`WebSocketServer::publish`] on `topic` (on any node of the server's broker) reaches it,
    /// until [`unsubscribe`](Self::unsubscribe) or the end of the connection. Subscribing
    /// twice is subscribing once. Returns `false`, and does nothing, once the connection has
    /// ended.
    ///
    /// ```no_run
    /// # use ferrosock::*;
    /// # struct Feed; struct Reader;
    /// # impl ServerHandler for Feed { type Connection = Reader;
    /// #   fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<Reader> { Some(Reader) } }
    /// impl ConnectionHandler for Reader {
    ///     type Server = Feed;
    ///     // "subscribe prices" from the client subscribes it to the topic "prices".
    ///     fn on_message(&self, ws: &WebSocketConnection<Feed>, event: MessageEvent) {
    ///         if let Some(topic) = event.data.as_text().and_then(|t| t.strip_prefix("subscribe ")) {
    ///             ws.subscribe(topic);
    ///         }
    ///     }
    /// }
    /// ```
    pub fn subscribe(&self, topic: &str) -> bool {
        let mut topics = self.topic_set();
        let Some(mine) = topics.as_mut() else {
            return false;
        };
        if mine.insert(topic.to_owned()) {
            self.inner.wss.add_subscriber(topic, self);
        }
        true
    }

    /// Unsubscribes this connection from `topic`. Returns whether it was subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        // The server's map changes under the connection's lock, as in `subscribe`, so that
        // the two always agree.
        let mut topics = self.topic_set();
        let removed = topics.as_mut().is_some_and(|mine| mine.remove(topic));
        if removed {
            self.inner.wss.remove_subscriber(topic, self.id());
        }
        removed
    }

    /// The topics this connection is subscribed to, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.topic_set()
            .as_ref()
            .map(|mine| mine.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// At the end of the connection: out of every topic, and no subscribing any more.
    pub(crate) fn leave_topics(&self) {
        let mut topics = self.topic_set();
        for topic in topics.take().unwrap_or_default() {
            self.inner.wss.remove_subscriber(&topic, self.id());
        }
    }

    fn topic_set(&self) -> MutexGuard<'_, Option<BTreeSet<String>>> {
        self.inner.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the connection normally: a close frame with 1000, then the peer's close frame is
    /// awaited. Messages queued before are sent first. Does nothing if already closing.
    pub fn terminate(&self) {
        self.close(CloseCode::NORMAL, "");
    }

    /// Closes the connection with a code and a message (4D's `terminate(code; message)`).
    ///
    /// If `3000 < code <= 4999` the close frame carries `code` and `message` (cut to 123 bytes
    /// of UTF-8); any other code gives 1000 and no message.
    pub fn terminate_with(&self, code: u16, message: &str) {
        if 3000 < code && code <= 4999 {
            self.close(CloseCode(code), message);
        } else {
            self.close(CloseCode::NORMAL, "");
        }
    }

    /// Drops the connection at once, without a close frame (the peer sees 1006).
    pub fn abort(&self) {
        self.inner.core.abort("connection aborted by the server");
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.inner.core.close(code, reason, None);
    }

    pub(crate) fn shared(&self) -> &Shared {
        self.inner.core.shared()
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }
}

impl<H: ServerHandler> Clone for WebSocketConnection<H> {
    fn clone(&self) -> Self {
        WebSocketConnection {
            inner: self.inner.clone(),
        }
    }
}

impl<H: ServerHandler> PartialEq for WebSocketConnection<H> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<H: ServerHandler> Eq for WebSocketConnection<H> {}

impl<H: ServerHandler> fmt::Debug for WebSocketConnection<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketConnection")
            .field("id", &self.id())
            .field("status", &self.status())
            .field("path", &self.wss().path())
            .finish()
    }
}

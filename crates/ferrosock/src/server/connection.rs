//! `WebSocketConnection`: the handle of one accepted connection.

use std::fmt;
use std::sync::Arc;

use super::{ServerHandler, WebSocketServer};
use crate::conn::{outgoing, Command, Compress, Shared, Status};
use crate::error::Error;
use crate::message::Message;
use crate::proto::{CloseCode, Role};

/// One connection accepted by a [`WebSocketServer`] (4D's `4D.WebSocketConnection`).
///
/// A cheap handle: clones refer to the same connection, and it can be kept and used from any
/// thread (to send from another task, for one).
pub struct WebSocketConnection<H: ServerHandler> {
    inner: Arc<ConnInner<H>>,
}

struct ConnInner<H: ServerHandler> {
    id: u64,
    handler: H::Connection,
    wss: WebSocketServer<H>,
    shared: Shared,
}

impl<H: ServerHandler> WebSocketConnection<H> {
    pub(crate) fn new(id: u64, handler: H::Connection, wss: WebSocketServer<H>) -> Self {
        let limits = wss.limits();
        let shared = Shared::new(
            Status::Connected,
            limits.max_outgoing_bytes,
            limits.backpressure,
        );
        WebSocketConnection {
            inner: Arc::new(ConnInner {
                id,
                handler,
                wss,
                shared,
            }),
        }
    }

    /// The connection handler that `on_connection` returned.
    pub fn handler(&self) -> &H::Connection {
        &self.inner.handler
    }

    /// The connection's id: unique in the process, shared with client sockets' ids.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// `Connected`, then `Closing` once a close frame is sent or received, then `Closed`.
    pub fn status(&self) -> Status {
        self.inner.shared.status()
    }

    /// The server that accepted this connection.
    pub fn wss(&self) -> &WebSocketServer<H> {
        &self.inner.wss
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
        let shared = &self.inner.shared;
        shared
            .send(outgoing(
                Role::Server,
                message.into(),
                compress,
                shared.deflate(),
            ))
            .map_err(Error::from)
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
        self.inner.shared.command(Command::Abort {
            cause: "connection aborted by the server".to_owned(),
        });
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.inner.shared.command(Command::Close {
            code,
            reason: reason.to_owned(),
        });
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Fails the connection with 1011 after a callback panicked.
    pub(crate) fn fail_internal(&self, cause: String) {
        self.inner.shared.command(Command::Fail {
            code: CloseCode::INTERNAL_ERROR,
            reason: String::new(),
            cause,
            discard_queued: false,
        });
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
        self.inner.id == other.inner.id
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

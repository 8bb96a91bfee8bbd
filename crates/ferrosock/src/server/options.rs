//! [`ServerOptions`]: what a [`WebSocketServer`](crate::WebSocketServer) is created
//! with.

use std::sync::Arc;

use crate::broker::Broker;
use crate::limits::Limits;
use crate::message::DataType;
use crate::proto::deflate::PerMessageDeflate;

/// Options of a [`WebSocketServer`](crate::WebSocketServer) (4D's `options` object, plus limits).
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
    /// option only the blocked connection waits (its reads pause: its own backpressure), and
    /// callbacks of one connection still run one at a time, in order:
    /// - on a multi-thread runtime each callback runs under
    ///   [`tokio::task::block_in_place`]: while it runs, the thread stops being an I/O thread
    ///   and the runtime hands that thread's other connections to another one;
    /// - on a current-thread runtime — the threads of
    ///   [`WebServerOptions::threads`](crate::WebServerOptions::threads), or an application's
    ///   own — where `block_in_place` is not allowed, a connection's callbacks are handed to
    ///   tokio's blocking pool ([`tokio::task::spawn_blocking`]) one after another, and
    ///   `on_connection` is too, so the thread goes on serving its other connections. Rare
    ///   server-level reports (`on_error` for a failed upgrade) and `on_connection` through
    ///   [`WebSocketServer::upgrade`](crate::WebSocketServer::upgrade) (a synchronous door)
    ///   run in place there.
    ///
    /// It costs a thread handover per callback, so leave it off for handlers that do not block.
    /// The server's own `on_open` runs in the caller of `new`, as always.
    /// Default: `false`.
    pub blocking_callbacks: bool,
    /// Carries [`publish`](crate::WebSocketServer::publish) and
    /// [`broadcast`](crate::WebSocketServer::broadcast) to the other nodes serving this endpoint
    /// (see [`crate::broker`]). Default: none, messages reach this server's connections only.
    pub broker: Option<Arc<dyn Broker>>,
    /// The subprotocols this server speaks (RFC 6455 §1.9; ferrosock extension). A client's
    /// offers are matched in the client's order: the first one listed here is chosen, and
    /// `on_connection` can change the choice
    /// ([`ConnectionEvent::select_protocol`](crate::ConnectionEvent::select_protocol)).
    /// No match means no subprotocol, not a refusal: a handler that needs one refuses in
    /// `on_connection`. Each must be an HTTP token. Default: none.
    pub protocols: Vec<String>,
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
            protocols: Vec::new(),
        }
    }
}

impl ServerOptions {
    /// Sets [`ServerOptions::protocols`], in no particular order (the client's order decides).
    ///
    /// ```
    /// use ferrosock::ServerOptions;
    /// let options = ServerOptions::default().protocols(["graphql-transport-ws", "graphql-ws"]);
    /// assert_eq!(options.protocols.len(), 2);
    /// ```
    pub fn protocols<S: Into<String>>(
        mut self,
        protocols: impl IntoIterator<Item = S>,
    ) -> ServerOptions {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

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

/// `chat` → `/chat`; `""` → catch-all; a query is ignored.
pub(super) fn normalize_path(path: Option<&str>) -> Option<String> {
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

//! The handler traits: the 4D user classes whose methods are the callbacks.

use super::{WebSocketConnection, WebSocketServer};
use crate::event::{
    ConnectionEvent, ErrorEvent, MessageEvent, OpenEvent, ServerTerminateEvent, TerminateEvent,
};

/// The server's handler (4D's `WSSHandler`). Only [`on_connection`] is required.
///
/// One value serves the whole server and is shared by every callback, so state kept on it
/// (behind a `Mutex` or atomics) is shared too; [`WebSocketServer::handler`] returns it.
///
/// [`on_connection`]: ServerHandler::on_connection
///
/// ```
/// use ferrosock::{ConnectionEvent, ConnectionHandler, MessageEvent, ServerHandler};
/// use ferrosock::{WebSocketConnection, WebSocketServer};
///
/// struct Upper;
/// struct UpperConnection;
///
/// impl ServerHandler for Upper {
///     type Connection = UpperConnection;
///     fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<UpperConnection> {
///         Some(UpperConnection)
///     }
/// }
///
/// impl ConnectionHandler for UpperConnection {
///     type Server = Upper;
///     fn on_message(&self, ws: &WebSocketConnection<Upper>, event: MessageEvent) {
///         let _ = ws.send(event.data.to_text().to_uppercase());
///     }
/// }
/// ```
pub trait ServerHandler: Send + Sync + Sized + 'static {
    /// The handler of each connection this server accepts.
    type Connection: ConnectionHandler<Server = Self>;

    /// A client asks to connect; its upgrade request is valid. Called before the server
    /// answers: return a handler to accept (101), or `None` to refuse (403; no connection
    /// object is created and no other callback fires).
    fn on_connection(
        &self,
        wss: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<Self::Connection>;

    /// The server is attached to its web server and accepting.
    fn on_open(&self, wss: &WebSocketServer<Self>, event: OpenEvent) {
        let _ = (wss, event);
    }

    /// The server stopped (`terminate()` or the web server's stop), after every one of its
    /// connections' `on_terminate`.
    fn on_terminate(&self, wss: &WebSocketServer<Self>, event: ServerTerminateEvent) {
        let _ = (wss, event);
    }

    /// Something went wrong at the server's door or in its machinery: a client refused at
    /// `max_connections` (503), an accepted upgrade that failed before the connection opened, a
    /// server callback that panicked, a broker outage. [`ErrorInfo`](crate::ErrorInfo) lists the
    /// `err_code` and `component_signature` of each.
    fn on_error(&self, wss: &WebSocketServer<Self>, event: ErrorEvent) {
        let _ = (wss, event);
    }
}

/// A connection's handler (4D's `connectionHandler`). Only [`on_message`] is required.
///
/// The callbacks of one connection never run concurrently and run in event order; those of
/// different connections may run in parallel. A panic in a callback is caught, reported
/// through `on_error`, and closes that connection with 1011.
///
/// [`on_message`]: ConnectionHandler::on_message
pub trait ConnectionHandler: Send + Sync + Sized + 'static {
    /// The server handler whose `on_connection` creates this handler.
    type Server: ServerHandler<Connection = Self>;

    /// A message arrived, converted to the server's data type.
    fn on_message(&self, ws: &WebSocketConnection<Self::Server>, event: MessageEvent);

    /// The connection is open (after the 101 answer). It is already in the server's
    /// `connections()`, so a broadcast from here reaches it too.
    fn on_open(&self, ws: &WebSocketConnection<Self::Server>, event: OpenEvent) {
        let _ = (ws, event);
    }

    /// Something went wrong: a message that is not JSON (data type `Object`; the connection
    /// stays open), or an abnormal end (then `errors[0].err_code` is the close code and
    /// `on_terminate` follows). A close this side starts in good order — `terminate()`, the
    /// server's termination, the web server's stop — is not an error, whatever its code; a
    /// peer that goes away with 1001 (a closed browser tab) is.
    fn on_error(&self, ws: &WebSocketConnection<Self::Server>, event: ErrorEvent) {
        let _ = (ws, event);
    }

    /// The connection ended; its status is `Closed` and it has left `connections()`.
    fn on_terminate(&self, ws: &WebSocketConnection<Self::Server>, event: TerminateEvent) {
        let _ = (ws, event);
    }
}

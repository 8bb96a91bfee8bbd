//! The client's handler trait: 4D's `connectionHandler` object for `4D.WebSocket`.

use super::WebSocket;
use crate::event::{ErrorEvent, MessageEvent, OpenEvent, ReconnectEvent, TerminateEvent};
use crate::message::DataType;
use crate::request::Params;

/// A client socket's handler. Every callback is optional.
///
/// Callback order (SPEC §4): `on_open` once; zero or more `on_message`; zero or one `on_error`
/// that ends the connection (component `"HTTP"`, no `on_message` after it); `on_terminate`
/// always, last, exactly once. A connection that cannot be made gets `on_error` then
/// `on_terminate` (1006) and no `on_open`. With data type `Object`, a message that is not JSON
/// gets an `on_error` of its own (component `"JSON"`) instead of its `on_message`, and the
/// connection stays open.
///
/// ```
/// use ferrosock::{ClientHandler, DataType, MessageEvent, Params, TerminateEvent, WebSocket};
///
/// struct Ticker;
///
/// impl ClientHandler for Ticker {
///     fn on_message(&self, _ws: &WebSocket<Self>, event: MessageEvent) {
///         println!("price: {}", event.data.to_text());
///     }
///     fn on_terminate(&self, _ws: &WebSocket<Self>, event: TerminateEvent) {
///         println!("closed: {} {}", event.code, event.reason);
///     }
///     fn data_type(&self) -> DataType {
///         DataType::Object
///     }
///     fn headers(&self) -> Params {
///         [("Cookie", "session=abc; theme=dark"), ("X-Feed", "eu"), ("X-Feed", "us")].into_iter().collect()
///     }
/// }
/// ```
pub trait ClientHandler: Send + Sync + Sized + 'static {
    /// The connection is open.
    fn on_open(&self, ws: &WebSocket<Self>, event: OpenEvent) {
        let _ = (ws, event);
    }

    /// A message arrived, converted to [`data_type`](Self::data_type).
    fn on_message(&self, ws: &WebSocket<Self>, event: MessageEvent) {
        let _ = (ws, event);
    }

    /// The connection failed or ended abnormally: `errors[0].err_code` is the close code (1006
    /// when it could not be made or dropped; 1002, 1007, 1009... when a side failed it), with
    /// component `"HTTP"`. Or, with data type `Object`, a message was not JSON: component
    /// `"JSON"`, and the connection stays open. A close this side started in good order
    /// (`terminate`) is not an error, whatever the code the server answered with.
    fn on_error(&self, ws: &WebSocket<Self>, event: ErrorEvent) {
        let _ = (ws, event);
    }

    /// The connection ended. Always called, exactly once, last.
    fn on_terminate(&self, ws: &WebSocket<Self>, event: TerminateEvent) {
        let _ = (ws, event);
    }

    /// The socket will reconnect (ferrosock extension, with
    /// [`ClientOptions::reconnect`](crate::ClientOptions::reconnect)): called after the
    /// `on_terminate` of the connection that ended, or of the attempt that failed, with the
    /// attempt's number and the delay before it. The socket is `Connecting` meanwhile. Each
    /// connection then has its own `on_open` … `on_terminate`. A handler that ignores it sees
    /// several connections' callbacks in turn. Default: nothing.
    fn on_reconnect(&self, ws: &WebSocket<Self>, event: ReconnectEvent) {
        let _ = (ws, event);
    }

    /// How received messages are converted (4D's `dataType`). With `Object`, a message that
    /// is not JSON is not delivered: `on_error` reports it (component `"JSON"`) and the
    /// connection stays open, as on the server. Default: `Text`.
    fn data_type(&self) -> DataType {
        DataType::Text
    }

    /// Extra headers for the opening request (4D's `headers`): a repeated name is sent once
    /// per value; a `Cookie` is one `name=value; name2=value2` string. The handshake's own
    /// headers (`Upgrade`, `Connection`, `Sec-WebSocket-*`) cannot be set. Default: none.
    fn headers(&self) -> Params {
        Params::default()
    }
}

/// A handler that does nothing: for a socket that only sends.
impl ClientHandler for () {}

//! The event objects passed to callbacks, one type per 4D event (`event.type` is
//! [`event_type`](OpenEvent::event_type) on each).

use std::sync::{Arc, Mutex};

use crate::message::Message;
use crate::proto::CloseCode;
use crate::request::Request;

/// `{type: "open"}`: a server started accepting, or a connection opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenEvent {}

impl OpenEvent {
    pub(crate) fn new() -> OpenEvent {
        OpenEvent {}
    }

    /// `"open"`.
    pub fn event_type(&self) -> &'static str {
        "open"
    }
}

/// `{type: "connection", request}`: a client asks to connect. Given to
/// `ServerHandler::on_connection` before the server answers the handshake.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionEvent {
    /// The client's upgrade request.
    pub request: Request,
    /// The subprotocol the answer will carry (ferrosock extension), shared with the server,
    /// which reads it once `on_connection` returns.
    protocol: Arc<Mutex<Option<String>>>,
}

impl ConnectionEvent {
    /// An event for `request`, with `protocol` chosen so far (from the server's supported list).
    pub(crate) fn new(request: Request, protocol: Option<String>) -> ConnectionEvent {
        ConnectionEvent {
            request,
            protocol: Arc::new(Mutex::new(protocol)),
        }
    }

    /// The choice, once `on_connection` is done with the event.
    pub(crate) fn chosen(&self) -> Arc<Mutex<Option<String>>> {
        self.protocol.clone()
    }

    /// The subprotocol the server will answer with (RFC 6455 §4.2.2; ferrosock extension):
    /// the first of the client's offers ([`Request::protocols`], in the client's order) that
    /// [`ServerOptions::protocols`](crate::ServerOptions::protocols) supports, or the one
    /// [`select_protocol`](Self::select_protocol) chose. `None`: no subprotocol.
    pub fn protocol(&self) -> Option<String> {
        self.protocol
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Answers with `name`, one of the subprotocols the client offered, whatever the server's
    /// supported list says. Returns `false` and changes nothing if the client did not offer
    /// it (a server may only pick an offered one). Clones of the event share the choice.
    ///
    /// ```
    /// # use ferrosock::*;
    /// # struct Graphql; struct Session;
    /// # impl ConnectionHandler for Session { type Server = Graphql;
    /// #   fn on_message(&self, _: &WebSocketConnection<Graphql>, _: MessageEvent) {} }
    /// impl ServerHandler for Graphql {
    ///     type Connection = Session;
    ///     fn on_connection(&self, _: &WebSocketServer<Self>, event: ConnectionEvent) -> Option<Session> {
    ///         // The newer protocol wins, whatever order the client listed them in.
    ///         if !event.select_protocol("graphql-transport-ws") {
    ///             event.select_protocol("graphql-ws");
    ///         }
    ///         Some(Session)
    ///     }
    /// }
    /// ```
    pub fn select_protocol(&self, name: &str) -> bool {
        if !self.request.protocols().iter().any(|p| p == name) {
            return false;
        }
        *self.protocol.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.to_owned());
        true
    }

    /// Answers with no subprotocol, even if the supported list matched one of the offers.
    pub fn decline_protocol(&self) {
        *self.protocol.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    /// `"connection"`.
    pub fn event_type(&self) -> &'static str {
        "connection"
    }
}

/// `{type: "message", data}`: a message arrived, converted to the data type.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MessageEvent {
    /// The message, converted to the server's (or client's) data type.
    pub data: Message,
}

impl MessageEvent {
    /// `"message"`.
    pub fn event_type(&self) -> &'static str {
        "message"
    }
}

/// `{type: "error", errors}`: something went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorEvent {
    /// What went wrong, most significant first (4D's error stack).
    pub errors: Vec<ErrorInfo>,
}

impl ErrorEvent {
    pub(crate) fn new(errors: Vec<ErrorInfo>) -> ErrorEvent {
        ErrorEvent { errors }
    }

    /// `"error"`.
    pub fn event_type(&self) -> &'static str {
        "error"
    }
}

/// One entry of an error stack (4D's `errCode`, `message`, `componentSignature`).
///
/// Every pair of `component_signature` and `err_code` ferrosock reports is a named constant:
///
/// | `component_signature` | `err_code` | what happened | where |
/// |---|---|---|---|
/// | [`HTTP`](Self::HTTP) | the close code (1001, 1002, 1006, 1007, 1009, 1011, …) | the connection ended abnormally; `on_terminate` follows | connection, client |
/// | [`JSON`](Self::JSON) | [`INVALID_JSON`](Self::INVALID_JSON) (1) | a message was not JSON (data type `Object`); it is not delivered, the connection stays open | connection, client |
/// | [`FERROSOCK`](Self::FERROSOCK) | [`CALLBACK_PANICKED`](Self::CALLBACK_PANICKED) (1) | a server callback (`on_open`, `on_connection`, `on_terminate`) panicked | server |
/// | [`FERROSOCK`](Self::FERROSOCK) | [`UPGRADE_FAILED`](Self::UPGRADE_FAILED) (2) | an upgrade `on_connection` accepted never became a connection (the client left before the 101 was sent, say); the handler it returned is dropped without any of its callbacks running | server |
/// | [`FERROSOCK`](Self::FERROSOCK) | [`SERVER_FULL`](Self::SERVER_FULL) (3) | a client was refused with HTTP 503: `max_connections` are open | server |
/// | [`BROKER`](Self::BROKER) | [`BROKER_UNREACHABLE`](Self::BROKER_UNREACHABLE) (1) | the broker is unreachable; local delivery goes on, it reconnects by itself | server |
///
/// ```
/// use ferrosock::{ErrorEvent, ErrorInfo};
/// fn on_error(event: &ErrorEvent) {
///     for error in &event.errors {
///         if error.is(ErrorInfo::FERROSOCK, ErrorInfo::SERVER_FULL) {
///             eprintln!("at capacity: {}", error.message);
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// For a connection that ended abnormally, its close code (1006, 1002, 1011...).
    /// For errors that do not end anything, see the table in the type's docs.
    pub err_code: i64,
    /// A description for people.
    pub message: String,
    /// Where the error comes from: [`HTTP`](Self::HTTP) for the WebSocket connection itself
    /// (close codes), [`JSON`](Self::JSON), [`FERROSOCK`](Self::FERROSOCK) for the server's own
    /// machinery, [`BROKER`](Self::BROKER).
    pub component_signature: String,
}

impl ErrorInfo {
    /// `component_signature` of a connection that ended abnormally; `err_code` is its close
    /// code.
    pub const HTTP: &'static str = "HTTP";
    /// `component_signature` of a message that could not be parsed as JSON.
    pub const JSON: &'static str = "JSON";
    /// `component_signature` of what goes wrong at a server's door and in its machinery.
    pub const FERROSOCK: &'static str = "ferrosock";
    /// `component_signature` of a broker's trouble.
    pub const BROKER: &'static str = "broker";

    /// ([`JSON`](Self::JSON)): a message was not JSON.
    pub const INVALID_JSON: i64 = 1;
    /// ([`FERROSOCK`](Self::FERROSOCK)): a server callback panicked.
    pub const CALLBACK_PANICKED: i64 = 1;
    /// ([`FERROSOCK`](Self::FERROSOCK)): an accepted upgrade failed before the connection
    /// opened.
    pub const UPGRADE_FAILED: i64 = 2;
    /// ([`FERROSOCK`](Self::FERROSOCK)): a client was refused with HTTP 503 at
    /// `max_connections`.
    pub const SERVER_FULL: i64 = 3;
    /// ([`BROKER`](Self::BROKER)): the broker cannot be reached.
    pub const BROKER_UNREACHABLE: i64 = 1;

    /// Whether this entry is `err_code` of `component` (one of the constants above).
    pub fn is(&self, component: &str, err_code: i64) -> bool {
        self.component_signature == component && self.err_code == err_code
    }

    pub(crate) fn new(err_code: i64, message: impl Into<String>, component: &str) -> ErrorInfo {
        ErrorInfo {
            err_code,
            message: message.into(),
            component_signature: component.to_owned(),
        }
    }

    /// The entry for a connection that ended with an abnormal close code.
    pub(crate) fn close(code: CloseCode, cause: Option<&str>) -> ErrorInfo {
        let message = match cause {
            Some(cause) => format!("{} ({cause})", code.description()),
            None => code.description().to_owned(),
        };
        ErrorInfo::new(i64::from(code.0), message, ErrorInfo::HTTP)
    }
}

/// `{type: "terminate"}` for a server: it stopped, after all its connections ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTerminateEvent {}

impl ServerTerminateEvent {
    pub(crate) fn new() -> ServerTerminateEvent {
        ServerTerminateEvent {}
    }

    /// `"terminate"`.
    pub fn event_type(&self) -> &'static str {
        "terminate"
    }
}

/// `{type: "terminate", code, reason, was_clean}`: a connection ended. The last callback a
/// connection gets, exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TerminateEvent {
    /// The peer's close code; 1005 if its close frame had none; 1006 if the connection
    /// dropped without one; the code sent when ferrosock failed the connection (1002, 1007,
    /// 1009, 1011...).
    pub code: u16,
    /// The peer's reason, or when there was none, a fixed description of the code (such as
    /// "WebSocket has been closed normally." for 1000).
    pub reason: String,
    /// Whether both close frames were exchanged.
    pub was_clean: bool,
}

impl TerminateEvent {
    pub(crate) fn new(code: CloseCode, reason: &str, was_clean: bool) -> TerminateEvent {
        let reason = if reason.is_empty() {
            code.description().to_owned()
        } else {
            reason.to_owned()
        };
        TerminateEvent {
            code: code.0,
            reason,
            was_clean,
        }
    }

    /// `"terminate"`.
    pub fn event_type(&self) -> &'static str {
        "terminate"
    }
}

/// A client socket will reconnect (ferrosock extension; [`ClientOptions::reconnect`]): given
/// to [`ClientHandler::on_reconnect`] after the `on_terminate` of the connection that ended
/// (or of the attempt that failed), before the wait.
///
/// [`ClientOptions::reconnect`]: crate::ClientOptions::reconnect
/// [`ClientHandler::on_reconnect`]: crate::ClientHandler::on_reconnect
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectEvent {
    /// The attempt about to be made: 1 for the first after a connection that was open.
    pub attempt: u32,
    /// How long the socket waits before it.
    pub delay: std::time::Duration,
    /// Why the last connection ended: `"closed with 1006"`, or the error of a failed attempt.
    pub cause: String,
}

impl ReconnectEvent {
    pub(crate) fn new(attempt: u32, delay: std::time::Duration, cause: String) -> ReconnectEvent {
        ReconnectEvent {
            attempt,
            delay,
            cause,
        }
    }

    /// `"reconnect"`.
    pub fn event_type(&self) -> &'static str {
        "reconnect"
    }
}

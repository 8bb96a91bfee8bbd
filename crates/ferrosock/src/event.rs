//! The event objects passed to callbacks, one type per 4D event (`event.type` is
//! [`event_type`](OpenEvent::event_type) on each).

use crate::message::Message;
use crate::proto::CloseCode;
use crate::server::Request;

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
}

impl ConnectionEvent {
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
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// For a connection that ended abnormally, its close code (1006, 1002, 1011...).
    /// For errors that do not end anything, see [`component_signature`](Self::component_signature).
    pub err_code: i64,
    /// A description for people.
    pub message: String,
    /// Where the error comes from: `"HTTP"` for the WebSocket connection itself (close codes),
    /// `"JSON"` for a message that could not be parsed (`err_code` 1), `"ferrosock"` for the
    /// server's own errors (`err_code` 1: a handler panicked, 2: an upgrade failed).
    pub component_signature: String,
}

impl ErrorInfo {
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
        ErrorInfo::new(i64::from(code.0), message, "HTTP")
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

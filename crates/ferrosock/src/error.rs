//! The one error type of the crate.

use std::fmt;

/// A boxed error from a lower layer (I/O, JSON, TLS...).
type Source = Box<dyn std::error::Error + Send + Sync>;

/// An error from ferrosock: a [`kind`](Error::kind) to match on, a message, and the
/// underlying error, if any, as its [`source`](std::error::Error::source).
///
/// The message (the `Display` text) is meant for people and is not part of the API.
///
/// ```
/// use ferrosock::{Error, ErrorKind};
/// fn retry_later(err: &Error) -> bool {
///     err.kind() == ErrorKind::BufferFull
/// }
/// ```
pub struct Error {
    inner: Box<ErrorImpl>,
}

struct ErrorImpl {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
    /// The HTTP status of a refused opening handshake (or of a proxy's refusal).
    status: Option<u16>,
    /// How long the server asked to wait (`Retry-After` of a 429 or 503).
    retry_after: Option<std::time::Duration>,
}

/// What kind of error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading, writing, binding or accepting failed.
    Io,
    /// The web server is not running (creating a WebSocket server on it, for one).
    NotStarted,
    /// Another WebSocket server already has this path on the web server.
    PathInUse,
    /// Sending on a connection that is not `Connected`.
    NotConnected,
    /// The message would exceed the connection's outgoing byte budget
    /// ([`Limits::max_outgoing_bytes`](crate::Limits::max_outgoing_bytes)).
    BufferFull,
    /// An argument out of its range: a close code, a reason too long, a bad option.
    InvalidArgument,
    /// A message could not be parsed as JSON (`DataType::Object`).
    Json,
    /// The peer broke the WebSocket protocol.
    Protocol,
    /// The opening handshake failed: a status other than 101 (see [`Error::http_status`]), a
    /// wrong `Sec-WebSocket-Accept`, a malformed answer.
    Handshake,
    /// A URL that is not `ws://` or `wss://`, or that cannot be parsed.
    InvalidUrl,
    /// The host name could not be resolved.
    Dns,
    /// No TCP connection could be made (refused, unreachable).
    Connect,
    /// TLS failed: a certificate that is not trusted or does not match, a bad PEM file.
    Tls,
    /// Connecting took longer than the connect timeout.
    Timeout,
    /// The proxy could not be used: unreachable, a refusal (407 proxy authentication
    /// required, 403, a SOCKS reply code), an answer that is not its protocol, or a proxy URL
    /// that cannot be used (an unknown scheme, from the options or the environment).
    Proxy,
    /// A redirect of the opening handshake could not be followed: too many of them, a
    /// `wss://` to `ws://` downgrade, a `Location` that is not a WebSocket URL.
    Redirect,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(ErrorImpl {
                kind,
                message: message.into(),
                source: None,
                status: None,
                retry_after: None,
            }),
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Source>,
    ) -> Error {
        let mut err = Error::new(kind, message);
        err.inner.source = Some(source.into());
        err
    }

    pub(crate) fn with_status(mut self, status: u16) -> Error {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_retry_after(mut self, delay: Option<std::time::Duration>) -> Error {
        self.inner.retry_after = delay;
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status the server answered the opening handshake with, when it was not 101
    /// (200 over HTTP/2), or the status a proxy refused the tunnel with (an
    /// [`ErrorKind::Proxy`] error: 407, 403...).
    pub fn http_status(&self) -> Option<u16> {
        self.inner.status
    }

    /// How long the server asked the client to wait before it tries again: the
    /// `Retry-After` of a 429 or 503 answer to the opening handshake (in seconds, or an HTTP
    /// date), when it gave one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.inner.retry_after
    }

    /// The message would exceed the connection's outgoing byte budget.
    pub fn is_buffer_full(&self) -> bool {
        self.kind() == ErrorKind::BufferFull
    }

    /// The connection was not `Connected`.
    pub fn is_not_connected(&self) -> bool {
        self.kind() == ErrorKind::NotConnected
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        s.field("kind", &self.inner.kind);
        s.field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            s.field("status", &status);
        }
        if let Some(source) = &self.inner.source {
            s.field("source", source);
        }
        s.finish()
    }
}

/// The message only; the cause is the [`source`](std::error::Error::source), so that error
/// reporters (`anyhow`'s `{:#}`, for one) print each link of the chain once.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source.as_deref().map(|s| s as _)
    }
}

impl From<crate::conn::SendError> for Error {
    fn from(err: crate::conn::SendError) -> Error {
        match err {
            crate::conn::SendError::NotConnected(status) => Error::new(
                ErrorKind::NotConnected,
                format!("cannot send: the connection is {status}"),
            ),
            crate::conn::SendError::BufferFull { buffered, budget } => Error::new(
                ErrorKind::BufferFull,
                format!("cannot send: {buffered} bytes already queued (budget {budget})"),
            ),
            crate::conn::SendError::ProcessFull { queued, cap } => Error::new(
                ErrorKind::BufferFull,
                format!(
                    "cannot send: the process holds {queued} bytes of unsent messages (cap {cap}) \
                     and this connection more than its share"
                ),
            ),
        }
    }
}

/// An error and its causes on one line, `message: cause: cause...`, for reports that are
/// plain text (the `errors` of an `on_error` event).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some I/O errors repeat their inner error's text; print it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message of a caught panic, for error reports.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_one_pointer_wide() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn display_is_the_message_and_the_cause_is_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = Error::with_source(ErrorKind::Io, "cannot listen on 127.0.0.1:1", io);
        assert_eq!(err.to_string(), "cannot listen on 127.0.0.1:1");
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "address in use"
        );
        assert_eq!(chain(&err), "cannot listen on 127.0.0.1:1: address in use");
    }
}

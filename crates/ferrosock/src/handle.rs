//! The core that a server connection's handle ([`WebSocketConnection`]) and a client socket
//! ([`WebSocket`]) share: sending, closing, the bytes still queued, the end of a connection,
//! and the guard around every callback. Each handle adds only what its side has (a server and
//! topics; a URL and a connection attempt).
//!
//! [`WebSocketConnection`]: crate::WebSocketConnection
//! [`WebSocket`]: crate::WebSocket

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Compress, Incoming, Status};
use crate::conn::{Command, Ending, Shared};
use crate::error::{panic_message, Error};
use crate::event::{ErrorInfo, MessageEvent, TerminateEvent};
use crate::limits::Limits;
use crate::message::{DataType, Message};
use crate::proto::deflate::{Negotiated, PerMessageDeflate};
use crate::proto::{CloseCode, Role};
use crate::stats::Counters;

/// One connection's handle state, behind the handle's `Arc`.
#[derive(Debug)]
pub(crate) struct Core {
    id: u64,
    shared: Shared,
}

impl Core {
    /// A connection's core; `stats`: the counters of its server (`None` for a client).
    pub(crate) fn new(
        id: u64,
        role: Role,
        status: Status,
        limits: &Limits,
        stats: Option<Arc<Counters>>,
    ) -> Core {
        Core {
            id,
            shared: Shared::new(role, status, limits.max_outgoing_bytes, limits.backpressure)
                .counted_in(stats),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn status(&self) -> Status {
        self.shared.status()
    }

    /// The state the connection's driver shares with this handle.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Records what the opening handshake settled, before anything can be sent.
    pub(crate) fn negotiated(&self, deflate: Option<Negotiated>, settings: &PerMessageDeflate) {
        self.shared.set_deflate(deflate, settings);
    }

    /// permessage-deflate as negotiated; `None` when it was not, or not yet.
    pub(crate) fn compression(&self) -> Option<Negotiated> {
        self.shared.deflate_setup().map(|setup| setup.negotiated)
    }

    /// Queues a message; never blocks.
    pub(crate) fn send(&self, message: Message, compress: Compress) -> Result<(), Error> {
        let (opcode, payload) = message.into_frame();
        self.shared
            .send_data(opcode, payload, compress)
            .map_err(Error::from)
    }

    /// The bytes queued and not yet written to the socket, as the budget counts them.
    pub(crate) fn buffered_amount(&self) -> usize {
        self.shared.buffered()
    }

    /// Resolves once `bytes` more would fit the budget, or the connection is no longer open.
    pub(crate) async fn writable(&self, bytes: usize) {
        self.shared.room_for(bytes).await;
    }

    /// Starts the close handshake (does nothing once closing).
    pub(crate) fn close(&self, code: CloseCode, reason: &str, timeout: Option<Duration>) {
        self.shared.command(Command::Close {
            code,
            reason: reason.to_owned(),
            timeout,
        });
    }

    /// Drops the connection at once, without a close frame.
    pub(crate) fn abort(&self, cause: &str) {
        self.shared.command(Command::Abort {
            cause: cause.to_owned(),
        });
    }

    /// Runs a callback of this connection. A panic fails the connection with 1011 (reported
    /// through `on_error` at its end), and is logged.
    pub(crate) fn guard(&self, callback: &str, f: impl FnOnce()) {
        if let Err(cause) = guarded(callback, f) {
            tracing::error!(id = self.id, "{cause}");
            if let Some(stats) = self.shared.stats() {
                stats.panicked();
            }
            self.shared.command(Command::Fail {
                code: CloseCode::INTERNAL_ERROR,
                reason: String::new(),
                cause,
                discard_queued: false,
            });
        }
    }

    /// Runs a callback after the end, where nothing is left to fail: a panic is logged.
    pub(crate) fn guard_final(&self, callback: &str, f: impl FnOnce()) {
        if let Err(cause) = guarded(callback, f) {
            tracing::error!(id = self.id, "{cause}");
            if let Some(stats) = self.shared.stats() {
                stats.panicked();
            }
        }
    }
}

/// Runs `f`; a panic becomes `Err("{callback} panicked: {message}")`.
pub(crate) fn guarded(callback: &str, f: impl FnOnce()) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|panic| format!("{callback} panicked: {}", panic_message(&*panic)))
}

/// A received message as the handler's `data_type` asks, or what `on_error` reports when it
/// cannot be converted (an `Object` that is not JSON: SPEC §3, §4; the connection stays open).
pub(crate) fn message_event(
    message: Incoming,
    data_type: DataType,
) -> Result<MessageEvent, ErrorInfo> {
    Message::convert(message, data_type)
        .map(|data| MessageEvent { data })
        .map_err(|err| {
            ErrorInfo::new(
                ErrorInfo::INVALID_JSON,
                format!("message is not valid JSON: {err}"),
                ErrorInfo::JSON,
            )
        })
}

/// What the end of a connection reports: the error for `on_error`, when it is one (SPEC §3),
/// and the event of `on_terminate`.
pub(crate) fn end_events(ending: &Ending) -> (Option<ErrorInfo>, TerminateEvent) {
    let error = ending
        .is_error()
        .then(|| ErrorInfo::close(ending.code, ending.cause.as_deref()));
    let event = TerminateEvent::new(ending.code, &ending.reason, ending.was_clean);
    (error, event)
}

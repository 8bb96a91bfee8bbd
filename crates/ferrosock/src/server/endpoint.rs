//! A WebSocket server as an [`Endpoint`]: its decision on an upgrade (the slot, the origin of
//! `on_connection`, permessage-deflate), then the connection it opens on the upgraded socket,
//! with its callbacks plugged into the driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderValue, StatusCode};

use super::registry::Slot;
use super::serial::Serial;
use super::termination::Terminating;
use super::upgrade::{Decision, Endpoint, Opening, Task};
use super::websocket_server::{ServerInner, WebSocketServer};
use super::{ConnectionHandler, ServerHandler, WebSocketConnection};
use crate::common::{next_id, Incoming};
use crate::conn::{self, Callbacks, DriverConfig, Ending, Shared, Stream};
use crate::event::{ConnectionEvent, ErrorEvent, ErrorInfo, OpenEvent};
use crate::handle::{end_events, message_event};
use crate::message::DataType;
use crate::proto::{CloseCode, Role};
use crate::request::Request;

impl<H: ServerHandler> Endpoint for ServerInner<H> {
    fn decide(
        self: Arc<Self>,
        request: &http::request::Parts,
        remote: Option<SocketAddr>,
        offered: Vec<String>,
    ) -> Decision {
        let wss = WebSocketServer::from_inner(self);
        if wss.terminated() {
            return Decision::Refuse(StatusCode::NOT_FOUND);
        }
        let registry = &wss.inner().registry;
        let Some(slot) = Slot::reserve(registry) else {
            wss.report(ErrorInfo::new(
                ErrorInfo::SERVER_FULL,
                format!(
                    "client {} refused with HTTP 503: {} connections are open (max_connections)",
                    remote.map_or_else(
                        || "(address unknown)".to_owned(),
                        |remote| remote.ip().to_canonical().to_string()
                    ),
                    registry.max_connections()
                ),
                ErrorInfo::FERROSOCK,
            ));
            return Decision::Refuse(StatusCode::SERVICE_UNAVAILABLE);
        };
        // The server's choice: the client's first offer that it supports.
        let supported = &wss.inner().protocols;
        let protocol = offered.iter().find(|p| supported.contains(p)).cloned();
        let event = ConnectionEvent::new(Request::from_parts(request, remote, offered), protocol);
        let chosen = event.chosen();
        let mut handler = None;
        wss.guard("on_connection", |h, wss| {
            handler = Some(h.on_connection(wss, event))
        });
        let handler = match handler {
            Some(Some(handler)) => handler,
            Some(None) => return Decision::Refuse(StatusCode::FORBIDDEN),
            None => return Decision::Refuse(StatusCode::INTERNAL_SERVER_ERROR),
        };
        let offers = request
            .headers
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS);
        let (deflate, extensions) = match wss
            .deflate_settings()
            .server_accept(offers.iter().map(HeaderValue::as_bytes))
        {
            Some((agreed, response)) => (Some(agreed), Some(response)),
            None => (None, None),
        };
        // Cloned: clones of the event the handler kept still tell the choice.
        let protocol = chosen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let connection =
            WebSocketConnection::new(next_id(), handler, wss, deflate, protocol.clone());
        Decision::Accept {
            extensions,
            protocol,
            opening: Box::new(Accepted { connection, slot }),
        }
    }

    fn shutdown(self: Arc<Self>, grace: Duration) -> Terminating {
        self.terminate(CloseCode::GOING_AWAY, Some(grace))
    }

    fn blocking(&self) -> bool {
        self.blocking_callbacks
    }
}

/// An accepted connection, holding its slot, until its socket is handed over.
struct Accepted<H: ServerHandler> {
    connection: WebSocketConnection<H>,
    slot: Slot<H>,
}

impl<H: ServerHandler> Opening for Accepted<H> {
    fn open(self: Box<Self>, stream: Stream, read_buf: BytesMut) -> Task {
        Box::pin(run_connection(self.connection, self.slot, stream, read_buf))
    }

    fn failed(self: Box<Self>, why: String) {
        tracing::debug!(id = self.connection.id(), "{why}");
        self.connection.wss().report(ErrorInfo::new(
            ErrorInfo::UPGRADE_FAILED,
            why,
            ErrorInfo::FERROSOCK,
        ));
    }
}

/// After the 101: registers the connection, runs `on_open` and the driver.
async fn run_connection<H: ServerHandler>(
    connection: WebSocketConnection<H>,
    slot: Slot<H>,
    stream: Stream,
    read_buf: BytesMut,
) {
    let wss = connection.wss().clone();
    {
        let mut registry = wss.inner().registry.connections();
        if wss.terminated() {
            // Terminated while the 101 was on its way: this connection never opens.
            return;
        }
        registry.insert(connection.id(), connection.clone());
    }
    let config = DriverConfig::new(Role::Server, wss.limits());
    // Blocking callbacks on a current-thread runtime go to the blocking pool, in order.
    let serial = (wss.inner().blocking_callbacks && crate::common::on_current_thread_runtime())
        .then(Arc::default);
    let callbacks = ServerCallbacks {
        connection,
        data_type: wss.data_type(),
        serial,
        _slot: slot,
    };
    callbacks.guard("on_open", |h, ws| h.on_open(ws, OpenEvent::new()));
    conn::run(stream, read_buf, config, callbacks).await;
}

/// Plugs a connection's handler into the driver.
struct ServerCallbacks<H: ServerHandler> {
    connection: WebSocketConnection<H>,
    data_type: DataType,
    /// Where the callbacks run when they may block on a current-thread runtime.
    serial: Option<Arc<Serial>>,
    /// Released (dropped) after `on_terminate`, so the server's `on_terminate` comes after.
    _slot: Slot<H>,
}

impl<H: ServerHandler> ServerCallbacks<H> {
    /// Runs a connection callback (as blocking code if the server says so). A panic fails the
    /// connection with 1011; the cause is reported through `on_error` when it ends.
    fn guard(
        &self,
        callback: &'static str,
        f: impl FnOnce(&H::Connection, &WebSocketConnection<H>) + Send + 'static,
    ) {
        if let Some(serial) = &self.serial {
            let connection = self.connection.clone();
            serial.run(move || {
                let core = connection.core();
                core.guard(callback, || f(connection.handler(), &connection));
            });
            return;
        }
        let connection = &self.connection;
        let core = connection.core();
        connection
            .wss()
            .inner()
            .call(|| core.guard(callback, || f(connection.handler(), connection)));
    }

    /// Runs a callback after the end, where nothing is left to fail.
    fn guard_final(&self, callback: &str, f: impl FnOnce(&H::Connection, &WebSocketConnection<H>)) {
        let connection = &self.connection;
        let core = connection.core();
        connection
            .wss()
            .inner()
            .call(|| core.guard_final(callback, || f(connection.handler(), connection)));
    }
}

impl<H: ServerHandler> Callbacks for ServerCallbacks<H> {
    fn shared(&self) -> &Shared {
        self.connection.shared()
    }

    fn on_message(&mut self, message: Incoming) {
        match message_event(message, self.data_type) {
            Ok(event) => self.guard("on_message", |h, ws| h.on_message(ws, event)),
            Err(info) => self.guard("on_error", |h, ws| {
                h.on_error(ws, ErrorEvent::new(vec![info]))
            }),
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.serial {
            Some(serial) => serial.poll_idle(cx),
            None => Poll::Ready(()),
        }
    }

    fn on_end(self, ending: Ending) {
        match self.serial.clone() {
            // After the callbacks handed over before it; the slot is released there too.
            Some(serial) => serial.run(move || self.end(ending)),
            None => self.end(ending),
        }
    }
}

impl<H: ServerHandler> ServerCallbacks<H> {
    /// The end of [`Callbacks::on_end`]: the connection leaves the server, then `on_error`
    /// (for an abnormal end) and `on_terminate`.
    fn end(self, ending: Ending) {
        let wss = self.connection.wss();
        wss.inner()
            .registry
            .connections()
            .remove(&self.connection.id());
        self.connection.leave_topics();
        let (error, event) = end_events(&ending);
        if let Some(info) = error {
            self.guard_final("on_error", |h, ws| {
                h.on_error(ws, ErrorEvent::new(vec![info]))
            });
        }
        self.guard_final("on_terminate", |h, ws| h.on_terminate(ws, event));
    }
}

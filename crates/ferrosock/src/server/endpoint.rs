//! A WebSocket server as an [`Endpoint`]: its decision on an upgrade (the slot, the origin of
//! `on_connection`, permessage-deflate), then the connection it opens on the upgraded socket,
//! with its callbacks plugged into the driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
use crate::stats::Refusal;

impl<H: ServerHandler> Endpoint for ServerInner<H> {
    fn decide(
        self: Arc<Self>,
        request: &http::request::Parts,
        remote: Option<SocketAddr>,
        offered: Vec<String>,
    ) -> Decision {
        let wss = WebSocketServer::from_inner(self);
        let refuse = |status: StatusCode| {
            wss.inner().stats.refused(Refusal::of_status(status));
            Decision::Refuse(status)
        };
        if wss.terminated() {
            return refuse(StatusCode::NOT_FOUND);
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
            return refuse(StatusCode::SERVICE_UNAVAILABLE);
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
            Some(None) => return refuse(StatusCode::FORBIDDEN),
            None => return refuse(StatusCode::INTERNAL_SERVER_ERROR),
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
        wss.inner().stats.accepted();
        let connection =
            WebSocketConnection::new(next_id(), handler, wss, deflate, protocol.clone());
        Decision::Accept {
            extensions,
            protocol,
            opening: Box::new(Accepted {
                connection,
                slot,
                remote,
            }),
        }
    }

    fn shutdown(self: Arc<Self>, grace: Duration) -> Terminating {
        self.terminate(CloseCode::GOING_AWAY, Some(grace))
    }

    fn blocking(&self) -> bool {
        self.blocking_callbacks
    }

    fn refused(&self, why: Refusal) {
        self.stats.refused(why);
    }
}

/// An accepted connection, holding its slot, until its socket is handed over.
struct Accepted<H: ServerHandler> {
    connection: WebSocketConnection<H>,
    slot: Slot<H>,
    remote: Option<SocketAddr>,
}

impl<H: ServerHandler> Opening for Accepted<H> {
    fn open(self: Box<Self>, stream: Stream, read_buf: BytesMut) -> Task {
        match start_connection(*self, stream, read_buf) {
            Some(driving) => Box::pin(driving),
            None => Box::pin(std::future::ready(())),
        }
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

/// After the 101: registers the connection and runs `on_open`, then returns the driver to
/// run; `None` if the server was terminated meanwhile.
///
/// Not an `async fn`: its arguments would stay in the future beside the driver for the
/// connection's whole life (an async fn keeps them, moved out or not), which took every
/// connection past an allocator size class.
fn start_connection<H: ServerHandler>(
    accepted: Accepted<H>,
    stream: Stream,
    read_buf: BytesMut,
) -> Option<impl std::future::Future<Output = ()> + Send> {
    let Accepted {
        connection,
        slot,
        remote,
    } = accepted;
    let wss = connection.wss().clone();
    {
        let mut registry = wss.inner().registry.connections();
        if wss.terminated() {
            // Terminated while the 101 was on its way: this connection never opens.
            return None;
        }
        registry.insert(connection.id(), connection.clone());
        wss.inner().stats.opened();
    }
    let remote = Remote::new(remote);
    tracing::info!(
        target: "ferrosock::connection",
        id = connection.id(),
        endpoint = wss.stats_handle().path_label(),
        %remote,
        "connection opened"
    );
    let config = DriverConfig::new(Role::Server, wss.limits());
    // Blocking callbacks on a current-thread runtime go to the blocking pool, in order.
    let serial = (wss.inner().blocking_callbacks && crate::common::on_current_thread_runtime())
        .then(Arc::default);
    let callbacks = ServerCallbacks {
        connection,
        data_type: wss.data_type(),
        serial,
        _slot: slot,
        remote,
        opened: millis(),
        code: CloseCode::ABNORMAL.0,
    };
    callbacks.guard("on_open", |h, ws| h.on_open(ws, OpenEvent::new()));
    Some(conn::run(stream, read_buf, config, callbacks))
}

/// Plugs a connection's handler into the driver.
struct ServerCallbacks<H: ServerHandler> {
    connection: WebSocketConnection<H>,
    data_type: DataType,
    /// Where the callbacks run when they may block on a current-thread runtime.
    serial: Option<Arc<Serial>>,
    /// Released (dropped) after `on_terminate`, so the server's `on_terminate` comes after.
    _slot: Slot<H>,
    /// For the line logged at the end: the client, and when it opened ([`millis`]).
    remote: Remote,
    opened: u64,
    /// The close code it ended with, counted when these callbacks are dropped: after
    /// `on_terminate`, or without it if the driver never ended (its runtime shut down), as
    /// 1006. Either way every connection counted open is counted closed once.
    code: u16,
}

impl<H: ServerHandler> Drop for ServerCallbacks<H> {
    fn drop(&mut self) {
        self.connection.wss().inner().stats.closed(self.code);
    }
}

/// Milliseconds since the first call: 8 bytes per connection where an `Instant` takes 16.
fn millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// A client's address in the log, in 18 bytes where `Option<SocketAddr>` takes 32 (every
/// connection carries it): IPv4 as IPv4-mapped IPv6, and port 0 when the HTTP layer did not
/// tell it (shown `unknown`).
#[derive(Clone, Copy)]
struct Remote {
    ip: [u8; 16],
    port: u16,
}

impl Remote {
    fn new(addr: Option<SocketAddr>) -> Remote {
        match addr {
            Some(addr) => Remote {
                ip: match addr.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                    std::net::IpAddr::V6(ip) => ip.octets(),
                },
                port: addr.port(),
            },
            None => Remote {
                ip: [0; 16],
                port: 0,
            },
        }
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.port == 0 {
            return f.write_str("unknown");
        }
        let ip = std::net::Ipv6Addr::from(self.ip).to_canonical();
        SocketAddr::new(ip, self.port).fmt(f)
    }
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
    fn end(mut self, ending: Ending) {
        self.code = ending.code.0;
        let wss = self.connection.wss();
        wss.inner()
            .registry
            .connections()
            .remove(&self.connection.id());
        let traffic = &ending.traffic;
        tracing::info!(
            target: "ferrosock::connection",
            id = self.connection.id(),
            endpoint = wss.stats_handle().path_label(),
            remote = %self.remote,
            code = ending.code.0,
            clean = ending.was_clean,
            duration_ms = millis().saturating_sub(self.opened),
            messages_in = traffic.messages_in,
            messages_out = traffic.messages_out,
            bytes_in = traffic.bytes_in,
            bytes_out = traffic.bytes_out,
            "connection closed"
        );
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

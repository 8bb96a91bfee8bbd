//! ferrosock: a WebSocket server and client for Rust whose API is modelled on the 4D language's
//! `WebSocketServer`, `WebSocketConnection` and `WebSocket` classes, on an RFC 6455 stack built
//! for conformance and speed.
//!
//! ```text
//!   server::WebServer (hyper HTTP/1.1, TLS)    static files · 404 · upgrade routing by path
//!         │ Upgrade: websocket                          client::WebSocket::new / connect
//!   server::WebSocketServer ── on_connection ─▶ 403      │ URL → TCP → TLS → handshake
//!         │ Some(handler) → 101                          │
//!         ▼──────────────────────────────────────────────┘
//!   conn: one driver task per connection      read → decode → callbacks; send → write queue
//!         │                                    keepalive · close handshake · limits
//!         ▼
//!   proto: sans-IO RFC 6455                    frames · masking · UTF-8 · close codes · handshake
//! ```
//!
//! Layers point down only: `proto` knows no I/O, `conn` knows no 4D API.
//!
//! # Example: the uppercase server of the 4D documentation
//!
//! ```no_run
//! use ferrosock::{ConnectionEvent, ConnectionHandler, MessageEvent, ServerHandler, ServerOptions};
//! use ferrosock::{WebServer, WebServerOptions, WebSocketConnection, WebSocketServer};
//!
//! struct MyServerHandler;
//! struct MyConnectionHandler;
//!
//! impl ServerHandler for MyServerHandler {
//!     type Connection = MyConnectionHandler;
//!     // Called for each client before the handshake is answered; None refuses it (403).
//!     fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<MyConnectionHandler> {
//!         Some(MyConnectionHandler)
//!     }
//! }
//!
//! impl ConnectionHandler for MyConnectionHandler {
//!     type Server = MyServerHandler;
//!     fn on_message(&self, ws: &WebSocketConnection<MyServerHandler>, event: MessageEvent) {
//!         // Resend the message in uppercase.
//!         let _ = ws.send(event.data.to_text().to_uppercase());
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ferrosock::Error> {
//!     let web = WebServer::start(WebServerOptions::default().listen("127.0.0.1:8080")).await?;
//!     let _wss = WebSocketServer::new(&web, MyServerHandler, ServerOptions::default())?;
//!     tokio::signal::ctrl_c().await.ok();
//!     web.stop().await; // closes every client with 1001
//!     Ok(())
//! }
//! ```
//!
//! # Example: a client
//!
//! ```no_run
//! use ferrosock::{ClientHandler, MessageEvent, WebSocket};
//!
//! struct Printer;
//! impl ClientHandler for Printer {
//!     fn on_message(&self, _ws: &WebSocket<Self>, event: MessageEvent) {
//!         println!("{}", event.data.to_text());
//!     }
//! }
//!
//! # async fn run() -> Result<(), ferrosock::Error> {
//! let ws = WebSocket::connect("wss://example.com/feed", Printer).await?;
//! ws.send("subscribe")?;
//! ws.closed().await;
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//! The exact semantics (callback order, close codes and reasons, limits) are those of the
//! project's specification; the items' docs state them where they apply.
//! - Callbacks of one connection never run concurrently and run in event order.
//! - `send` never blocks; a peer that does not read costs only its own byte budget
//!   ([`Limits::max_outgoing_bytes`]).
//! - A panic in a callback closes only that connection, with 1011.
//! - Every limit has a default and a knob ([`Limits`], [`ServerOptions`], [`WebServerOptions`]).
//! - Every server counts its connections, messages, bytes and closes, at the cost of a few
//!   relaxed atomic additions per message ([`WebSocketServer::stats`], the [`stats`] module,
//!   Prometheus' text format).
#![deny(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod broker;
pub use server::door;
mod client;
/// The process-wide cap on bytes queued for sending, and what queued bytes cost.
///
/// A connection's own budget is [`Limits::max_outgoing_bytes`]; these functions bound what all
/// connections (and client sockets) of the process hold together.
pub mod memory {
    pub use crate::conn::budget::{
        max_queued_bytes, queued_bytes, set_max_queued_bytes, DEFAULT_MAX_QUEUED_BYTES,
        QUEUED_MESSAGE_OVERHEAD,
    };
}
mod common;
mod conn;
mod error;
mod event;
mod handle;
mod limits;
mod message;
mod request;
/// The sans-IO codec, re-exported from the [`ferrosock_proto`] crate: frames, masking, UTF-8,
/// close codes, the opening handshake and permessage-deflate.
pub use ferrosock_proto as proto;
mod server;
pub mod stats;
mod tls;

pub use broker::{Broker, LocalBroker};
pub use bytes::Bytes;
pub use bytestring::ByteString;
pub use client::{
    reconnect, ClientHandler, ClientOptions, Proxy, ProxySetting, Reconnect, WebSocket,
};
pub use common::{Compress, Status};
pub use error::{Error, ErrorKind};
pub use event::{
    ConnectionEvent, ErrorEvent, ErrorInfo, MessageEvent, OpenEvent, ReconnectEvent,
    ServerTerminateEvent, TerminateEvent,
};
pub use limits::{BackpressurePolicy, Limits};
pub use message::{DataType, Message};
pub use proto::deflate::PerMessageDeflate;
pub use request::{Params, Request};
pub use server::{
    ConnectionHandler, ServerHandler, ServerOptions, Terminating, TlsFiles, WebServer,
    WebServerOptions, WebSocketConnection, WebSocketServer,
};

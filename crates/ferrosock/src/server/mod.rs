//! The 4D-style server API: [`WebServer`], [`WebSocketServer`], [`WebSocketConnection`] and
//! their handler traits. Frames are never parsed here: connections run on `conn`'s driver.
//!
//! The web server and the WebSocket server meet only through the upgrade core
//! ([`upgrade`]): the web server routes upgrade requests to endpoints and turns their
//! decisions into responses; [`mount`] is where a WebSocket server is attached to a web server.
//! [`door`] gives the same core to other HTTP servers (axum, tower, hyper).

mod accept;
mod connection;
pub mod door;
mod endpoint;
mod handler;
mod mount;
mod options;
mod registry;
mod relay;
mod serial;
mod termination;
#[cfg(test)]
mod tests;
mod upgrade;
mod web_http2;
mod web_options;
mod web_server;
mod websocket_server;

pub use connection::WebSocketConnection;
pub use handler::{ConnectionHandler, ServerHandler};
pub use options::ServerOptions;
pub use termination::Terminating;
pub use web_options::{TlsFiles, WebServerOptions};
pub use web_server::WebServer;
pub use websocket_server::WebSocketServer;

//! The 4D-style server API: [`WebServer`], [`WebSocketServer`], [`WebSocketConnection`] and
//! their handler traits. Frames are never parsed here: connections run on `conn`'s driver.

mod connection;
mod handler;
mod request;
#[cfg(test)]
mod tests;
mod topics;
mod web_server;
mod websocket_server;

pub use connection::WebSocketConnection;
pub use handler::{ConnectionHandler, ServerHandler};
pub use request::{Params, Request};
pub use web_server::{TlsFiles, WebServer, WebServerOptions};
pub use websocket_server::{ServerOptions, Terminating, WebSocketServer};

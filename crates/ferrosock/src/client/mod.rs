//! The 4D-style client API: [`WebSocket`] and its [`ClientHandler`]. Connections run on the
//! same `conn` driver and `proto` codec as the server's.

mod connect;
mod handler;
mod websocket;

pub use connect::ClientOptions;
pub use handler::ClientHandler;
pub use websocket::WebSocket;

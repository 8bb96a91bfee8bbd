//! The 4D-style client API: [`WebSocket`] and its [`ClientHandler`]. Connections run on the
//! same `conn` driver and `proto` codec as the server's; `connect` is the pipeline that opens
//! them (proxy, TCP, TLS, HTTP/1.1 or HTTP/2, redirects).

mod connect;
mod handler;
mod http2;
mod options;
mod proxy;
pub mod reconnect;
mod websocket;

pub use handler::ClientHandler;
pub use options::ClientOptions;
pub use proxy::{Proxy, ProxySetting};
pub use reconnect::Reconnect;
pub use websocket::WebSocket;

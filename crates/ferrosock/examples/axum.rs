//! ferrosock inside an axum app: `GET /hello` is an ordinary axum route, and `/chat` is a
//! ferrosock `WebSocketServer` (the 4D documentation's chat) mounted on the same `Router`,
//! port and runtime — with ferrosock's compression, limits, topics and callbacks. WebSockets
//! arrive over HTTP/1.1 (upgrade) and HTTP/2 (extended CONNECT, RFC 8441): `route()` takes
//! every method and `axum::serve` enables extended CONNECT.
//!
//! ```sh
//! cargo run -p ferrosock --features axum --example axum [ADDR]    # default 127.0.0.1:3000
//! ```
//!
//! Graceful shutdown: on SIGTERM (or Ctrl-C) every WebSocket gets a close frame with 1001
//! and the app waits for them before axum stops — axum's own graceful shutdown does not wait
//! for upgraded connections (axum#3003). See `ferrosock::door`.

#[path = "shared/chat.rs"]
mod chat;

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use ferrosock::{ServerOptions, WebSocketServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    // A WebSocket server of its own, for the doors: no ferrosock WebServer.
    let chat = WebSocketServer::detached(chat::Chat, ServerOptions::default())?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/chat", chat.route());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("axum example: http://{}/", listener.local_addr()?);
    // The recipe: on the signal, close every WebSocket with 1001 and wait for them (5 s at
    // most), then let axum finish its HTTP requests and return.
    let shutdown = async move {
        chat::terminated().await;
        chat.shutdown(Duration::from_secs(5)).await;
    };
    // With ConnectInfo, `request.remote_address()` is the client's address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    println!("axum example: stopped");
    Ok(())
}

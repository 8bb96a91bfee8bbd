//! ferrosock on a plain hyper-util server: `GET /hello` answers `hello`, and `/chat` is a
//! ferrosock `WebSocketServer` (the 4D documentation's chat) reached through
//! `WebSocketServer::upgrade`, over HTTP/1.1 and HTTP/2 (extended CONNECT, RFC 8441) on the
//! same port.
//!
//! ```sh
//! cargo run -p ferrosock --example hyper [ADDR]    # default 127.0.0.1:3000
//! ```
//!
//! On SIGTERM (or Ctrl-C) it stops accepting, closes every WebSocket with 1001 and waits for
//! them, lets HTTP requests in flight finish, and exits.

#[path = "shared/chat.rs"]
mod chat;

use std::convert::Infallible;
use std::time::Duration;

use ferrosock::door::{self, RemoteAddr};
use ferrosock::{ServerOptions, WebSocketServer};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let chat = WebSocketServer::detached(chat::Chat, ServerOptions::default())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hyper example: http://{}/", listener.local_addr()?);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/2 WebSockets need SETTINGS_ENABLE_CONNECT_PROTOCOL.
    builder.http2().enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let signal = chat::terminated();
    tokio::pin!(signal);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut signal => break,
        };
        let chat = chat.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            // A door does not see the socket: tell it who the client is.
            request.extensions_mut().insert(RemoteAddr(remote));
            let chat = chat.clone();
            async move {
                let response = match request.uri().path() {
                    "/hello" => http::Response::new(door::Body::from("hello")),
                    "/chat" => chat.upgrade(request),
                    _ => {
                        let mut response = http::Response::new(door::Body::from("Not Found"));
                        *response.status_mut() = http::StatusCode::NOT_FOUND;
                        response
                    }
                };
                Ok::<_, Infallible>(response)
            }
        });
        // With upgrades: hyper hands the socket over after the 101.
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("hyper example: connection from {remote}: {err}");
            }
        });
    }
    drop(listener);
    // Every WebSocket gets its 1001 first, then the HTTP connections finish.
    chat.shutdown(Duration::from_secs(5)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    println!("hyper example: stopped");
    Ok(())
}

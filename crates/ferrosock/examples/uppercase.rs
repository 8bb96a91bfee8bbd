//! The first example of 4D's WebSocketServer page: a server that sends every message back in
//! upper case.
//!
//! ```sh
//! cargo run -p ferrosock --example uppercase            # ws://127.0.0.1:8080/
//! cargo run -p ferrosock --example uppercase -- 0.0.0.0:9000
//! ```

use ferrosock::{
    ConnectionEvent, ConnectionHandler, MessageEvent, ServerHandler, ServerOptions, WebServer,
    WebServerOptions, WebSocketConnection, WebSocketServer,
};

/// Handles the connections to the server (4D's `myServerHandler`).
struct MyServerHandler;

/// Handles the messages of one connection (4D's `myConnectionHandler`).
struct MyConnectionHandler;

impl ServerHandler for MyServerHandler {
    type Connection = MyConnectionHandler;

    fn on_connection(
        &self,
        _wss: &WebSocketServer<Self>,
        _event: ConnectionEvent,
    ) -> Option<MyConnectionHandler> {
        // Returns the object that will handle the messages.
        Some(MyConnectionHandler)
    }
}

impl ConnectionHandler for MyConnectionHandler {
    type Server = MyServerHandler;

    fn on_message(&self, ws: &WebSocketConnection<MyServerHandler>, message: MessageEvent) {
        // Resends the message in uppercase.
        if let Err(err) = ws.send(message.data.to_text().to_uppercase()) {
            eprintln!("connection {}: {err}", ws.id());
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), ferrosock::Error> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    // The web server must be started first; the WebSocket server shares its host and port.
    let web = WebServer::start(WebServerOptions::default().listen(listen)).await?;
    let _wss = WebSocketServer::new(&web, MyServerHandler, ServerOptions::default())?;
    println!(
        "uppercase server on ws://{}/ (Ctrl-C stops it)",
        web.local_addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    web.stop().await;
    Ok(())
}

//! The chat example of 4D's WebSocketServer page: every message goes to every other client.
//!
//! The server handler accepts only the addresses `verify_address` allows and logs the
//! server's life; the connection handler welcomes newcomers and broadcasts.
//!
//! ```sh
//! cargo run -p ferrosock --example chat                 # ws://127.0.0.1:8080/chat
//! ```
//! Then connect two clients, for example with `websocat ws://127.0.0.1:8080/chat` or the
//! page that `ferrosock serve` ships.

use ferrosock::{
    ConnectionEvent, ConnectionHandler, ErrorEvent, MessageEvent, OpenEvent, ServerHandler,
    ServerOptions, ServerTerminateEvent, TerminateEvent, WebServer, WebServerOptions,
    WebSocketConnection, WebSocketServer,
};

/// 4D's `myWSServerHandler`.
struct MyWsServerHandler;

/// 4D's `myConnectionHandler`.
struct MyConnectionHandler;

/// Validates the client's address (4D's `VerifyAddress`): here, loopback clients only.
fn verify_address(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn log_file(line: &str) {
    eprintln!("{line}");
}

impl ServerHandler for MyWsServerHandler {
    type Connection = MyConnectionHandler;

    fn on_connection(
        &self,
        _wss: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<MyConnectionHandler> {
        if verify_address(event.request.remote_address()) {
            // The returned handler is used for the connection's messages.
            Some(MyConnectionHandler)
        } else {
            // The connection is cancelled (HTTP 403).
            None
        }
    }

    fn on_open(&self, _wss: &WebSocketServer<Self>, _event: OpenEvent) {
        log_file("*** Server started");
    }

    fn on_terminate(&self, _wss: &WebSocketServer<Self>, _event: ServerTerminateEvent) {
        log_file("*** Server closed");
    }

    fn on_error(&self, _wss: &WebSocketServer<Self>, event: ErrorEvent) {
        log_file(&format!("!!! Server error: {}", event.errors[0].message));
    }
}

impl MyConnectionHandler {
    /// Sends `message` to every chat client except `ws`.
    fn broadcast(&self, ws: &WebSocketConnection<MyWsServerHandler>, message: &str) {
        for client in ws.wss().connections() {
            // Check that the id is not the current connection.
            if client.id() != ws.id() {
                let _ = client.send(message);
            }
        }
    }
}

impl ConnectionHandler for MyConnectionHandler {
    type Server = MyWsServerHandler;

    fn on_message(&self, ws: &WebSocketConnection<MyWsServerHandler>, message: MessageEvent) {
        // Resend the message to all chat clients.
        self.broadcast(ws, &message.data.to_text());
    }

    fn on_open(&self, ws: &WebSocketConnection<MyWsServerHandler>, _event: OpenEvent) {
        // Send a message to new connected users.
        let _ = ws.send("Welcome on the chat!");
        // Send "New client connected" message to all other chat clients.
        self.broadcast(ws, "New client connected");
    }

    fn on_terminate(&self, ws: &WebSocketConnection<MyWsServerHandler>, _event: TerminateEvent) {
        // Send "Client disconnected" message to all other chat clients.
        self.broadcast(ws, "Client disconnected");
    }
}

#[tokio::main]
async fn main() -> Result<(), ferrosock::Error> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let web = WebServer::start(WebServerOptions::default().listen(listen)).await?;
    let wss = WebSocketServer::new(
        &web,
        MyWsServerHandler,
        ServerOptions::default().path("/chat"),
    )?;
    println!(
        "chat server on ws://{}/chat (Ctrl-C stops it)",
        web.local_addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    // Closes every client with 1000 and runs on_terminate; then stop the web server.
    wss.terminate().await;
    web.stop().await;
    Ok(())
}

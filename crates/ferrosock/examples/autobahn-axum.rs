//! The Autobahn TestSuite's server-role target through the axum door: an axum app whose
//! `/` route is a ferrosock echo server, with the limits and compression of
//! `ferrosock echo --compress always` (16 MiB messages and budget; every echo compressed once
//! permessage-deflate is negotiated). `scripts/autobahn --door axum` runs the cases against it.
//!
//! ```sh
//! cargo run --release -p ferrosock --features axum --example autobahn-axum -- 127.0.0.1:0
//! ```

use ferrosock::{
    Compress, ConnectionEvent, ConnectionHandler, DataType, Limits, MessageEvent, ServerHandler,
    ServerOptions, WebSocketConnection, WebSocketServer,
};

/// Sends every message back as it came, compressed when permessage-deflate was negotiated.
struct Echo;
struct EchoConnection;

impl ServerHandler for Echo {
    type Connection = EchoConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        _: ConnectionEvent,
    ) -> Option<EchoConnection> {
        Some(EchoConnection)
    }
}

impl ConnectionHandler for EchoConnection {
    type Server = Echo;

    fn on_message(&self, ws: &WebSocketConnection<Echo>, event: MessageEvent) {
        let _ = ws.send_with(event.data, Compress::Always);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let limits = Limits::default()
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
        .max_outgoing_bytes(16 << 20);
    let options = ServerOptions::default()
        .data_type(DataType::Auto)
        .limits(limits);
    let echo = WebSocketServer::detached(Echo, options)?;
    let app = axum::Router::new().route("/", echo.route());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    // The line scripts/autobahn waits for, as `ferrosock echo` prints it.
    eprintln!("ferrosock echo: ws://{}/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

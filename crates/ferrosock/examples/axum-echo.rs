//! `ferrosock echo` through the axum door: an axum app whose `/` route is a ferrosock echo
//! server with the command's settings (16 MiB messages and budget, data type `Auto`), for
//! conformance and load tests of the door. `--compress always` compresses every echo once
//! permessage-deflate is negotiated, as `ferrosock echo --compress always` does:
//! `scripts/autobahn --door axum` runs the Autobahn cases against it that way.
//!
//! ```sh
//! cargo run --release -p ferrosock --features axum --example axum-echo -- 127.0.0.1:0 [--compress always]
//! ```

use ferrosock::{
    Compress, ConnectionEvent, ConnectionHandler, DataType, Limits, MessageEvent, ServerHandler,
    ServerOptions, WebSocketConnection, WebSocketServer,
};

/// Sends every message back as it came, compressed as `Compress` says when permessage-deflate
/// was negotiated.
struct Echo(Compress);
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
        let _ = ws.send_with(event.data, ws.wss().handler().0);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let compress = match args.get(1..).unwrap_or_default() {
        [] => Compress::Auto,
        [flag, when] if flag == "--compress" && when == "always" => Compress::Always,
        [flag, when] if flag == "--compress" && when == "auto" => Compress::Auto,
        other => {
            return Err(
                format!("usage: axum-echo [ADDR] [--compress auto|always], not {other:?}").into(),
            )
        }
    };
    let limits = Limits::default()
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
        .max_outgoing_bytes(16 << 20);
    let options = ServerOptions::default()
        .data_type(DataType::Auto)
        .limits(limits);
    let echo = WebSocketServer::detached(Echo(compress), options)?;
    let app = axum::Router::new().route("/", echo.route());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    // The line scripts/autobahn waits for, as `ferrosock echo` prints it.
    eprintln!("ferrosock echo: ws://{}/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

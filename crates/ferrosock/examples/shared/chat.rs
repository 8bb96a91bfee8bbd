//! The chat of the 4D documentation, as `ferrosock serve` runs it at `/chat`: a welcome for
//! each newcomer, a notice to the others when someone joins or leaves, and every message to
//! every other member. Shared by the axum and hyper examples.

use ferrosock::{
    ConnectionEvent, ConnectionHandler, ErrorEvent, MessageEvent, OpenEvent, ServerHandler,
    TerminateEvent, WebSocketConnection, WebSocketServer,
};

/// The chat server's handler.
pub struct Chat;

/// One member's connection.
pub struct Member;

impl ServerHandler for Chat {
    type Connection = Member;

    fn on_connection(&self, _: &WebSocketServer<Self>, event: ConnectionEvent) -> Option<Member> {
        // Behind a door the address comes from the HTTP server (see ferrosock::door).
        eprintln!(
            "chat: {} joins over {:?}",
            event.request.remote_address(),
            event.request.http_version()
        );
        Some(Member)
    }

    fn on_error(&self, _: &WebSocketServer<Self>, event: ErrorEvent) {
        eprintln!("chat: server error: {}", event.errors[0].message);
    }
}

impl ConnectionHandler for Member {
    type Server = Chat;

    fn on_open(&self, ws: &WebSocketConnection<Chat>, _: OpenEvent) {
        let _ = ws.send("Welcome on the chat!");
        // broadcast builds the frame once for every other member.
        ws.wss().broadcast("New client connected", Some(ws.id()));
    }

    fn on_message(&self, ws: &WebSocketConnection<Chat>, event: MessageEvent) {
        ws.wss().broadcast(event.data, Some(ws.id()));
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Chat>, _: TerminateEvent) {
        ws.wss().broadcast("Client disconnected", Some(ws.id()));
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn terminated() {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

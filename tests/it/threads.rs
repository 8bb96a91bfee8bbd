//! Thread-per-core mode (`WebServerOptions::threads`): a connection lives on the thread that
//! accepted it, handles and broadcasts reach it from anywhere, blocking callbacks are handed to
//! the blocking pool instead of stalling the thread, and `stop` ends it all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrosock::{
    ConnectionEvent, ConnectionHandler, MessageEvent, OpenEvent, ServerHandler, ServerOptions,
    WebServer, WebServerOptions, WebSocketConnection, WebSocketServer,
};
use ferrosock_tests::*;

/// Records the threads each connection's callbacks ran on; echoes. With a gate, the first
/// `on_connection` blocks on it.
#[derive(Default)]
struct Threads {
    seen: Mutex<BTreeMap<u64, BTreeSet<String>>>,
    gate: Option<Arc<Gate>>,
    first_blocked: AtomicBool,
}

struct ThreadsConnection;

impl ServerHandler for Threads {
    type Connection = ThreadsConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        _: ConnectionEvent,
    ) -> Option<ThreadsConnection> {
        if let Some(gate) = &self.gate {
            if !self.first_blocked.swap(true, Ordering::SeqCst) {
                gate.block();
            }
        }
        Some(ThreadsConnection)
    }
}

impl ConnectionHandler for ThreadsConnection {
    type Server = Threads;

    fn on_open(&self, ws: &WebSocketConnection<Threads>, _: OpenEvent) {
        note_thread(ws);
    }

    fn on_message(&self, ws: &WebSocketConnection<Threads>, event: MessageEvent) {
        note_thread(ws);
        let _ = ws.send(event.data);
    }
}

fn note_thread(ws: &WebSocketConnection<Threads>) {
    let name = std::thread::current()
        .name()
        .unwrap_or("(unnamed)")
        .to_owned();
    let mut seen = ws.wss().handler().seen.lock().unwrap();
    seen.entry(ws.id()).or_default().insert(name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_lives_on_one_of_the_servers_threads() {
    let web = web_server_with(WebServerOptions::default().threads(2)).await;
    let addr = web.local_addr();
    let wss = WebSocketServer::new(&web, Threads::default(), ServerOptions::default()).unwrap();
    // 32 connections: the kernel spreads them over the two listening sockets by a hash of
    // their addresses; all on one would take odds of 1 in 2^31.
    let mut clients = Vec::new();
    for _ in 0..32 {
        clients.push(RawClient::connect(addr, "/").await);
    }
    for round in 0..3 {
        for client in &mut clients {
            client.send_text(&format!("round {round}")).await;
        }
        for client in &mut clients {
            assert_eq!(client.recv_message().await, text(&format!("round {round}")));
        }
    }
    let seen = wss.handler().seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 32, "{seen:?}");
    let mut threads = BTreeSet::new();
    for (id, names) in &seen {
        assert_eq!(names.len(), 1, "connection {id} ran on {names:?}");
        let name = names.first().unwrap();
        assert!(name.starts_with("ferrosock-web-"), "{name}");
        threads.insert(name.clone());
    }
    assert_eq!(threads.len(), 2, "both threads serve: {threads:?}");

    // From this runtime's threads: a broadcast, and each connection's handle.
    assert_eq!(wss.broadcast("to all", None), 32);
    for client in &mut clients {
        assert_eq!(client.recv_message().await, text("to all"));
    }
    for connection in wss.connections() {
        connection.send("to you").unwrap();
    }
    for client in &mut clients {
        assert_eq!(client.recv_message().await, text("to you"));
    }

    web.stop().await;
    for client in &mut clients {
        let close = client.recv_close().await.expect("a close frame");
        assert_eq!(close.code, ferrosock::proto::CloseCode::GOING_AWAY);
    }
    // Every listening socket is closed once `stop` returns.
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("the port is free after stop");
}

/// One server thread, handlers that block it with `blocking_callbacks`: they run on the
/// blocking pool, so the thread goes on serving the other connections, and each connection's
/// callbacks still run in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_callbacks_leave_the_thread_to_the_other_connections() {
    let web = web_server_with(WebServerOptions::default().threads(1)).await;
    let addr = web.local_addr();
    let gate = Arc::new(Gate::default());
    let (probe, _events) = Probe::new(Behavior::BlockUntil("block", gate.clone()));
    let options = ServerOptions::default().blocking_callbacks(true);
    let _wss = WebSocketServer::new(&web, probe, options).unwrap();
    blocked_handlers_do_not_stall_the_others(addr, "/", &gate).await;

    // `on_connection` too: the first handshake waits in it while a second one completes.
    let gate = Arc::new(Gate::default());
    let handler = Threads {
        gate: Some(gate.clone()),
        ..Threads::default()
    };
    let options = ServerOptions::default()
        .path("/gated")
        .blocking_callbacks(true);
    let _gated = WebSocketServer::new(&web, handler, options).unwrap();
    let first = tokio::spawn(async move { RawClient::connect(addr, "/gated").await });
    gate.entered(1).await;
    let mut second = RawClient::connect(addr, "/gated").await;
    second.send_text("second").await;
    assert_eq!(second.recv_message().await, text("second"));
    assert!(
        !first.is_finished(),
        "the first handshake waits for its on_connection"
    );
    gate.open();
    let mut first = within("the first handshake", first).await.unwrap();
    first.send_text("first").await;
    assert_eq!(first.recv_message().await, text("first"));
    web.stop().await;
}

/// Blocking callbacks on the caller's runtime when it is a current-thread one (once refused):
/// handed to the blocking pool the same way.
#[tokio::test(flavor = "current_thread")]
async fn blocking_callbacks_work_on_a_current_thread_runtime() {
    let gate = Arc::new(Gate::default());
    let options = ServerOptions::default().blocking_callbacks(true);
    let behavior = Behavior::BlockUntil("block", gate.clone());
    let (web, _wss, _events) = probe_server(behavior, options).await;
    blocked_handlers_do_not_stall_the_others(web.local_addr(), "/", &gate).await;
    web.stop().await;
}

/// Four handlers block on `gate` while another client is served; once it opens, the blocked
/// connections answer in order and carry on.
async fn blocked_handlers_do_not_stall_the_others(
    addr: std::net::SocketAddr,
    path: &str,
    gate: &Gate,
) {
    let mut blocked = Vec::new();
    for _ in 0..4 {
        blocked.push(RawClient::connect(addr, path).await);
    }
    for client in &mut blocked {
        client.send_text("block").await;
        client.send_text("after the block").await;
    }
    gate.entered(4).await;
    let mut quick = RawClient::connect(addr, path).await;
    for i in 0..5 {
        quick.send_text(&format!("quick {i}")).await;
        assert_eq!(quick.recv_message().await, text(&format!("quick {i}")));
    }
    for client in &mut blocked {
        let answer = tokio::time::timeout(std::time::Duration::ZERO, client.recv()).await;
        assert!(answer.is_err(), "a blocked handler answered: {answer:?}");
    }
    gate.open();
    for client in &mut blocked {
        assert_eq!(client.recv_message().await, text("block"));
        assert_eq!(client.recv_message().await, text("after the block"));
        client.send_text("and then").await;
        assert_eq!(client.recv_message().await, text("and then"));
    }
}

#[tokio::test]
async fn zero_threads_is_refused() {
    let err = WebServer::start(WebServerOptions::default().listen("127.0.0.1:0").threads(0))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ferrosock::ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("threads"), "{err}");
}

//! `WebSocketServer::stats`: what a server counts, checked against traffic whose every byte
//! the test knows, and the same figures in the Prometheus exporters.

use std::time::Duration;

use ferrosock::proto::{Decoded, OpCode};
use ferrosock::stats::ServerStats;
use ferrosock::{
    ClientHandler, ClientOptions, ConnectionEvent, ConnectionHandler, DataType, Limits,
    MessageEvent, ServerHandler, ServerOptions, WebServer, WebSocket, WebSocketConnection,
    WebSocketServer,
};
use ferrosock_tests::*;

/// Echoes, except for a few commands: `sub T` and `unsub T` (answered), `panic`, and
/// `flood` (large messages until the connection's budget gives out). Refuses clients whose
/// URL asks for it (`?refuse`).
struct Meter;
struct Metered;

impl ServerHandler for Meter {
    type Connection = Metered;
    fn on_connection(&self, _: &WebSocketServer<Self>, event: ConnectionEvent) -> Option<Metered> {
        (!event.request.url().contains("refuse")).then_some(Metered)
    }
}

impl ConnectionHandler for Metered {
    type Server = Meter;
    fn on_message(&self, ws: &WebSocketConnection<Meter>, event: MessageEvent) {
        let text = event.data.to_text();
        match text.split_once(' ') {
            Some(("sub", topic)) => {
                let _ = ws.send(format!("sub {}", ws.subscribe(topic)));
            }
            Some(("unsub", topic)) => {
                let _ = ws.send(format!("unsub {}", ws.unsubscribe(topic)));
            }
            _ if text == "panic" => panic!("asked to"),
            _ if text == "flood" => {
                let big = vec![b'x'; 256 << 10];
                while ws.send(big.clone()).is_ok() {}
            }
            _ => {
                let _ = ws.send(event.data);
            }
        }
    }
}

async fn meter(limits: Limits) -> (WebServer, WebSocketServer<Meter>) {
    let web = web_server().await;
    let options = ServerOptions::default()
        .path("/meter")
        .data_type(DataType::Auto)
        .limits(limits);
    let wss = WebSocketServer::new(&web, Meter, options).unwrap();
    (web, wss)
}

/// Waits until the server's figures satisfy `check` (what a driver counts once a write
/// returns may trail the peer's read of it), and returns them.
async fn settled<H: ServerHandler>(
    wss: &WebSocketServer<H>,
    what: &str,
    check: impl Fn(&ServerStats) -> bool,
) -> ServerStats {
    let waited = within_for(Duration::from_secs(30), what, async {
        loop {
            let stats = wss.stats();
            if check(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited.await
}

fn closes(stats: &ServerStats) -> Vec<(&str, u64)> {
    stats.closes.iter().map(|(c, n)| (c.as_str(), *n)).collect()
}

#[tokio::test]
async fn messages_bytes_and_frames_are_counted_each_way_by_type() {
    let (web, wss) = meter(Limits::default()).await;
    let addr = web.local_addr();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(RawClient::connect(addr, "/meter").await);
    }
    let stats = settled(&wss, "3 connections", |s| s.connections == 3).await;
    assert_eq!(stats.handshakes_accepted, 3);
    // Each client: 4 texts of 5 bytes and 2 binaries of 200, and a ping.
    for client in &mut clients {
        for _ in 0..4 {
            client.send_text("hello").await;
            assert_eq!(client.recv_message().await, text("hello"));
        }
        for _ in 0..2 {
            client.send_binary(&[7; 200]).await;
            assert_eq!(client.recv_message().await, binary(&[7; 200]));
        }
        client.send_frame(true, OpCode::Ping, b"p").await;
        assert!(matches!(client.recv().await, Some(Decoded::Pong(_))));
    }
    // On the wire, per client: a masked frame has 2 + 4 bytes of header (4 more from 126
    // bytes of payload), the server's 2 (4).
    let received = 3 * (4 * (6 + 5) + 2 * (8 + 200) + (6 + 1));
    let sent = 3 * (4 * (2 + 5) + 2 * (4 + 200) + (2 + 1));
    let stats = settled(&wss, "every reply counted", |s| s.sent_bytes == sent).await;
    assert_eq!(stats.received_bytes, received);
    assert_eq!((stats.received.text, stats.received.binary), (12, 6));
    assert_eq!((stats.sent.text, stats.sent.binary), (12, 6));
    assert_eq!((stats.received.ping, stats.sent.pong), (3, 3));
    assert_eq!(stats.messages_received(), 18);
    assert_eq!(stats.messages_sent(), 18);
    assert_eq!(stats.inflated, Default::default(), "nothing was compressed");

    // Three ways to end: a clean close, an application code, and a dropped socket.
    let mut clients = clients.into_iter();
    let mut first = clients.next().unwrap();
    first.send_close(1000, "bye").await;
    assert_eq!(first.recv_close().await.map(|f| f.code.0), Some(1000));
    let mut second = clients.next().unwrap();
    second.send_close(4321, "mine").await;
    second.recv_close().await;
    clients.next().unwrap().drop_connection();
    let stats = settled(&wss, "three ends", |s| s.connections_closed() == 3).await;
    assert_eq!(closes(&stats), [("1000", 1), ("1006", 1), ("4xxx", 1)]);
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.connections_opened, 3);
    assert_eq!((stats.received.close, stats.sent.close), (2, 2));
    web.stop().await;
}

#[tokio::test]
async fn refused_handshakes_are_counted_by_reason_under_the_configured_path() {
    let web = web_server().await;
    let options = ServerOptions::default().path("/meter").max_connections(1);
    let wss = WebSocketServer::new(&web, Meter, options).unwrap();
    let addr = web.local_addr();
    let refused = RawClient::try_connect(addr, upgrade_request("/meter?refuse", &[])).await;
    assert_eq!(refused.err().map(|r| r.status), Some(403));
    let bad = upgrade_request("/meter", &[]).replace("Version: 13", "Version: 12");
    assert_eq!(
        RawClient::try_connect(addr, bad)
            .await
            .err()
            .map(|r| r.status),
        Some(426)
    );
    let held = RawClient::connect(addr, "/meter").await;
    let full = RawClient::try_connect(addr, upgrade_request("/meter", &[])).await;
    assert_eq!(full.err().map(|r| r.status), Some(503));
    // Another path: no server there, nothing counted here.
    let elsewhere = RawClient::try_connect(addr, upgrade_request("/other", &[])).await;
    assert_eq!(elsewhere.err().map(|r| r.status), Some(404));
    let refused = wss.stats().handshakes_refused;
    assert_eq!(
        (
            refused.forbidden,
            refused.bad_request,
            refused.unavailable,
            refused.not_found
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(wss.stats().handshakes_accepted, 1);
    let mut text = String::new();
    ferrosock::stats::write_prometheus(&mut text, &[wss.stats_handle()]);
    assert!(
        text.contains(
            "ferrosock_handshakes_refused_total{path=\"/meter\",reason=\"forbidden\"} 1\n"
        ),
        "{text}"
    );
    held.drop_connection();
    web.stop().await;
}

#[tokio::test]
async fn panics_budget_cuts_and_topics_are_counted() {
    let (web, wss) = meter(Limits::default().max_outgoing_bytes(1 << 20)).await;
    let addr = web.local_addr();
    let mut a = RawClient::connect(addr, "/meter").await;
    let mut b = RawClient::connect(addr, "/meter").await;
    for (client, topic) in [(0, "x"), (0, "y"), (1, "x")] {
        let client = if client == 0 { &mut a } else { &mut b };
        client.send_text(&format!("sub {topic}")).await;
        assert_eq!(client.recv_text().await, "sub true");
    }
    let stats = wss.stats();
    assert_eq!((stats.topics, stats.subscriptions), (2, 3));
    a.send_text("unsub y").await;
    assert_eq!(a.recv_text().await, "unsub true");
    assert_eq!((wss.stats().topics, wss.stats().subscriptions), (1, 2));

    // A panic fails its connection with 1011; its topics are left.
    a.send_text("panic").await;
    assert_eq!(a.recv_close().await.map(|f| f.code.0), Some(1011));
    let stats = settled(&wss, "the panic's end", |s| s.connections == 1).await;
    assert_eq!(stats.callback_panics, 1);
    assert_eq!((stats.topics, stats.subscriptions), (1, 1));

    // A client that does not read what it asked for is cut with 1008, once.
    b.send_text("flood").await;
    settled(&wss, "the cut", |s| s.budget_cuts == 1).await;
    drop(b);
    let stats = settled(&wss, "the end", |s| s.connections == 0).await;
    assert_eq!(stats.budget_cuts, 1);
    assert_eq!(closes(&stats), [("1008", 1), ("1011", 1)]);
    assert_eq!((stats.topics, stats.subscriptions), (0, 0));
    web.stop().await;
}

struct Quiet;
impl ClientHandler for Quiet {}

#[tokio::test]
async fn compression_is_counted_before_and_after() {
    let (web, wss) = meter(Limits::default()).await;
    let url = format!("ws://{}/meter", web.local_addr());
    let ws = WebSocket::connect_with(&url, Quiet, ClientOptions::default())
        .await
        .unwrap();
    let message = "compressible ".repeat(1000);
    for _ in 0..3 {
        ws.send(message.as_str()).unwrap();
    }
    let stats = settled(&wss, "three compressed echoes", |s| s.sent.text == 3).await;
    let len = 3 * message.len() as u64;
    assert_eq!(stats.inflated.uncompressed_bytes, len);
    assert_eq!(stats.deflated.uncompressed_bytes, len);
    for compressed in [
        stats.inflated.compressed_bytes,
        stats.deflated.compressed_bytes,
    ] {
        assert!(compressed > 0 && compressed < len / 10, "{stats:?}");
    }
    ws.terminate();
    web.stop().await;
}

#[tokio::test]
async fn a_prometheus_client_registry_reads_the_same_figures_at_scrape_time() {
    let (web, wss) = meter(Limits::default()).await;
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(ferrosock::stats::PrometheusCollector::new([
        wss.stats_handle()
    ])));
    let mut client = RawClient::connect(web.local_addr(), "/meter").await;
    client.send_text("one").await;
    client.recv_message().await;
    settled(&wss, "the echo", |s| s.sent.text == 1).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for expected in [
        "# TYPE ferrosock_messages_received counter\n",
        "ferrosock_messages_received_total{path=\"/meter\",type=\"text\"} 1\n",
        "ferrosock_messages_sent_total{path=\"/meter\",type=\"text\"} 1\n",
        "ferrosock_connections{path=\"/meter\"} 1\n",
        "ferrosock_received_bytes_total{path=\"/meter\"} 9\n",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    client.drop_connection();
    web.stop().await;
}

/// A connection whose runtime shuts down under it never ends in good order: it is still counted
/// closed (1006), so that the gauge of open connections does not keep it forever.
#[test]
fn connections_dropped_with_their_runtime_are_counted_closed() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (web, wss) = server.block_on(meter(Limits::default()));
    let stats = wss.stats_handle();
    let addr = web.local_addr();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut peer = client.block_on(async {
        let mut peer = RawClient::connect(addr, "/meter").await;
        peer.send_text("hello").await;
        peer.recv_message().await;
        peer
    });
    assert_eq!(stats.snapshot().connections, 1);
    server.shutdown_timeout(Duration::from_secs(30));
    let after = stats.snapshot();
    assert_eq!(after.connections, 0);
    assert_eq!(closes(&after), [("1006", 1)]);
    client.block_on(peer.expect_eof());
    drop((web, wss));
}

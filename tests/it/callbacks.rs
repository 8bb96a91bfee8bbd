//! SPEC §2–3: callback order, the registry at each callback, the request object, ids,
//! data types and `send`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrosock::proto::{CloseCode, OpCode};
use ferrosock::{DataType, ErrorKind, ServerOptions, Status, WebSocketServer};
use ferrosock_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_order_of_a_normal_connection() {
    let (web, _wss, mut events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let mut client = RawClient::connect(web.local_addr(), "/any?x=1").await;
    client.send_text("hello").await;
    assert_eq!(client.recv_message().await, text("hello"));
    client.send_close(1000, "done").await;
    assert_eq!(client.recv_close().await.unwrap().code, CloseCode::NORMAL);
    client.expect_eof().await;
    events
        .expect(&[
            "server connection /any?x=1 from 127.0.0.1 registry=0",
            // In the registry before on_open; removed and Closed before on_terminate.
            "open status=Connected registry=[me]",
            "message Text(hello)",
            "terminate 1000 \"done\" clean=true status=Closed registry=[]",
        ])
        .await;
    // A normal end: no on_error.
    events.expect_none(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_keeps_arrival_order_and_tracks_each_connection() {
    let (web, wss, mut events) = probe_server(Behavior::Silent, ServerOptions::default()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(RawClient::connect(web.local_addr(), "/").await);
        events.expect_prefix("server connection").await;
        events.expect_prefix("open").await;
    }
    let ids: Vec<u64> = wss.connections().iter().map(|c| c.id()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "arrival order: {ids:?}"
    );
    assert!(wss
        .connections()
        .iter()
        .all(|c| c.status() == Status::Connected));

    // The middle one leaves: the others stay, in order.
    let middle = clients.remove(1);
    middle.drop_connection();
    events.expect(&["error 1006 HTTP: Abnormal closure (close frame not sent nor received). (connection closed by the peer without a close frame)"]).await;
    events.expect_prefix("terminate 1006").await;
    let left: Vec<u64> = wss.connections().iter().map(|c| c.id()).collect();
    assert_eq!(left, [ids[0], ids[2]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_in_on_connection_answers_403_and_creates_nothing() {
    let web = web_server().await;
    let (mut probe, mut events) = Probe::new(Behavior::Echo);
    probe.refuse = true;
    let wss = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    events.expect(&["server open terminated=false"]).await;
    let refused = RawClient::try_connect(web.local_addr(), &upgrade_request("/", &[]))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403);
    events
        .expect(&["server connection / from 127.0.0.1 registry=0"])
        .await;
    events.expect_none(Duration::from_millis(100)).await;
    assert!(wss.connections().is_empty());
    assert_eq!(wss.handler().connections_seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_object() {
    let (web, wss, mut events) =
        probe_server(Behavior::Silent, ServerOptions::default().path("/status")).await;
    let request = upgrade_request(
        "/status?name=ryan&tag=a%20b&tag=c",
        &[
            "X-Custom: one",
            "x-custom: two",
            "Origin: http://example.com",
        ],
    );
    let _client = RawClient::try_connect(web.local_addr(), &request)
        .await
        .ok()
        .unwrap();
    events
        .expect_prefix("server connection /status?name=ryan&tag=a%20b&tag=c from 127.0.0.1")
        .await;
    events.expect_prefix("open").await;
    let connection = &wss.connections()[0];
    let request = &connection.handler().request;
    assert_eq!(request.url(), "/status?name=ryan&tag=a%20b&tag=c");
    assert_eq!(request.remote_address(), "127.0.0.1");
    assert_eq!(request.query().get("name"), Some("ryan"));
    assert_eq!(
        request.query().get_all("tag").collect::<Vec<_>>(),
        ["a b", "c"]
    );
    assert_eq!(request.headers().get("origin"), Some("http://example.com"));
    assert_eq!(
        request.headers().get_all("x-custom").collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(request.headers().get("sec-websocket-version"), Some("13"));
    let json = request.to_json();
    assert_eq!(
        json["headers"]["x-custom"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(json["query"]["tag"], serde_json::json!(["a b", "c"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_address_of_an_ipv6_client() {
    let Some(web) = ipv6_web_server().await else {
        return;
    };
    let (probe, mut events) = Probe::new(Behavior::Silent);
    let _wss = WebSocketServer::new(&web, probe, ServerOptions::default()).unwrap();
    events.next().await;
    let _client = RawClient::connect(web.local_addr(), "/").await;
    events
        .expect(&["server connection / from ::1 registry=0"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_unique_across_servers_and_the_handler_is_shared() {
    let web = web_server().await;
    let (a, mut a_events) = Probe::new(Behavior::Silent);
    let (b, mut b_events) = Probe::new(Behavior::Silent);
    let wss_a = WebSocketServer::new(&web, a, ServerOptions::default().path("/a")).unwrap();
    let wss_b = WebSocketServer::new(&web, b, ServerOptions::default().path("b")).unwrap();
    assert_eq!(wss_b.path(), Some("/b"));
    a_events.next().await;
    b_events.next().await;
    // Each connection's events are awaited before the next connects: a connection's on_open
    // runs after its 101, so it could otherwise come after the next one's on_connection.
    let _c1 = RawClient::connect(web.local_addr(), "/a").await;
    a_events.expect_prefix("server connection").await;
    a_events.expect_prefix("open").await;
    let _c2 = RawClient::connect(web.local_addr(), "/b").await;
    b_events.expect_prefix("server connection").await;
    b_events.expect_prefix("open").await;
    let _c3 = RawClient::connect(web.local_addr(), "/a").await;
    a_events.expect_prefix("server connection").await;
    a_events.expect_prefix("open").await;
    let mut ids: Vec<u64> = wss_a
        .connections()
        .iter()
        .chain(&wss_b.connections())
        .map(|c| c.id())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    // handler() is the very object given to new(): its state is what the callbacks changed.
    assert_eq!(wss_a.handler().connections_seen.load(Ordering::SeqCst), 2);
    let connection = &wss_a.connections()[0];
    assert!(std::ptr::eq(connection.wss().handler(), wss_a.handler()));
}

async fn data_type_server(data_type: DataType) -> (ferrosock::WebServer, Events, RawClient) {
    let (web, _wss, mut events) = probe_server(
        Behavior::Echo,
        ServerOptions::default().data_type(data_type),
    )
    .await;
    let client = RawClient::connect(web.local_addr(), "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    (web, events, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_type_text_decodes_binary_lossily() {
    let (_web, mut events, mut client) = data_type_server(DataType::Text).await;
    client.send_binary(b"ab\xffc").await;
    events.expect(&["message Text(ab\u{fffd}c)"]).await;
    // send() of a Text sends a text frame, whatever the frame received.
    assert_eq!(client.recv_message().await, text("ab\u{fffd}c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_type_blob_delivers_bytes() {
    let (_web, mut events, mut client) = data_type_server(DataType::Blob).await;
    client.send_text("hé").await;
    events.expect(&["message Blob(b\"h\\xc3\\xa9\")"]).await;
    assert_eq!(client.recv_message().await, binary("hé".as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_type_auto_follows_the_frame() {
    let (_web, mut events, mut client) = data_type_server(DataType::Auto).await;
    client.send_text("t").await;
    client.send_binary(&[0, 1]).await;
    events
        .expect(&["message Text(t)", "message Blob(b\"\\0\\x01\")"])
        .await;
    assert_eq!(client.recv_message().await, text("t"));
    assert_eq!(client.recv_message().await, binary(&[0, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_type_object_parses_json_and_reports_bad_json_without_closing() {
    let (_web, mut events, mut client) = data_type_server(DataType::Object).await;
    client.send_text(r#"{"a": [1, 2]}"#).await;
    events.expect(&[r#"message Object({"a":[1,2]})"#]).await;
    // An Object is sent as a text frame holding its JSON.
    assert_eq!(client.recv_message().await, text(r#"{"a":[1,2]}"#));

    client.send_text("not json").await;
    let error = events.next().await;
    assert!(
        error.starts_with("error 1 JSON: message is not valid JSON"),
        "{error}"
    );
    // Still open: the next message arrives.
    client.send_binary(b"[true]").await;
    events.expect(&["message Object([true])"]).await;
    assert_eq!(client.recv_message().await, text("[true]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_follows_the_argument_and_fails_once_closed() {
    let (web, wss, mut events) = probe_server(Behavior::Silent, ServerOptions::default()).await;
    let mut client = RawClient::connect(web.local_addr(), "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    let connection = wss.connections().remove(0);
    connection.send("text").unwrap();
    connection.send(vec![1u8, 2]).unwrap();
    connection.send(serde_json::json!({"k": null})).unwrap();
    assert_eq!(client.recv_message().await, text("text"));
    assert_eq!(client.recv_message().await, binary(&[1, 2]));
    assert_eq!(client.recv_message().await, text(r#"{"k":null}"#));

    connection.terminate();
    assert_eq!(connection.status(), Status::Closing);
    let err = connection.send("late").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotConnected);
    client.answer_close().await;
    events.expect_prefix("terminate 1000").await;
    assert_eq!(connection.status(), Status::Closed);
    assert_eq!(
        connection.send("later").unwrap_err().kind(),
        ErrorKind::NotConnected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_from_on_open_reaches_the_newcomer_too() {
    // on_open runs with the connection already registered: sending to every connection
    // from there includes it.
    use ferrosock::WebSocketConnection;
    use ferrosock::{ConnectionEvent, ConnectionHandler, MessageEvent, OpenEvent, ServerHandler};
    struct Hub;
    struct Member;
    impl ServerHandler for Hub {
        type Connection = Member;
        fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<Member> {
            Some(Member)
        }
    }
    impl ConnectionHandler for Member {
        type Server = Hub;
        fn on_open(&self, ws: &WebSocketConnection<Hub>, _: OpenEvent) {
            let n = ws.wss().connections().len();
            for client in ws.wss().connections() {
                client.send(format!("joined, {n} here")).unwrap();
            }
        }
        fn on_message(&self, _: &WebSocketConnection<Hub>, _: MessageEvent) {}
    }
    let web = web_server().await;
    let _wss = WebSocketServer::new(&web, Hub, ServerOptions::default()).unwrap();
    let mut first = RawClient::connect(web.local_addr(), "/").await;
    assert_eq!(first.recv_text().await, "joined, 1 here");
    let mut second = RawClient::connect(web.local_addr(), "/").await;
    assert_eq!(second.recv_text().await, "joined, 2 here");
    assert_eq!(first.recv_text().await, "joined, 2 here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_with_the_same_payload() {
    let (web, _wss, _events) = probe_server(Behavior::Silent, ServerOptions::default()).await;
    let mut client = RawClient::connect(web.local_addr(), "/").await;
    client
        .send_frame(true, OpCode::Ping, b"are you there")
        .await;
    assert_eq!(
        client.recv().await,
        Some(ferrosock::proto::Decoded::Pong("are you there".into()))
    );
    // A pong nobody asked for is ignored.
    client.send_frame(true, OpCode::Pong, b"unsolicited").await;
    client.send_frame(true, OpCode::Ping, b"").await;
    assert_eq!(
        client.recv().await,
        Some(ferrosock::proto::Decoded::Pong("".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_with_interleaved_pings_arrive_whole() {
    let (web, _wss, mut events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let mut client = RawClient::connect(web.local_addr(), "/").await;
    client
        .send_frame(false, OpCode::Text, "frag".as_bytes())
        .await;
    client.send_frame(true, OpCode::Ping, b"p").await;
    client
        .send_frame(false, OpCode::Continuation, "mented ".as_bytes())
        .await;
    client
        .send_frame(true, OpCode::Continuation, "€".as_bytes())
        .await;
    assert_eq!(
        client.recv().await,
        Some(ferrosock::proto::Decoded::Pong("p".into()))
    );
    assert_eq!(client.recv_message().await, text("fragmented €"));
    events.expect_prefix("server connection").await;
    events
        .expect(&[
            "open status=Connected registry=[me]",
            "message Text(fragmented €)",
        ])
        .await;
}

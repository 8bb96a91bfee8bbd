//! Topics and fan-out on one server, and across servers linked by a broker.

use std::time::Duration;

use ferrosock::proto::Decoded;
use ferrosock::{
    ConnectionEvent, ConnectionHandler, Limits, LocalBroker, MessageEvent, ServerHandler,
    ServerOptions, WebServer, WebSocketConnection, WebSocketServer,
};
use ferrosock_tests::*;

/// A server driven by its clients' text commands:
/// `sub T`, `unsub T`, `topics`, `pub T MESSAGE` (answers `published N`), `all MESSAGE`
/// (a broadcast to everyone else, answers `broadcast N`).
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
    fn on_message(&self, ws: &WebSocketConnection<Hub>, event: MessageEvent) {
        let text = event.data.to_text();
        let (command, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let answer = match command {
            "sub" => format!("sub {}", ws.subscribe(rest)),
            "unsub" => format!("unsub {}", ws.unsubscribe(rest)),
            "topics" => format!("topics {:?}", ws.topics()),
            "pub" => {
                let (topic, message) = rest.split_once(' ').unwrap_or((rest, ""));
                format!("published {}", ws.wss().publish(topic, message))
            }
            "all" => format!("broadcast {}", ws.wss().broadcast(rest, Some(ws.id()))),
            _ => return,
        };
        let _ = ws.send(answer);
    }
}

async fn hub(options: ServerOptions) -> (WebServer, WebSocketServer<Hub>) {
    let web = web_server().await;
    let wss = WebSocketServer::new(&web, Hub, options).unwrap();
    (web, wss)
}

/// Sends a command and returns the answer (skipping publications that arrive first).
async fn ask(client: &mut RawClient, command: &str) -> String {
    client.send_text(command).await;
    let verb = command.split(' ').next().unwrap();
    loop {
        let answer = client.recv_text().await;
        if answer.starts_with(verb)
            || (verb == "pub" && answer.starts_with("published"))
            || (verb == "all" && answer.starts_with("broadcast"))
        {
            return answer;
        }
    }
}

/// Nothing arrives for a moment.
async fn quiet(client: &mut RawClient) {
    match tokio::time::timeout(Duration::from_millis(150), client.recv()).await {
        Err(_) => {}
        Ok(frame) => panic!("unexpected {frame:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_publish_unsubscribe() {
    let (web, wss) = hub(ServerOptions::default()).await;
    let addr = web.local_addr();
    let mut a = RawClient::connect(addr, "/").await;
    let mut b = RawClient::connect(addr, "/").await;
    let mut c = RawClient::connect(addr, "/").await;
    assert_eq!(ask(&mut a, "sub news").await, "sub true");
    assert_eq!(ask(&mut a, "sub news").await, "sub true", "twice is once");
    assert_eq!(ask(&mut a, "sub sport").await, "sub true");
    assert_eq!(ask(&mut b, "sub news").await, "sub true");
    assert_eq!(ask(&mut a, "topics").await, r#"topics ["news", "sport"]"#);
    assert_eq!(wss.topics(), ["news", "sport"]);

    // From a callback: to both subscribers, the publisher included since it subscribed.
    assert_eq!(ask(&mut c, "pub news hello").await, "published 2");
    assert_eq!(a.recv_text().await, "hello");
    assert_eq!(b.recv_text().await, "hello");
    quiet(&mut c).await;
    // From outside any callback (another task): the same.
    let publisher = wss.clone();
    let delivered = tokio::spawn(async move { publisher.publish("sport", "goal") })
        .await
        .unwrap();
    assert_eq!(delivered, 1);
    assert_eq!(a.recv_text().await, "goal");
    quiet(&mut b).await;
    assert_eq!(wss.publish("nobody", "x"), 0);

    // Unsubscribed, then gone: no more deliveries, no topic left behind.
    assert_eq!(ask(&mut b, "unsub news").await, "unsub true");
    assert_eq!(ask(&mut b, "unsub news").await, "unsub false");
    assert_eq!(wss.publish("news", "second"), 1);
    assert_eq!(a.recv_text().await, "second");
    quiet(&mut b).await;
    a.send_close(1000, "").await;
    a.expect_eof().await;
    within("topics emptied", async {
        while !wss.topics().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(wss.publish("news", "third"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_everyone_but_the_sender() {
    let (web, _wss) = hub(ServerOptions::default()).await;
    let addr = web.local_addr();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut client = RawClient::connect(addr, "/").await;
        // A connection is registered after its 101: once it has answered, it is.
        assert_eq!(ask(&mut client, "topics").await, "topics []");
        clients.push(client);
    }
    assert_eq!(ask(&mut clients[0], "all hi everyone").await, "broadcast 4");
    for other in &mut clients[1..] {
        assert_eq!(other.recv_text().await, "hi everyone");
    }
    quiet(&mut clients[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_costs_only_its_own_budget() {
    // Room for two bursts: a frame the driver has just written still counts until the driver
    // has noted it, and on a loaded machine the reader may read it before that.
    let limits = Limits::default().max_outgoing_bytes(2 << 20);
    let (web, wss) = hub(ServerOptions::default().limits(limits)).await;
    let addr = web.local_addr();
    let mut stalled = RawClient::connect(addr, "/").await;
    assert_eq!(ask(&mut stalled, "sub feed").await, "sub true");
    let mut reader = RawClient::connect(addr, "/").await;
    assert_eq!(ask(&mut reader, "sub feed").await, "sub true");

    // 64 MiB to a topic, in bursts of 8 messages the reader keeps up with; the stalled
    // subscriber reads nothing.
    let filler = "m".repeat(64 << 10);
    let mut delivered = Vec::new();
    let mut sent = 0;
    let mut received = 0;
    for burst in 0..128 {
        for _ in 0..8 {
            let message = format!("{sent:08} {filler}");
            sent += 1;
            delivered.push(wss.publish("feed", message));
        }
        for _ in 0..8 {
            let got = within_for(Duration::from_secs(20), "the reader", reader.recv_text()).await;
            assert_eq!(got[..8], format!("{received:08}"), "in order, once each");
            received += 1;
            assert_eq!(got.len(), filler.len() + 9, "burst {burst}");
        }
    }
    // Every publish returned at once; when the stalled subscriber's budget was full it was
    // closed (1008) and left the topic, so later messages went to the reader only.
    assert_eq!(delivered.first(), Some(&2));
    assert_eq!(delivered.last(), Some(&1));
    let close = within_for(
        Duration::from_secs(10),
        "the stalled end",
        stalled.recv_close(),
    )
    .await
    .expect("a close frame");
    assert_eq!(close.code.0, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_linked_by_a_broker_deliver_once_and_in_order() {
    let broker = LocalBroker::new();
    let (web_a, wss_a) = hub(ServerOptions::default().broker(broker.clone())).await;
    let (web_b, _wss_b) = hub(ServerOptions::default().broker(broker)).await;
    let mut on_a = RawClient::connect(web_a.local_addr(), "/").await;
    let mut on_b = RawClient::connect(web_b.local_addr(), "/").await;
    let mut also_b = RawClient::connect(web_b.local_addr(), "/").await;
    assert_eq!(ask(&mut on_a, "sub t").await, "sub true");
    assert_eq!(ask(&mut on_b, "sub t").await, "sub true");

    // Published on A: A's subscriber and B's, once each; the count is A's own.
    assert_eq!(wss_a.publish("t", "one"), 1);
    assert_eq!(on_a.recv_text().await, "one");
    assert_eq!(on_b.recv_text().await, "one");
    quiet(&mut on_a).await;
    quiet(&mut on_b).await;
    quiet(&mut also_b).await;

    // Published on B by a member: reaches A.
    assert_eq!(ask(&mut also_b, "pub t two").await, "published 1");
    assert_eq!(on_b.recv_text().await, "two");
    assert_eq!(on_a.recv_text().await, "two");

    // A broadcast from a member of B: everyone on both servers but the sender.
    assert_eq!(ask(&mut on_b, "all hello").await, "broadcast 1");
    assert_eq!(also_b.recv_text().await, "hello");
    assert_eq!(on_a.recv_text().await, "hello");
    quiet(&mut on_b).await;

    // One publisher's order is kept across the broker.
    for i in 0..500 {
        wss_a.publish("t", i.to_string());
    }
    for i in 0..500 {
        assert_eq!(on_b.recv_text().await, i.to_string());
        assert_eq!(on_a.recv_text().await, i.to_string());
    }
    // Binary messages cross as binary.
    wss_a.publish("t", vec![0u8, 159, 146, 150]);
    assert_eq!(
        on_b.recv_message().await,
        Decoded::Binary(vec![0u8, 159, 146, 150].into())
    );
}

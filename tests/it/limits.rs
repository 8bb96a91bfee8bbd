//! SPEC §6: every limit, hit, closes only the connection that hit it, with the right code.

use ferrosock::proto::{CloseCode, Decoded, OpCode};
use ferrosock::{BackpressurePolicy, DataType, ErrorKind, Limits, ServerOptions, WebSocketServer};
use ferrosock_tests::*;

async fn limited(
    behavior: Behavior,
    limits: Limits,
) -> (ferrosock::WebServer, WebSocketServer<Probe>, Events) {
    let options = ServerOptions::default()
        .limits(limits)
        .data_type(DataType::Auto);
    probe_server(behavior, options).await
}

async fn open(web: &ferrosock::WebServer, events: &mut Events) -> RawClient {
    let client = RawClient::connect(web.local_addr(), "/").await;
    events.expect_prefix("server connection").await;
    events.expect_prefix("open").await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_size_closes_with_1009_and_only_that_connection() {
    let limits = Limits::default().max_message_size(1000).max_frame_size(600);
    let (web, _wss, mut events) = limited(Behavior::Echo, limits).await;
    let mut bystander = open(&web, &mut events).await;

    // Exactly at the limit: fine.
    let mut client = open(&web, &mut events).await;
    client.send_frame(false, OpCode::Binary, &[1; 500]).await;
    client
        .send_frame(true, OpCode::Continuation, &[1; 500])
        .await;
    assert_eq!(client.recv_message().await, binary(&[1; 1000]));
    events.expect_prefix("message").await;

    // One byte over, across fragments: 1009, decided at the frame header.
    client.send_frame(false, OpCode::Binary, &[1; 600]).await;
    client
        .send_frame(true, OpCode::Continuation, &[1; 401])
        .await;
    assert_eq!(
        client.answer_close().await.unwrap().code,
        CloseCode::MESSAGE_TOO_BIG
    );
    let error = events.next().await;
    assert!(
        error.starts_with("error 1009 HTTP: Message too big."),
        "{error}"
    );
    events.expect_prefix("terminate 1009").await;

    // A frame over max_frame_size: 1009 as soon as its header is read.
    let mut client = open(&web, &mut events).await;
    client.send_raw(&[0x82, 0xFE, 0x02, 0x59, 0, 0, 0, 0]).await; // 601 bytes announced, none sent
    assert_eq!(
        client.recv_close().await.unwrap().code,
        CloseCode::MESSAGE_TOO_BIG
    );
    client.drop_connection();
    events.expect_prefix("error 1009").await;
    events.expect_prefix("terminate 1009").await;

    // A length no server could hold.
    let mut client = open(&web, &mut events).await;
    client
        .send_raw(&[
            0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0,
        ])
        .await;
    assert_eq!(
        client.recv_close().await.unwrap().code,
        CloseCode::MESSAGE_TOO_BIG
    );
    client.drop_connection();
    events.expect_prefix("error 1009").await;
    events.expect_prefix("terminate 1009").await;

    bystander.send_text("still here").await;
    assert_eq!(bystander.recv_message().await, text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_over_budget_is_reported_and_closes_with_1008_by_default() {
    let limits = Limits::default().max_outgoing_bytes(64 * 1024);
    let (web, wss, mut events) = limited(Behavior::Flood(10_000), limits).await;
    let mut client = open(&web, &mut events).await;
    // One 1 KiB message asks for 10 000 copies: the budget runs out long before.
    client.send_binary(&[7; 1024]).await;
    events.expect_prefix("message").await;
    // The client reads everything the server managed to queue, then the close frame.
    let mut copies = 0;
    let close = loop {
        match client.recv().await {
            Some(Decoded::Binary(_)) => copies += 1,
            Some(Decoded::Close(frame)) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::POLICY_VIOLATION);
    client.send_close(1008, "").await;
    client.expect_eof().await;
    assert!(
        copies <= 64,
        "at most the budget was queued: {copies} copies"
    );
    assert_eq!(
        wss.handler().send_errors.lock().unwrap().as_slice(),
        [ErrorKind::BufferFull]
    );
    let error = events.next().await;
    assert!(
        error.starts_with("error 1008 HTTP: Policy violation. (outgoing buffer limit exceeded"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reject_policy_keeps_the_connection() {
    let limits = Limits::default()
        .max_outgoing_bytes(64 * 1024)
        .backpressure(BackpressurePolicy::Reject);
    let (web, wss, mut events) = limited(Behavior::Flood(10_000), limits).await;
    let mut client = open(&web, &mut events).await;
    client.send_binary(&[7; 1024]).await;
    events.expect_prefix("message").await;
    // Each message costs its payload and its place in the queue.
    let fit = (64 * 1024) / (1024 + ferrosock::memory::QUEUED_MESSAGE_OVERHEAD);
    for _ in 0..fit {
        assert_eq!(client.recv_message().await, binary(&[7; 1024]));
    }
    assert_eq!(
        wss.handler().send_errors.lock().unwrap().as_slice(),
        [ErrorKind::BufferFull]
    );
    // The budget drained as the client read: sending works again.
    let connection = wss.connections().remove(0);
    connection.send("after").unwrap();
    assert_eq!(client.recv_text().await, "after");
    assert_eq!(connection.status(), ferrosock::Status::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_503_and_leaves_the_others_alone() {
    let (web, wss, mut events) =
        probe_server(Behavior::Echo, ServerOptions::default().max_connections(2)).await;
    let mut first = open(&web, &mut events).await;
    let _second = open(&web, &mut events).await;
    let refused = RawClient::try_connect(web.local_addr(), &upgrade_request("/", &[]))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 503);
    // The server hears of it (issue #10: it did not).
    events
        .expect(&["server error 3 ferrosock: client 127.0.0.1 refused with HTTP 503: 2 connections are open (max_connections)"])
        .await;
    assert_eq!(wss.connections().len(), 2);
    first.send_text("fine").await;
    assert_eq!(first.recv_message().await, text("fine"));
    events.expect(&["message Text(fine)"]).await;
    // A place frees up when a connection ends.
    first.send_close(1000, "").await;
    first.expect_eof().await;
    events.expect_prefix("terminate 1000").await;
    // The place is released just after on_terminate returns: until then a client may still be
    // refused, and the server hears of each refusal.
    let third = within("a free place", async {
        loop {
            match RawClient::try_connect(web.local_addr(), &upgrade_request("/", &[])).await {
                Ok(client) => break client,
                Err(refused) => {
                    assert_eq!(refused.status, 503);
                    events.expect_prefix("server error 3 ferrosock").await;
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await;
    events.expect_prefix("server connection").await;
    drop(third);
}

// The handshake timeout, keepalive pings and the idle timeout are tested on paused time, to
// the tick, in the library (`server::tests`, `conn::tests`): through the web server and the
// driver these tests used, without the wall clock.

//! SPEC §1: the web server: static files, embedded assets, routing of upgrades by path.

use ferrosock::{ErrorKind, ServerOptions, WebServerOptions, WebSocketServer};
use ferrosock_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_with_content_types_404_and_no_way_out() {
    let root = std::env::temp_dir().join(format!("ferrosock-static-{}", std::process::id()));
    let public = root.join("public");
    std::fs::create_dir_all(public.join("sub")).unwrap();
    std::fs::write(root.join("secret.txt"), "outside the folder").unwrap();
    let files: &[(&str, &str, &str)] = &[
        ("index.html", "<h1>home</h1>", "text/html"),
        ("style.css", "body{}", "text/css"),
        ("app.js", "1;", "javascript"),
        ("data.json", "{}", "application/json"),
        ("sub/image.png", "\u{89}PNG", "image/png"),
    ];
    for (name, body, _) in files {
        std::fs::write(public.join(name), body).unwrap();
    }
    let web = web_server_with(WebServerOptions::default().static_dir(&public).asset(
        "/embedded",
        "text/plain",
        &b"built in"[..],
    ))
    .await;
    let addr = web.local_addr();
    for (name, body, content_type) in files {
        let response = http_get(addr, &format!("/{name}")).await;
        assert_eq!(response.status, 200, "{name}");
        assert_eq!(response.body, body.as_bytes(), "{name}");
        let got = response.header("content-type").unwrap_or_default();
        assert!(got.contains(content_type), "{name}: {got}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    }
    // A folder serves its index.html.
    assert_eq!(http_get(addr, "/").await.body, b"<h1>home</h1>");
    assert_eq!(http_get(addr, "/embedded").await.body, b"built in");
    assert_eq!(http_get(addr, "/missing.txt").await.status, 404);
    // Every way of climbing out of the folder fails.
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "//../secret.txt",
    ] {
        let response = http_request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_ne!(response.status, 200, "{path}");
        assert!(
            !String::from_utf8_lossy(&response.body).contains("outside"),
            "{path}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_routed_by_exact_path_with_a_catch_all() {
    let web = web_server().await;
    let (chat, mut chat_events) = Probe::new(Behavior::Echo);
    let (other, mut other_events) = Probe::new(Behavior::Echo);
    let _chat = WebSocketServer::new(&web, chat, ServerOptions::default().path("/chat")).unwrap();
    chat_events.next().await;
    let addr = web.local_addr();
    // No catch-all yet: an unknown path is 404.
    assert_eq!(
        RawClient::try_connect(addr, &upgrade_request("/nope", &[]))
            .await
            .err()
            .unwrap()
            .status,
        404
    );
    // The query does not take part in routing; the path must match exactly.
    let _c = RawClient::connect(addr, "/chat?room=1").await;
    chat_events
        .expect_prefix("server connection /chat?room=1")
        .await;
    assert_eq!(
        RawClient::try_connect(addr, &upgrade_request("/chat/", &[]))
            .await
            .err()
            .unwrap()
            .status,
        404
    );
    let _catch_all = WebSocketServer::new(&web, other, ServerOptions::default()).unwrap();
    other_events.next().await;
    let _d = RawClient::connect(addr, "/chat/").await;
    other_events.expect_prefix("server connection /chat/").await;
    // Plain HTTP on the same port is untouched by WebSocket servers.
    assert_eq!(http_get(addr, "/chat").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_cannot_share_a_path() {
    let web = web_server().await;
    let (a, _) = Probe::new(Behavior::Echo);
    let (b, _) = Probe::new(Behavior::Echo);
    let (c, _) = Probe::new(Behavior::Echo);
    let (d, _) = Probe::new(Behavior::Echo);
    let first = WebSocketServer::new(&web, a, ServerOptions::default().path("/x")).unwrap();
    let err = WebSocketServer::new(&web, b, ServerOptions::default().path("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PathInUse);
    WebSocketServer::new(&web, c, ServerOptions::default()).unwrap();
    let err = WebSocketServer::new(&web, d, ServerOptions::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PathInUse);
    // Once the first is terminated, its path is free.
    first.terminate().await;
    let (e, _) = Probe::new(Behavior::Echo);
    WebSocketServer::new(&web, e, ServerOptions::default().path("/x")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_its_first_frame_with_the_handshake() {
    // Bytes that follow the request head in the same packet belong to the WebSocket.
    let (web, _wss, _events) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let mut request = upgrade_request("/", &[]).into_bytes();
    request.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    let mut client = RawClient::try_connect(web.local_addr(), &request)
        .await
        .ok()
        .unwrap();
    assert_eq!(client.recv_message().await, text("hi"));
}

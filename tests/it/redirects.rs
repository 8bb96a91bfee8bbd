//! Redirects of the opening handshake (301, 302, 303, 307, 308): followed up to the limit,
//! relative or absolute, `http(s)://` taken as `ws(s)://`, `ws://` to `wss://` allowed, and the
//! credentials (`Authorization`, `Cookie`) kept from another origin.

use std::sync::{Arc, Mutex};

use ferrosock::{ClientOptions, ErrorKind, Params, ServerOptions, WebServerOptions, WebSocket};
use ferrosock_tests::*;
use tokio::io::AsyncWriteExt;

/// A server that answers each request with a redirect: `answer(n, own address)` gives the
/// status and the `Location` for the n-th request (from 0). Keeps every request's head.
async fn redirector(
    answer: impl Fn(usize, std::net::SocketAddr) -> (u16, String) + Send + Sync + 'static,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (head, _) = read_raw_head(&mut stream).await;
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(head.to_ascii_lowercase());
                seen.len() - 1
            };
            let (status, location) = answer(n, addr);
            let response = format!(
                "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (addr, heads)
}

fn with_credentials() -> (ClientProbe, Events) {
    let (mut probe, events) = ClientProbe::new();
    probe.headers = [
        ("Authorization", "Bearer sekrit"),
        ("Cookie", "session=abc"),
        ("X-Trace", "7"),
    ]
    .into_iter()
    .collect::<Params>();
    (probe, events)
}

#[tokio::test]
async fn a_chain_of_redirects_reaches_the_server_without_credentials_for_other_origins() {
    let (web, wss, mut server) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let echo = format!("ws://{}/echo", web.local_addr());
    // Another origin: 308 to the echo server, as an http:// URL.
    let http_echo = echo.replacen("ws://", "http://", 1);
    let (far, far_heads) = redirector(move |_, _| (308, http_echo.clone())).await;
    // The first hop: 302 to a path on the same origin, then 301 to the other one.
    let (near, near_heads) = redirector(move |n, _| match n {
        0 => (302, "/second?x=1".to_owned()),
        _ => (301, format!("ws://{far}/third")),
    })
    .await;
    let (probe, mut events) = with_credentials();
    let ws = within(
        "the redirects",
        WebSocket::connect(&format!("ws://{near}/first"), probe),
    )
    .await
    .unwrap();
    events.expect(&["open status=Connected"]).await;
    assert_eq!(ws.url(), format!("ws://{near}/first"), "the URL given");
    ws.send("hi").unwrap();
    events.expect(&["message Text(hi)"]).await;

    let near_heads = near_heads.lock().unwrap().clone();
    assert!(near_heads[0].starts_with("get /first "));
    assert!(near_heads[1].starts_with("get /second?x=1 "));
    for head in &near_heads {
        assert!(head.contains("authorization: bearer sekrit"), "{head}");
        assert!(head.contains("cookie: session=abc"), "{head}");
    }
    let far_head = far_heads.lock().unwrap()[0].clone();
    assert!(far_head.starts_with("get /third "), "{far_head}");
    assert!(
        !far_head.contains("authorization") && !far_head.contains("cookie"),
        "{far_head}"
    );
    assert!(far_head.contains("x-trace: 7"), "{far_head}");
    server.expect_prefix("server connection /echo").await;
    let connections = wss.connections();
    let request = &connections[0].handler().request;
    assert_eq!(request.headers().get("authorization"), None);
    assert_eq!(request.headers().get("cookie"), None);
    assert_eq!(request.headers().get("x-trace"), Some("7"));
}

#[tokio::test]
async fn ws_may_lead_to_wss() {
    let pki = TestPki::generate("redirect-wss");
    let secure = web_server_with(WebServerOptions::default().tls(&pki.cert, &pki.key)).await;
    let (probe, _server) = Probe::new(Behavior::Echo);
    let _wss = ferrosock::WebSocketServer::new(&secure, probe, ServerOptions::default()).unwrap();
    let port = secure.local_addr().port();
    let (plain, _) = redirector(move |_, _| (307, format!("https://localhost:{port}/echo"))).await;
    let (probe, mut events) = ClientProbe::new();
    let options = ClientOptions::default().ca_file(&pki.ca).unwrap();
    let ws = within(
        "the upgrade to TLS",
        WebSocket::connect_with(&format!("ws://{plain}/"), probe, options),
    )
    .await
    .unwrap();
    events.expect(&["open status=Connected"]).await;
    ws.send("secure now").unwrap();
    events.expect(&["message Text(secure now)"]).await;
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_limit() {
    let (addr, heads) = redirector(|n, _| (302, format!("/again/{n}"))).await;
    let url = format!("ws://{addr}/");
    let err = within("the loop", WebSocket::connect(&url, ()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redirect, "{err}");
    assert!(err.to_string().contains("too many redirects"), "{err}");
    assert_eq!(
        heads.lock().unwrap().len(),
        11,
        "the first request and 10 redirects"
    );

    let (addr, heads) = redirector(|n, _| (303, format!("/again/{n}"))).await;
    let url = format!("ws://{addr}/");
    let err = WebSocket::connect_with(&url, (), ClientOptions::default().max_redirects(3))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Redirect, Some(303))
    );
    assert_eq!(heads.lock().unwrap().len(), 4);

    // Turned off: the redirect is the answer.
    let (addr, heads) = redirector(|_, _| (301, "/elsewhere".to_owned())).await;
    let url = format!("ws://{addr}/");
    let err = WebSocket::connect_with(&url, (), ClientOptions::default().max_redirects(0))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Handshake, Some(301))
    );
    assert_eq!(heads.lock().unwrap().len(), 1);

    // Somewhere a WebSocket cannot go.
    let (addr, _) = redirector(|_, _| (302, "ftp://files.example/".to_owned())).await;
    let err = WebSocket::connect(&format!("ws://{addr}/"), ())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redirect, "{err}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_over_the_applications_stream() {
    // The redirect points at a working echo server: following it would open a connection of
    // ferrosock's own, around the application's stream.
    let (web, _wss, _server) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let echo = format!("ws://{}/echo", web.local_addr());
    let (addr, heads) = redirector(move |_, _| (302, echo.clone())).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = WebSocket::connect_over(
        &format!("ws://{addr}/"),
        stream,
        (),
        ClientOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Handshake, Some(302))
    );
    assert!(err.to_string().contains("own stream"), "{err}");
    assert_eq!(heads.lock().unwrap().len(), 1);
}

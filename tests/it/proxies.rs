//! The client behind proxies nobody here wrote: tinyproxy (HTTP CONNECT, Basic auth), stunnel
//! in front of it (an https:// proxy), microsocks (SOCKS5, user/password). Each test checks
//! that the origin server's connection came through the proxy (its log names the tunnel), and
//! that each refusal has its own clear error, without the credentials in it.

use std::time::Duration;

use ferrosock::{
    ClientOptions, ErrorKind, ServerOptions, WebServerOptions, WebSocket, WebSocketServer,
};
use ferrosock_tests::net_peers::{Microsocks, Stunnel, Tinyproxy, TinyproxyOptions};
use ferrosock_tests::*;

/// Echoes `text` through `ws` and waits for it to come back.
async fn round_trip(ws: &WebSocket<ClientProbe>, events: &mut Events, text: &str) {
    ws.send(text).unwrap();
    events.expect(&[&format!("message Text({text})")]).await;
}

async fn echo_over(options: ClientOptions, url: &str) -> (WebSocket<ClientProbe>, Events) {
    let (probe, mut events) = ClientProbe::new();
    let ws = within(
        "the connection through the proxy",
        WebSocket::connect_with(url, probe, options),
    )
    .await
    .unwrap_or_else(|err| panic!("{url}: {}", chain(&err)));
    events.expect(&["open status=Connected"]).await;
    round_trip(&ws, &mut events, "through the tunnel").await;
    (ws, events)
}

fn chain(err: &ferrosock::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn ws_and_wss_through_an_http_connect_proxy_with_basic_auth() {
    let Some(proxy) = Tinyproxy::start(Some(("alice", "s3cret"))) else {
        return;
    };
    let (web, _wss, mut server) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let options = ClientOptions::default()
        .proxy(&format!("http://alice:s3cret@127.0.0.1:{}", proxy.port))
        .unwrap();
    let url = format!("ws://{}/echo", web.local_addr());
    let (ws, _events) = echo_over(options.clone(), &url).await;
    server.expect_prefix("server connection /echo").await;
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT {} HTTP/1.1", web.local_addr())),
        "tinyproxy did not carry the connection:\n{}",
        proxy.log()
    );
    ws.terminate();
    ws.closed().await;

    // wss://: TLS to the origin inside the tunnel, checked against the origin's name.
    let pki = TestPki::generate("proxied-wss");
    let secure = web_server_with(WebServerOptions::default().tls(&pki.cert, &pki.key)).await;
    let _secure_wss = WebSocketServer::new(
        &secure,
        Probe::new(Behavior::Echo).0,
        ServerOptions::default(),
    )
    .unwrap();
    let url = format!("wss://localhost:{}/echo", secure.local_addr().port());
    let (ws, _events) = echo_over(options.ca_file(&pki.ca).unwrap(), &url).await;
    assert!(proxy.log().contains(&format!(
        "CONNECT localhost:{} HTTP/1.1",
        secure.local_addr().port()
    )));
    ws.terminate();
    ws.closed().await;
}

#[tokio::test]
async fn an_https_proxy_carries_tls_inside_tls() {
    let pki = TestPki::generate("https-proxy");
    let Some(tinyproxy) = Tinyproxy::start(Some(("bob", "pw"))) else {
        return;
    };
    let Some(stunnel) = Stunnel::start(&pki, tinyproxy.port) else {
        return;
    };
    let secure = web_server_with(WebServerOptions::default().tls(&pki.cert, &pki.key)).await;
    let _wss = WebSocketServer::new(
        &secure,
        Probe::new(Behavior::Echo).0,
        ServerOptions::default(),
    )
    .unwrap();
    // The proxy's certificate is for localhost too, from the same private CA.
    let options = ClientOptions::default()
        .ca_file(&pki.ca)
        .unwrap()
        .proxy(&format!("https://bob:pw@localhost:{}", stunnel.port))
        .unwrap();
    let url = format!("wss://localhost:{}/echo", secure.local_addr().port());
    let (ws, _events) = echo_over(options, &url).await;
    assert!(tinyproxy
        .log()
        .contains(&format!("CONNECT localhost:{}", secure.local_addr().port())));
    assert!(
        stunnel.log().contains("accepted connection"),
        "{}",
        stunnel.log()
    );
    ws.terminate();
    ws.closed().await;
}

#[tokio::test]
async fn proxy_refusals_have_clear_errors_without_credentials() {
    let Some(authenticated) = Tinyproxy::start(Some(("alice", "right-password"))) else {
        return;
    };
    let Some(no_connect) = Tinyproxy::start_with(TinyproxyOptions {
        refuse_connect: true,
        ..TinyproxyOptions::default()
    }) else {
        return;
    };
    let web = web_server().await;
    let url = format!("ws://{}/echo", web.local_addr());
    let fail = |proxy: String| {
        let url = url.clone();
        async move {
            let options = ClientOptions::default()
                .connect_timeout(Duration::from_secs(20))
                .proxy(&proxy)
                .unwrap();
            within("a refusal", WebSocket::connect_with(&url, (), options))
                .await
                .unwrap_err()
        }
    };
    // No credentials: 407.
    let err = fail(format!("http://127.0.0.1:{}", authenticated.port)).await;
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Proxy, Some(407))
    );
    assert!(
        err.to_string().contains("proxy authentication required"),
        "{err}"
    );
    // Wrong credentials: tinyproxy answers 401; neither the user nor the password is shown.
    let err = fail(format!(
        "http://alice:wrong-password@127.0.0.1:{}",
        authenticated.port
    ))
    .await;
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert!(matches!(err.http_status(), Some(401 | 407)), "{err}");
    let text = chain(&err);
    assert!(text.contains("credentials"), "{text}");
    assert!(
        !text.contains("wrong-password") && !text.contains("alice"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("wrong-password"));
    // CONNECT forbidden: 403.
    let err = fail(format!("http://127.0.0.1:{}", no_connect.port)).await;
    assert_eq!(
        (err.kind(), err.http_status()),
        (ErrorKind::Proxy, Some(403))
    );
    // Nobody listens.
    let (_bound, port) = refusing_port();
    let err = fail(format!("http://u:hidden@127.0.0.1:{port}")).await;
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(!chain(&err).contains("hidden"));
    // A "proxy" that answers garbage.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
        }
    });
    let err = fail(format!("http://{garbage}")).await;
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert!(err.to_string().contains("not HTTP"), "{err}");
    // An unknown scheme is refused when the options are built.
    let err = ClientOptions::default()
        .proxy("socks4://u:p@127.0.0.1:1080")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert!(err.to_string().contains("unknown scheme"), "{err}");
}

#[tokio::test]
async fn socks5_with_a_password_and_names_resolved_here_or_by_the_proxy() {
    let Some(socks) = Microsocks::start(Some(("carol", "p4ss"))) else {
        return;
    };
    let (web, _wss, _server) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    // Generous: where the machine's resolver is unreachable, a lookup takes its full timeout.
    let proxy = |scheme: &str| {
        ClientOptions::default()
            .connect_timeout(Duration::from_secs(60))
            .proxy(&format!("{scheme}://carol:p4ss@127.0.0.1:{}", socks.port))
            .unwrap()
    };
    let url = format!("ws://{}/echo", web.local_addr());
    let (ws, _events) = echo_over(proxy("socks5h"), &url).await;
    ws.terminate();
    ws.closed().await;
    assert!(
        socks
            .log()
            .contains(&format!("connected to {}", web.local_addr())),
        "microsocks did not carry the connection:\n{}",
        socks.log()
    );
    // A name that resolves nowhere (RFC 6761): socks5:// resolves it here and fails with a DNS
    // error; socks5h:// hands it to the proxy, which answers with a SOCKS reply code.
    let nowhere = "ws://no-such-host.invalid/echo";
    let err = within(
        "socks5 DNS",
        WebSocket::connect_with(nowhere, (), proxy("socks5")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Dns | ErrorKind::Timeout),
        "{err}"
    );
    let err = within(
        "socks5h",
        WebSocket::connect_with(nowhere, (), proxy("socks5h")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Proxy | ErrorKind::Timeout),
        "{err}"
    );
    if err.kind() == ErrorKind::Proxy {
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }
    // Wrong password, then no credentials at all.
    let bad = ClientOptions::default()
        .proxy(&format!("socks5://carol:nope@127.0.0.1:{}", socks.port))
        .unwrap();
    let err = within("bad password", WebSocket::connect_with(&url, (), bad))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!chain(&err).contains("nope"));
    let anonymous = ClientOptions::default()
        .proxy(&format!("socks5://127.0.0.1:{}", socks.port))
        .unwrap();
    let err = within(
        "no credentials",
        WebSocket::connect_with(&url, (), anonymous),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert!(err.to_string().contains("authentication"), "{err}");
}

#[tokio::test]
async fn no_proxy_and_direct_connections_bypass_the_proxy() {
    let Some(proxy) = Tinyproxy::start(None) else {
        return;
    };
    let (web, _wss, _server) = probe_server(Behavior::Echo, ServerOptions::default()).await;
    let url = format!("ws://{}/echo", web.local_addr());
    let tunnel = format!("CONNECT {} HTTP/1.1", web.local_addr());
    let connects = || proxy.log().matches(&tunnel).count();
    let through = ClientOptions::default()
        .proxy(&format!("http://127.0.0.1:{}", proxy.port))
        .unwrap();
    let (ws, _events) = echo_over(through.clone(), &url).await;
    ws.terminate();
    ws.closed().await;
    assert_eq!(connects(), 1, "{}", proxy.log());
    // The last word wins: no_proxy() after proxy() goes direct.
    let (ws, _events) = echo_over(through.no_proxy(), &url).await;
    ws.terminate();
    ws.closed().await;
    assert_eq!(connects(), 1, "{}", proxy.log());
}

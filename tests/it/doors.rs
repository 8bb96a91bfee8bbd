//! The doors (issue #12): a detached `WebSocketServer` inside an axum app, on a plain
//! hyper-util server, and behind a tower stack with tower-http layers around its route (an
//! auth layer that refuses, a timeout, tracing); driven by Python websockets, Node ws and
//! headless Chromium (the page served by the app, its WebSocket on the same port). Subprotocols
//! in both roles against the same peers. The axum example's graceful shutdown under SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use ferrosock::door::{self, RemoteAddr};
use ferrosock::{
    ClientOptions, ConnectionEvent, ConnectionHandler, ErrorKind, MessageEvent, OpenEvent,
    ServerHandler, ServerOptions, TerminateEvent, WebSocket, WebSocketConnection, WebSocketServer,
};
use ferrosock_tests::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// A chat room that also says who it sees: each member is welcomed with the subprotocol agreed
/// (`-` for none) and its address; joins, messages and leaves go to the others. `?pick=NAME`
/// makes `on_connection` choose NAME among the offers.
struct Room {
    seen: Mutex<Vec<String>>,
}

struct Member;

impl ServerHandler for Room {
    type Connection = Member;

    fn on_connection(&self, _: &WebSocketServer<Self>, event: ConnectionEvent) -> Option<Member> {
        let request = &event.request;
        if let Some(pick) = request.query().get("pick") {
            event.select_protocol(pick);
        }
        self.seen.lock().unwrap().push(format!(
            "{} {:?} {:?}",
            request.remote_address(),
            request.http_version(),
            request.protocols()
        ));
        Some(Member)
    }
}

impl ConnectionHandler for Member {
    type Server = Room;

    fn on_open(&self, ws: &WebSocketConnection<Room>, _: OpenEvent) {
        let _ = ws.send(format!("welcome {}", ws.protocol().unwrap_or("-")));
        ws.wss().broadcast("joined", Some(ws.id()));
    }

    fn on_message(&self, ws: &WebSocketConnection<Room>, event: MessageEvent) {
        ws.wss().broadcast(event.data, Some(ws.id()));
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Room>, _: TerminateEvent) {
        ws.wss().broadcast("left", Some(ws.id()));
    }
}

fn room() -> WebSocketServer<Room> {
    let room = Room {
        seen: Mutex::new(Vec::new()),
    };
    WebSocketServer::detached(room, ServerOptions::default().protocols(["chat", "mqtt"])).unwrap()
}

/// The page Chromium loads from the app: two members of the room on the page's own origin.
const PAGE: &str = r#"<!doctype html><title>loading</title><script>
const url = location.origin.replace(/^http/, 'ws') + '/chat?token=ok';
const open = (protocols) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url, protocols);
  const got = [];
  ws.onmessage = (e) => { got.push(e.data); ws.dispatchEvent(new Event('got')); };
  ws.onopen = () => resolve({ ws, got });
  ws.onerror = () => reject(new Error('WebSocket failed'));
});
const next = (member, n) => new Promise((resolve) => {
  const check = () => { if (member.got.length >= n) resolve(member.got[n - 1]); };
  member.ws.addEventListener('got', check); check();
});
(async () => {
  const a = await open(['stomp', 'chat']);
  const welcome = await next(a, 1);
  const b = await open([]);
  await next(b, 1);
  const joined = await next(a, 2);
  b.ws.send('from the browser');
  const message = await next(a, 3);
  b.ws.close(1000);
  const left = await next(a, 4);
  document.title = `DONE ${welcome} (${a.ws.protocol}) ${a.ws.extensions.split(';')[0]} | ${joined} | ${message} | ${left}`;
})().catch((e) => { document.title = `FAIL ${e.message}`; });
</script>"#;

/// The axum app: `/` the page, `/hello`, and the room at `/chat` behind tower-http layers: an
/// auth layer that refuses requests without `?token=ok` (401), a timeout and tracing.
// The refusal is a response, as tower-http's validation closure must return it.
#[allow(clippy::result_large_err)]
fn axum_app(room: &WebSocketServer<Room>) -> axum::Router {
    let guarded = ServiceBuilder::new()
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(
            tower_http::validate_request::ValidateRequestHeaderLayer::custom(
                |request: &mut http::Request<axum::body::Body>| {
                    let query = request.uri().query().unwrap_or_default();
                    if query.split('&').any(|pair| pair == "token=ok") {
                        Ok(())
                    } else {
                        let mut refusal = http::Response::new(door::Body::from("no token"));
                        *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
                        Err(refusal)
                    }
                },
            ),
        )
        .service(room.service());
    axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/hello", get(|| async { "hello" }))
        .route_service("/chat", guarded)
        .route("/plain", room.route())
}

/// Serves the axum app on a free port, with the client's address from `ConnectInfo`.
async fn serve_axum(room: &WebSocketServer<Room>) -> SocketAddr {
    let app = axum_app(room);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Serves the room on plain hyper-util: `/chat` through `WebSocketServer::upgrade` (the
/// address given as a `RemoteAddr`), `/hello`, and the tower service of the room behind the
/// same auth check at `/tower`.
async fn serve_hyper(room: &WebSocketServer<Room>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let room = room.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = listener.accept().await.unwrap();
            let room = room.clone();
            let service = hyper::service::service_fn(
                move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(RemoteAddr(remote));
                    let room = room.clone();
                    async move {
                        let token = request
                            .uri()
                            .query()
                            .is_some_and(|q| q.contains("token=ok"));
                        let response = match request.uri().path() {
                            "/hello" => http::Response::new(door::Body::from("hello")),
                            "/chat" if token => room.upgrade(request),
                            "/chat" => {
                                let mut refusal = http::Response::new(door::Body::from("no token"));
                                *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
                                refusal
                            }
                            _ => {
                                let mut missing =
                                    http::Response::new(door::Body::from("Not Found"));
                                *missing.status_mut() = http::StatusCode::NOT_FOUND;
                                missing
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                },
            );
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// A tower stack on hyper-util, with no router: every request goes through the layers to
/// the room's service.
async fn serve_tower(room: &WebSocketServer<Room>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let room = room.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = listener.accept().await.unwrap();
            let stack = ServiceBuilder::new()
                .layer(tower_http::trace::TraceLayer::new_for_http())
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(RemoteAddr(remote));
                    request
                })
                .service(room.service());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(tcp),
                        TowerToHyperService::new(stack),
                    )
                    .await;
            });
        }
    });
    addr
}

const PYTHON_CHAT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

async def main(base, path):
    async with asyncio.timeout(20):
        try:
            async with connect(base + path):
                print("refused: no")
        except InvalidStatus as e:
            print("refused:", e.response.status_code)
        url = base + path + "?token=ok"
        async with connect(url, subprotocols=["stomp", "mqtt", "chat"]) as a:
            print("a:", await a.recv(), a.subprotocol)
            async with connect(url) as b:
                print("b:", await b.recv(), b.subprotocol)
                print("a:", await a.recv())
                await b.send("hello from b")
                print("a:", await a.recv())
            print("a:", await a.recv())
            deflate = [type(e).__name__ for e in a.protocol.extensions]
        print("deflate:", deflate, "close:", a.close_code)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

const NODE_CHAT: &str = r#"
const WebSocket = require('ws');
const [base, path] = process.argv.slice(1);
const timer = setTimeout(() => { console.log('timeout'); process.exit(1); }, 20000);
const next = (ws) => new Promise((resolve) => ws.once('message', (data) => resolve(data.toString())));
const opened = (ws) => new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
(async () => {
  const refused = new WebSocket(base + path);
  const status = await new Promise((resolve) => {
    refused.on('error', () => {});
    // The request is the listener's to end: left open, it would keep Node running.
    refused.on('unexpected-response', (req, res) => { req.destroy(); resolve(res.statusCode); });
    refused.on('open', () => resolve('no'));
  });
  console.log('refused:', status);
  const url = base + path + '?token=ok';
  const a = new WebSocket(url, ['stomp', 'mqtt', 'chat']);
  let got = next(a);
  await opened(a);
  console.log('a:', await got, a.protocol);
  const b = new WebSocket(url);
  const welcome = next(b);
  got = next(a);
  await opened(b);
  console.log('b:', await welcome, b.protocol || 'None');
  console.log('a:', await got);
  got = next(a);
  b.send('hello from b');
  console.log('a:', await got);
  got = next(a);
  b.close(1000);
  console.log('a:', await got);
  a.on('close', (code) => {
    console.log('deflate:', a.extensions.split(';')[0], 'close:', code);
    clearTimeout(timer);
  });
  a.close(1000);
})().catch((e) => { console.log('error', e.message); process.exit(1); });
"#;

/// Runs a peer's program with `args`; its output, or `None` when the peer is not installed.
async fn run_peer(python: bool, program: &str, args: &[&str]) -> Option<String> {
    let mut command = inline_peer(python, program)?;
    command
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = within("the peer's program", command.output())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    Some(stdout)
}

/// The server lists chat, then mqtt; the client offers stomp, mqtt, chat: its order wins.
const CHAT_SEEN: &str = "refused: 401
a: welcome mqtt mqtt
b: welcome - None
a: joined
a: hello from b
a: left
";

async fn chat_through(addr: SocketAddr, path: &str, room: &WebSocketServer<Room>) {
    let base = format!("ws://{addr}");
    let Some(out) = run_peer(true, PYTHON_CHAT, &[&base, path]).await else {
        return;
    };
    assert_eq!(
        out,
        format!("{CHAT_SEEN}deflate: ['PerMessageDeflate'] close: 1000\n")
    );
    let Some(out) = run_peer(false, NODE_CHAT, &[&base, path]).await else {
        return;
    };
    assert_eq!(
        out,
        format!("{CHAT_SEEN}deflate: permessage-deflate close: 1000\n")
    );
    // The server knew each client's address (ConnectInfo, RemoteAddr) and saw the offers in
    // the client's order; refused requests never reached on_connection.
    let seen = room.handler().seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            r#"127.0.0.1 HTTP/1.1 ["stomp", "mqtt", "chat"]"#,
            "127.0.0.1 HTTP/1.1 []",
            r#"127.0.0.1 HTTP/1.1 ["stomp", "mqtt", "chat"]"#,
            "127.0.0.1 HTTP/1.1 []",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_route_behind_tower_http_layers_serves_python_and_node() {
    let room = room();
    let addr = serve_axum(&room).await;
    assert_eq!(http_get(addr, "/hello").await.body, b"hello");
    chat_through(addr, "/chat", &room).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_server_serves_python_and_node_through_upgrade() {
    let room = room();
    let addr = serve_hyper(&room).await;
    assert_eq!(http_get(addr, "/hello").await.body, b"hello");
    chat_through(addr, "/chat", &room).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_stack_on_hyper_util_serves_the_room() {
    let room = room();
    let addr = serve_tower(&room).await;
    let url = format!("ws://{addr}/anything?pick=mqtt");
    let (client, mut events) = ClientProbe::new();
    let options = ClientOptions::default().protocols(["chat", "mqtt"]);
    let ws = WebSocket::connect_with(&url, client, options)
        .await
        .unwrap();
    // on_connection's choice wins over the supported list's.
    assert_eq!(ws.protocol(), Some("mqtt"));
    events
        .expect(&["open status=Connected", "message Text(welcome mqtt)"])
        .await;
    let seen = room.handler().seen.lock().unwrap().clone();
    assert_eq!(seen, [r#"127.0.0.1 HTTP/1.1 ["chat", "mqtt"]"#]);
    // A request that is no handshake gets the upgrade core's 400, through the layers.
    let response = http_get(addr, "/").await;
    assert_eq!(response.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_the_apps_page_and_chats_on_the_same_port() {
    let browser = repo_root().join(".peers/node/node_modules/playwright-core");
    if !peer_installed(&browser, "Chromium (playwright-core)") {
        return;
    }
    let room = room();
    let addr = serve_axum(&room).await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(repo_root().join("tests/interop/browser_page.mjs"))
        .arg(format!("http://{addr}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = within_for(Duration::from_secs(60), "Chromium", command.output())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout,
        "DONE welcome chat (chat) permessage-deflate | joined | from the browser | left\n\
         navigation: http/1.1\n"
    );
}

/// Subprotocols through a ferrosock server, as raw requests show them: repeated headers are
/// one list, empty elements are ignored, a non-token is 400, no match is no protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_subprotocols_are_one_list_in_the_clients_order() {
    let room = room();
    let addr = serve_axum(&room).await;
    let answer = |extra: &'static [&'static str]| async move {
        match RawClient::try_connect(addr, upgrade_request("/plain", extra)).await {
            Ok(client) => {
                let protocol = client
                    .response
                    .lines()
                    .find_map(|line| line.strip_prefix("sec-websocket-protocol:"))
                    .map(|value| value.trim().to_owned());
                (101, protocol)
            }
            Err(refused) => (refused.status, None),
        }
    };
    const REPEATED: &[&str] = &[
        "Sec-WebSocket-Protocol: , stomp,,",
        "Sec-WebSocket-Protocol: mqtt, chat",
    ];
    assert_eq!(answer(REPEATED).await, (101, Some("mqtt".to_owned())));
    const UNKNOWN: &[&str] = &["Sec-WebSocket-Protocol: stomp, wamp.2.json"];
    assert_eq!(answer(UNKNOWN).await, (101, None));
    assert_eq!(
        answer(&["Sec-WebSocket-Protocol: chat room"]).await,
        (400, None)
    );
    let seen = room.handler().seen.lock().unwrap().clone();
    assert_eq!(
        seen[0], r#"127.0.0.1 HTTP/1.1 ["stomp", "mqtt", "chat"]"#,
        "{seen:?}"
    );
    assert_eq!(
        seen.len(),
        2,
        "the 400 never reached on_connection: {seen:?}"
    );
}

/// A handshake with another method gets 405 and says which one it takes; on_connection never
/// hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_method_is_405_with_allow() {
    let room = room();
    let addr = serve_axum(&room).await;
    let request = upgrade_request("/plain", &[]).replacen("GET", "POST", 1);
    let refused = match RawClient::try_connect(addr, request).await {
        Ok(_) => panic!("a POST was upgraded"),
        Err(refused) => refused,
    };
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow"), Some("get"));
    assert!(room.handler().seen.lock().unwrap().is_empty());
}

const PYTHON_SERVER: &str = r#"
import asyncio, sys
from websockets.asyncio.server import serve

async def main(choice):
    def select(connection, offered):
        print("offered:", offered, flush=True)
        return choice if choice != "-" else None
    async def echo(ws):
        async for message in ws:
            await ws.send(message)
    async with serve(echo, "127.0.0.1", 0, select_subprotocol=select) as server:
        print("READY", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(30)

asyncio.run(main(sys.argv[1]))
"#;

const NODE_SERVER: &str = r#"
const { WebSocketServer } = require('ws');
const choice = process.argv[1];
const wss = new WebSocketServer({
  host: '127.0.0.1', port: 0,
  handleProtocols: (offered) => { console.log('offered:', [...offered].join(',')); return choice === '-' ? false : choice; },
});
wss.on('connection', (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })));
wss.on('listening', () => console.log('READY', wss.address().port));
setTimeout(() => process.exit(0), 30000);
"#;

/// A peer server that answers with `choice` (`-`: none) whatever the client offers.
async fn peer_server(python: bool, choice: &str) -> Option<(tokio::process::Child, u16)> {
    let program = if python { PYTHON_SERVER } else { NODE_SERVER };
    let mut command = inline_peer(python, program)?;
    command
        .arg(choice)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let ready = within("the peer server", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let port = ready
        .strip_prefix("READY ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some((child, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gets_the_peers_choice_and_fails_on_one_it_did_not_offer() {
    for python in [true, false] {
        // The peer picks "chat": offered, agreed.
        let Some((_peer, port)) = peer_server(python, "chat").await else {
            return;
        };
        let url = format!("ws://127.0.0.1:{port}/");
        let options = ClientOptions::default().protocols(["mqtt", "chat"]);
        let (client, mut events) = ClientProbe::new();
        let ws = WebSocket::connect_with(&url, client, options)
            .await
            .unwrap();
        assert_eq!(ws.protocol(), Some("chat"), "python: {python}");
        ws.send("hi").unwrap();
        events
            .expect(&["open status=Connected", "message Text(hi)"])
            .await;
        // The peer picks nothing: no protocol, a working connection.
        let Some((_peer, port)) = peer_server(python, "-").await else {
            return;
        };
        let url = format!("ws://127.0.0.1:{port}/");
        let options = ClientOptions::default().protocols(["mqtt"]);
        let (client, _events) = ClientProbe::new();
        let ws = WebSocket::connect_with(&url, client, options)
            .await
            .unwrap();
        assert_eq!(ws.protocol(), None, "python: {python}");
        // The peer picks one that was not offered: the handshake fails.
        let Some((_peer, port)) = peer_server(python, "stomp").await else {
            return;
        };
        let url = format!("ws://127.0.0.1:{port}/");
        let options = ClientOptions::default().protocols(["mqtt", "chat"]);
        let (client, _events) = ClientProbe::new();
        let err = WebSocket::connect_with(&url, client, options)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "python: {python}: {err}");
        assert!(
            crate_chain(&err).contains("subprotocol"),
            "{}",
            crate_chain(&err)
        );
    }
}

/// An error and its causes, as one line.
fn crate_chain(err: &ferrosock::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The axum and hyper examples: their chat, then SIGTERM closes every WebSocket with 1001
/// and waits for them before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_close_their_websockets_with_1001_on_sigterm() {
    for name in ["axum", "hyper"] {
        let Some(example) = example_binary(name) else {
            return;
        };
        example_chat_and_sigterm(name, example).await;
    }
}

async fn example_chat_and_sigterm(name: &str, example: std::path::PathBuf) {
    let mut child = tokio::process::Command::new(example)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = within("the example to start", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let addr: SocketAddr = ready
        .strip_prefix(&format!("{name} example: http://"))
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    assert_eq!(http_get(addr, "/hello").await.body, b"hello");
    let mut a = RawClient::connect(addr, "/chat").await;
    assert_eq!(a.recv_text().await, "Welcome on the chat!");
    let mut b = RawClient::connect(addr, "/chat").await;
    assert_eq!(b.recv_text().await, "Welcome on the chat!");
    assert_eq!(a.recv_text().await, "New client connected");
    b.send_text("hello").await;
    assert_eq!(a.recv_text().await, "hello");
    // SIGTERM: each WebSocket gets 1001; the example waits for the answers, then exits 0.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    for client in [&mut a, &mut b] {
        let close = client.answer_close().await.expect("a close frame");
        assert_eq!(close.code.0, 1001, "{name}");
    }
    let status = within("the example to exit", child.wait()).await.unwrap();
    assert!(status.success(), "{name}: {status}");
    let last = within("the example's last line", lines.next_line())
        .await
        .unwrap();
    assert_eq!(last, Some(format!("{name} example: stopped")));
}

/// An example's binary, built by scripts/test before the tests (`cargo build -p ferrosock
/// --features axum --examples`; `cargo test --workspace` builds it too); `None` outside CI
/// when it is not built.
fn example_binary(name: &str) -> Option<std::path::PathBuf> {
    let path = repo_root().join("target/debug/examples").join(name);
    peer_installed(
        &path,
        &format!("the {name} example (cargo build -p ferrosock --features axum --examples)"),
    )
    .then_some(path)
}

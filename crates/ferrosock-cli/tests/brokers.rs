//! `ferrosock serve --broker`: /chat across three nodes through a real Redis or NATS server
//! (Debian's `redis-server` and `nats-server`, installed by scripts/install-peers), including
//! the broker going away and coming back.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrosock::proto::{Decoded, OpCode};
use ferrosock_tests::RawClient;

use common::*;

/// A broker process, killed when dropped.
struct Daemon {
    child: Child,
    /// Where it listens: a TCP port on 127.0.0.1, or a Unix socket.
    at: Endpoint,
    /// The folder of its Unix socket, removed when dropped.
    dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
enum Endpoint {
    Tcp(u16),
    Unix(std::path::PathBuf),
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Redis,
    Nats,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        }
    }

    fn url(self, port: u16) -> String {
        match self {
            Kind::Redis => format!("redis://127.0.0.1:{port}"),
            Kind::Nats => format!("nats://127.0.0.1:{port}"),
        }
    }

    /// Starts the broker where no other process can be: Redis on a Unix socket of a fresh
    /// folder (it cannot pick a free TCP port itself), NATS on a TCP port it picks (read from
    /// /proc). Returns once it accepts connections.
    fn start(self) -> Daemon {
        let mut command = Command::new(self.binary());
        let mut dir = None;
        match self {
            Kind::Redis => {
                let folder = std::env::temp_dir().join(format!(
                    "ferrosock-redis-{}-{}",
                    std::process::id(),
                    rand_suffix()
                ));
                std::fs::create_dir_all(&folder).unwrap();
                let socket = folder.join("redis.sock");
                command.args(["--port", "0", "--save", "", "--appendonly", "no"]);
                command.arg("--unixsocket").arg(&socket);
                dir = Some(folder);
            }
            Kind::Nats => {
                command.args(["-a", "127.0.0.1", "-p", "-1"]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{} starts: {err}", self.binary()));
        let pid = child.id();
        let at = match &dir {
            Some(folder) => Endpoint::Unix(folder.join("redis.sock")),
            None => Endpoint::Tcp(ferrosock_tests::listening_port(
                pid,
                Duration::from_secs(30),
            )),
        };
        let daemon = Daemon { child, at, dir };
        let at = daemon.at.clone();
        within_secs(30, move || loop {
            let up = match &at {
                Endpoint::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
                Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            };
            if up {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        daemon
    }

    /// Whether the broker is installed; without it, the test is skipped, except in CI.
    fn available(self) -> bool {
        installed(self.binary())
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A TCP relay to a broker, on a port the test holds for its whole life: the nodes connect to
/// it. `set_up(false)` is an outage (the relayed connections are cut, new ones closed at
/// once) without the broker's port ever being free for another process to take.
struct Relay {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: Endpoint) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, _) = tokio::sync::watch::channel(true);
        let watch = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut state = watch.subscribe();
                if !*state.borrow_and_update() {
                    continue; // down: closed at once
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let mut client = client;
                    let relayed = async {
                        match &target {
                            Endpoint::Tcp(port) => {
                                let mut broker =
                                    tokio::net::TcpStream::connect(("127.0.0.1", *port)).await?;
                                tokio::io::copy_bidirectional(&mut client, &mut broker).await
                            }
                            Endpoint::Unix(path) => {
                                let mut broker = tokio::net::UnixStream::connect(path).await?;
                                tokio::io::copy_bidirectional(&mut client, &mut broker).await
                            }
                        }
                    };
                    tokio::select! {
                        _ = relayed => {}
                        _ = state.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Relay { port, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// The next chat text within `wait`, answering pings on the way; `None` if nothing came.
async fn next_text(client: &mut RawClient, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, client.recv()).await {
            Err(_) => return None,
            Ok(Some(Decoded::Text(text))) => return Some(text.to_string()),
            Ok(Some(Decoded::Ping(payload))) => {
                client.send_frame(true, OpCode::Pong, &payload).await
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// A chat member: connected, welcomed.
async fn join(node: SocketAddr) -> RawClient {
    let mut client = RawClient::connect(node, "/chat").await;
    assert_eq!(
        next_text(&mut client, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("Welcome on the chat!")
    );
    client
}

/// Sends numbered `tag` messages from `from` until `to` receives one (cross-node delivery
/// works), then drains what else arrives; `to` must never see a text containing
/// `forbidden`. Returns how long it took.
async fn until_delivered(
    from: &mut RawClient,
    to: &mut RawClient,
    tag: &str,
    forbidden: Option<&str>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut delivered = false;
    for i in 0.. {
        assert!(
            started.elapsed() < limit,
            "{tag}: no cross-node delivery within {limit:?}"
        );
        from.send_text(&format!("{tag} {i}")).await;
        while let Some(text) = next_text(to, Duration::from_millis(200)).await {
            assert!(
                forbidden.is_none_or(|f| !text.contains(f)),
                "{tag}: got {text:?}"
            );
            delivered |= text.starts_with(tag);
        }
        if delivered {
            break;
        }
    }
    started.elapsed()
}

/// Drains whatever arrives on `client` for a moment.
async fn drain(client: &mut RawClient) -> Vec<String> {
    let mut texts = Vec::new();
    while let Some(text) = next_text(client, Duration::from_millis(300)).await {
        texts.push(text);
    }
    texts
}

async fn chat_across_nodes(kind: Kind) {
    let broker = kind.start();
    let relay = Relay::start(broker.at.clone()).await;
    let url = kind.url(relay.port);
    let mut metrics = Vec::new();
    let nodes: Vec<(Server, SocketAddr, Log)> = (0..3)
        .map(|_| {
            let (server, ready, log) = spawn_ready(
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--broker",
                    &url,
                    "--metrics",
                    "127.0.0.1:0",
                ],
                "warn",
            );
            metrics.push(metrics_addr(&ready));
            (server, public_addr(&ready), log)
        })
        .collect();
    // A figure of node 1's /chat server, as its metrics listener shows it.
    let chat_metric = |name: &str| -> Option<u64> {
        let response = http_get(&metrics[0], "/metrics");
        let sample = format!("{name}{{path=\"/chat\"");
        response
            .lines()
            .find(|line| line.starts_with(&sample))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    };
    let mut a = join(nodes[0].1).await;
    let mut b = join(nodes[1].1).await;
    let mut c = join(nodes[2].1).await;
    // The nodes subscribe in the background: wait until each reaches the others.
    until_delivered(&mut a, &mut b, "warm-up a", None, Duration::from_secs(10)).await;
    until_delivered(&mut b, &mut c, "warm-up b", None, Duration::from_secs(10)).await;
    until_delivered(&mut c, &mut a, "warm-up c", None, Duration::from_secs(10)).await;
    for member in [&mut a, &mut b, &mut c] {
        drain(member).await;
    }

    // A message on node 3 reaches node 1 and node 2 once each, and not its sender.
    let sent = Instant::now();
    c.send_text("hello from node 3").await;
    assert_eq!(
        next_chat(&mut a).await.as_deref(),
        Some("hello from node 3")
    );
    let latency = sent.elapsed();
    assert_eq!(
        next_chat(&mut b).await.as_deref(),
        Some("hello from node 3")
    );
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(drain(member).await, Vec::<String>::new(), "exactly once");
    }
    eprintln!("{kind:?}: node 3 -> node 1 in {latency:?}");

    // Joins and departures are announced on every node.
    let mut d = join(nodes[1].1).await;
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(
            next_chat(member).await.as_deref(),
            Some("New client connected")
        );
    }
    d.send_close(1000, "").await;
    d.expect_eof().await;
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(
            next_chat(member).await.as_deref(),
            Some("Client disconnected")
        );
    }

    // The broker goes away: each node still serves its own members, and says so.
    let mut a2 = join(nodes[0].1).await;
    assert_eq!(
        next_chat(&mut a).await.as_deref(),
        Some("New client connected")
    );
    drain(&mut b).await;
    drain(&mut c).await;
    relay.set_up(false);
    let log = nodes[0].2.clone();
    eventually_async("node 1 reports the outage", Duration::from_secs(30), || {
        log.lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("broker unreachable"))
    })
    .await;
    // /pubsub has a broker of its own, whose outage may be the one logged first.
    eventually_async(
        "node 1's /chat counts the outage",
        Duration::from_secs(30),
        || chat_metric("ferrosock_broker_up") == Some(0),
    )
    .await;
    a.send_text("while the broker is down").await;
    assert_eq!(
        next_chat(&mut a2).await.as_deref(),
        Some("while the broker is down"),
        "local delivery goes on"
    );

    // It comes back: cross-node delivery resumes, without a replay of what was published
    // during the outage.
    relay.set_up(true);
    let took = until_delivered(
        &mut a,
        &mut b,
        "after the outage",
        Some("broker is down"),
        Duration::from_secs(60),
    )
    .await;
    eprintln!("{kind:?}: cross-node delivery resumed {took:?} after the broker restarted");
    // The news of the recovery may trail the first delivery.
    eventually_async(
        "node 1 counts the recovery",
        Duration::from_secs(30),
        || chat_metric("ferrosock_broker_up") == Some(1),
    )
    .await;
    assert!(chat_metric("ferrosock_broker_reconnections_total") >= Some(1));
    // Node 1's members published, and heard node 2's and 3's.
    let relayed = |direction: &str| {
        let response = http_get(&metrics[0], "/metrics");
        let sample =
            format!("ferrosock_broker_relayed_total{{path=\"/chat\",direction=\"{direction}\"}} ");
        response
            .lines()
            .find_map(|line| line.strip_prefix(&sample)?.parse::<u64>().ok())
    };
    assert!(relayed("out") > Some(0) && relayed("in") > Some(0));
    let c_saw = drain(&mut c).await;
    assert!(
        c_saw.iter().all(|t| !t.contains("broker is down")),
        "node 3 got a replay: {c_saw:?}"
    );
    drop(broker);
}

/// The next chat text, waiting up to 30 s, skipping the warm-up messages (one may arrive
/// late, after the drain that follows the warm-up).
async fn next_chat(client: &mut RawClient) -> Option<String> {
    loop {
        match next_text(client, Duration::from_secs(30)).await {
            Some(text) if text.starts_with("warm-up") => continue,
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_three_nodes_through_redis() {
    if Kind::Redis.available() {
        chat_across_nodes(Kind::Redis).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_three_nodes_through_nats() {
    if Kind::Nats.available() {
        chat_across_nodes(Kind::Nats).await;
    }
}

#[test]
fn a_bad_broker_url_is_one_line() {
    let output = ferrosock(&["serve", "--broker", "mqtt://localhost"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--broker"), "{stderr}");
}

/// `/pubsub` across two nodes, driven by `ferrosock bench --fanout`: every message reaches
/// every subscriber of both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_fanout_across_two_nodes() {
    if !Kind::Redis.available() {
        return;
    }
    let redis = Kind::Redis.start();
    let relay = Relay::start(redis.at.clone()).await;
    let url = Kind::Redis.url(relay.port);
    let (_one, addr1) = spawn(&["serve", "--listen", "127.0.0.1:0", "--broker", &url]);
    let (_two, addr2) = spawn(&["serve", "--listen", "127.0.0.1:0", "--broker", &url]);
    let args = [
        "bench".to_owned(),
        format!("ws://{addr1}/pubsub"),
        "--node".to_owned(),
        format!("ws://{addr2}/pubsub"),
        "--fanout".to_owned(),
        "60".to_owned(),
        "-s".to_owned(),
        "64".to_owned(),
        "-d".to_owned(),
        "2".to_owned(),
        "--json".to_owned(),
    ];
    // Off the runtime's threads: the relay runs on them while bench does.
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferrosock(&args)
    })
    .await
    .unwrap();
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["nodes"], 2);
    let published = json["published"].as_u64().unwrap();
    let deliveries = json["deliveries"].as_u64().unwrap();
    assert!(published > 10, "{json}");
    // Every message once to each of the 60 subscribers; the last few may still be on their
    // way when the measurement stops.
    assert!(deliveries <= published * 60, "{json}");
    assert!(deliveries >= (published - 4) * 60, "{json}");
}

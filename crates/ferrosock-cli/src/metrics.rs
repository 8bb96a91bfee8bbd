//! `--metrics ADDR`: a listener of its own, apart from the public port, with the servers'
//! counters in Prometheus' text format at `/metrics` and a live status page at `/status`,
//! whose charts are fed over a WebSocket at `/status/live`. Anything else there is 404.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use ferrosock::stats::{ServerStats, StatsHandle};
use ferrosock::{
    ConnectionEvent, ConnectionHandler, Limits, MessageEvent, OpenEvent, ServerHandler,
    ServerOptions, WebSocketConnection, WebSocketServer,
};

/// The status page, served at `/status`.
const STATUS_PAGE: &[u8] = include_bytes!("../../../web/status.html");

/// How often the page's figures are sampled and pushed.
const INTERVAL: Duration = Duration::from_secs(1);

/// Samples kept for a page that opens: ten minutes. Each is a few hundred bytes of JSON, so
/// the history is bounded whatever the uptime or the number of viewers.
const HISTORY: usize = 600;

/// Status pages open at once; more get 503.
const MAX_VIEWERS: usize = 64;

/// The metrics listener, running.
#[derive(Debug)]
pub struct Metrics {
    addr: SocketAddr,
    live: WebSocketServer<StatusFeed>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Metrics {
    /// Binds `listen` and serves the figures of `servers` there.
    pub async fn start(listen: &str, servers: Vec<StatsHandle>) -> anyhow::Result<Metrics> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--metrics {listen}: cannot listen"))?;
        let addr = listener.local_addr()?;
        let history = Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY)));
        let limits = Limits::default()
            .max_message_size(4096)
            .max_frame_size(4096);
        let live = WebSocketServer::detached(
            StatusFeed {
                history: history.clone(),
            },
            ServerOptions::default()
                .max_connections(MAX_VIEWERS)
                .limits(limits),
        )?;
        let scraped = servers.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let mut text = String::with_capacity(8192);
                    ferrosock::stats::write_prometheus(&mut text, &scraped);
                    async move {
                        (
                            [(
                                http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )
                    }
                }),
            )
            .route(
                "/status",
                axum::routing::get(|| async {
                    (
                        [
                            (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                            (http::header::CACHE_CONTROL, "no-store"),
                        ],
                        STATUS_PAGE,
                    )
                }),
            )
            .route("/status/live", live.route());
        let serving = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!("the metrics listener failed: {err}");
            }
        });
        let sampling = tokio::spawn(sample(servers, live.clone(), history));
        Ok(Metrics {
            addr,
            live,
            tasks: vec![serving, sampling],
        })
    }

    /// The address it listens on (the port chosen when `--metrics` gave 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the status pages (1001) and the listener.
    pub async fn stop(self) {
        self.live.terminate().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Every [`INTERVAL`]: one sample of every server, kept in the history and pushed to the
/// status pages.
async fn sample(
    servers: Vec<StatsHandle>,
    live: WebSocketServer<StatusFeed>,
    history: Arc<Mutex<VecDeque<String>>>,
) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(Instant, Vec<ServerStats>)> = None;
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let snapshots: Vec<ServerStats> = servers.iter().map(StatsHandle::snapshot).collect();
        if let Some((then, before)) = &last {
            let seconds = now.duration_since(*then).as_secs_f64().max(1e-3);
            let sample = sample_json(&servers, before, &snapshots, seconds).to_string();
            // Under the lock: a page that opens gets the history, then the samples after it.
            let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(sample.clone());
            live.broadcast(format!(r#"{{"type":"sample",{}"#, &sample[1..]), None);
        }
        last = Some((now, snapshots));
    }
}

/// One sample: per server, the connections open and the rates over the last interval.
fn sample_json(
    servers: &[StatsHandle],
    before: &[ServerStats],
    now: &[ServerStats],
    seconds: f64,
) -> serde_json::Value {
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
    let endpoints: Vec<serde_json::Value> = servers
        .iter()
        .zip(before.iter().zip(now))
        .map(|(server, (b, n))| {
            serde_json::json!({
                "path": server.path_label(),
                "connections": n.connections,
                "messages_received": rate(n.messages_received(), b.messages_received()),
                "messages_sent": rate(n.messages_sent(), b.messages_sent()),
                "received_bytes": rate(n.received_bytes, b.received_bytes),
                "sent_bytes": rate(n.sent_bytes, b.sent_bytes),
                "messages_received_total": n.messages_received(),
                "messages_sent_total": n.messages_sent(),
                "closed_total": n.connections_closed(),
                "refused_total": n.handshakes_refused_total(),
            })
        })
        .collect();
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    serde_json::json!({ "t": t, "endpoints": endpoints })
}

/// The WebSocket of the status pages: the history when one opens, then each sample.
#[derive(Debug)]
pub struct StatusFeed {
    history: Arc<Mutex<VecDeque<String>>>,
}

/// A status page's connection.
#[derive(Debug)]
pub struct Viewer;

impl ServerHandler for StatusFeed {
    type Connection = Viewer;

    /// Pages of this listener only: a page of another site must not read the figures through
    /// a visitor's browser (the listener is meant for operators, not for the public). The
    /// page's origin must name the host the request names; behind a proxy that rewrites
    /// `Host`, have it pass the original one.
    fn on_connection(&self, _: &WebSocketServer<Self>, event: ConnectionEvent) -> Option<Viewer> {
        let request = &event.request;
        let same_origin = match (request.origin(), request.headers().get("host")) {
            (None, _) => true,
            (Some(_), Some(host)) => {
                let own = [format!("http://{host}"), format!("https://{host}")];
                request.origin_allowed(&[own[0].as_str(), own[1].as_str()])
            }
            (Some(_), None) => false,
        };
        if !same_origin {
            tracing::info!(
                origin = request.origin(),
                "status page refused: another site's page"
            );
        }
        same_origin.then_some(Viewer)
    }
}

impl ConnectionHandler for Viewer {
    type Server = StatusFeed;

    /// A page sends nothing: whatever comes is ignored.
    fn on_message(&self, _: &WebSocketConnection<StatusFeed>, _: MessageEvent) {}

    fn on_open(&self, ws: &WebSocketConnection<StatusFeed>, _: OpenEvent) {
        let history = ws
            .wss()
            .handler()
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut hello = format!(
            r#"{{"type":"hello","interval_ms":{},"version":"{}","history":["#,
            INTERVAL.as_millis(),
            env!("CARGO_PKG_VERSION")
        );
        for (i, sample) in history.iter().enumerate() {
            if i > 0 {
                hello.push(',');
            }
            hello.push_str(sample);
        }
        hello.push_str("]}");
        // Sent under the lock: the samples broadcast after it come after it. One broadcast
        // just before may come first; it is in the history too, which the page takes whole.
        let _ = ws.send(hello);
    }
}

//! What a [`WebSocketServer`](crate::WebSocketServer) counts: connections, handshakes,
//! messages and bytes each way, compression, closes by code, budget cuts, callback panics,
//! topics and the broker. [`WebSocketServer::stats`](crate::WebSocketServer::stats) gives a
//! [`ServerStats`] snapshot; [`StatsHandle`] reads the same counters from anywhere (an
//! exporter's thread), and [`write_prometheus`] writes them in Prometheus' text format.
//! With the `prometheus` feature, [`PrometheusCollector`] hands them to a
//! `prometheus-client` registry, read at scrape time.
//!
//! # Cost
//! The per-message counters are relaxed atomic additions into stripes, each on cache lines of
//! its own, handed to threads in turn (a connection's driver takes its thread's stripe once,
//! when it starts, and keeps it if the task moves): no lock on the message path, and threads
//! share a stripe only when there are more threads than stripes (the next power of two of the
//! cores). A snapshot sums the stripes; it never walks the connections, whatever their number.
//!
//! ```no_run
//! # use ferrosock::*;
//! # struct Echo; struct EchoConnection;
//! # impl ServerHandler for Echo { type Connection = EchoConnection;
//! #   fn on_connection(&self, _: &WebSocketServer<Self>, _: ConnectionEvent) -> Option<EchoConnection> { Some(EchoConnection) } }
//! # impl ConnectionHandler for EchoConnection { type Server = Echo;
//! #   fn on_message(&self, ws: &WebSocketConnection<Echo>, e: MessageEvent) { let _ = ws.send(e.data); } }
//! # async fn run() -> Result<(), Error> {
//! let web = WebServer::start(WebServerOptions::default()).await?;
//! let wss = WebSocketServer::new(&web, Echo, ServerOptions::default().path("/echo"))?;
//! let stats = wss.stats();
//! println!("{} open, {} messages received", stats.connections, stats.messages_received());
//! // The Prometheus text format, for a /metrics handler of your own:
//! let mut text = String::new();
//! ferrosock::stats::write_prometheus(&mut text, &[wss.stats_handle()]);
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The kinds of frame counted, in the order of [`Direction`]'s arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text = 0,
    Binary = 1,
    Ping = 2,
    Pong = 3,
    Close = 4,
}

impl Kind {
    /// The kind of a frame by its opcode; `None` for a continuation frame.
    pub(crate) fn of_opcode(opcode: u8) -> Option<Kind> {
        match opcode {
            0x1 => Some(Kind::Text),
            0x2 => Some(Kind::Binary),
            0x9 => Some(Kind::Ping),
            0xA => Some(Kind::Pong),
            0x8 => Some(Kind::Close),
            _ => None,
        }
    }
}

/// The slots of a stripe: frames of each [`Kind`] each way, then byte counts.
const FRAMES_IN: usize = 0;
const FRAMES_OUT: usize = 5;
const WIRE_IN: usize = 10;
const WIRE_OUT: usize = 11;
const INFLATED_FROM: usize = 12;
const INFLATED_TO: usize = 13;
const DEFLATED_FROM: usize = 14;
const DEFLATED_TO: usize = 15;
const SLOTS: usize = 16;

/// One thread's share of the hot counters, on cache lines no other stripe touches. A driver
/// holds its thread's (an `Arc` of 8 bytes), and adds to it with no lookup.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Stripe([AtomicU64; SLOTS]);

/// Each thread's stripe index, given out in turn on its first use.
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Relaxed));
        }
        stripe.get()
    })
}

/// Why an upgrade was refused: the `reason` label of
/// `ferrosock_handshakes_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a valid WebSocket handshake (400, 405, 426, 431).
    BadRequest = 0,
    /// `on_connection` returned `None`, or the origin is not allowed (403).
    Forbidden = 1,
    /// The server was terminated (404).
    NotFound = 2,
    /// `max_connections` reached, or the runtime shutting down (503).
    Unavailable = 3,
    /// An HTTP/2 connection opening WebSockets too fast (429).
    RateLimited = 4,
    /// `on_connection` panicked (500).
    InternalError = 5,
}

const REFUSALS: [&str; 6] = [
    "bad_request",
    "forbidden",
    "not_found",
    "unavailable",
    "rate_limited",
    "internal_error",
];

impl Refusal {
    /// The reason of an HTTP status that refuses an upgrade.
    pub(crate) fn of_status(status: http::StatusCode) -> Refusal {
        match status.as_u16() {
            403 => Refusal::Forbidden,
            404 => Refusal::NotFound,
            429 => Refusal::RateLimited,
            503 => Refusal::Unavailable,
            500..=599 => Refusal::InternalError,
            _ => Refusal::BadRequest,
        }
    }
}

/// The `code` label values of closes: 1000–1015 each, then the application ranges bucketed
/// (a peer chooses those), then anything else.
const CLOSE_BUCKETS: usize = 16 + 3;

fn close_bucket(code: u16) -> usize {
    match code {
        1000..=1015 => usize::from(code - 1000),
        3000..=3999 => 16,
        4000..=4999 => 17,
        _ => 18,
    }
}

fn close_label(bucket: usize) -> String {
    match bucket {
        0..=15 => (1000 + bucket).to_string(),
        16 => "3xxx".to_owned(),
        17 => "4xxx".to_owned(),
        _ => "other".to_owned(),
    }
}

/// A server's counters. The hot ones (per frame, per read and write) are striped; the rest
/// (per connection, per handshake, per topic) are single atomics.
pub(crate) struct Counters {
    path: Option<String>,
    stripes: Box<[Arc<Stripe>]>,
    /// `stripes.len() - 1`: the length is a power of two.
    mask: usize,
    opened: AtomicU64,
    accepted: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
    closes: [AtomicU64; CLOSE_BUCKETS],
    budget_cuts: AtomicU64,
    panics: AtomicU64,
    topics: AtomicU64,
    subscriptions: AtomicU64,
    broker: Option<BrokerCounters>,
}

#[derive(Default)]
struct BrokerCounters {
    down: std::sync::atomic::AtomicBool,
    reconnections: AtomicU64,
    relayed_out: AtomicU64,
    relayed_in: AtomicU64,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("path", &self.path)
            .field("stripes", &self.stripes.len())
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// The counters of a server at `path` (`None`: every path), with a broker or not.
    pub(crate) fn new(path: Option<String>, broker: bool) -> Counters {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let stripes = threads.next_power_of_two().clamp(1, 64);
        Counters {
            path,
            stripes: (0..stripes).map(|_| Arc::default()).collect(),
            mask: stripes - 1,
            opened: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            closes: Default::default(),
            budget_cuts: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            topics: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            broker: broker.then(BrokerCounters::default),
        }
    }

    /// The calling thread's stripe: a driver takes it once, when it starts.
    pub(crate) fn stripe(&self) -> Arc<Stripe> {
        self.stripes[thread_stripe() & self.mask].clone()
    }

    fn add(&self, slot: usize, n: u64) {
        self.stripes[thread_stripe() & self.mask].0[slot].fetch_add(n, Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn opened(&self) {
        self.opened.fetch_add(1, Relaxed);
    }

    /// A connection counted by [`opened`](Self::opened) has ended, with this close code.
    pub(crate) fn closed(&self, code: u16) {
        self.closes[close_bucket(code)].fetch_add(1, Relaxed);
    }

    pub(crate) fn budget_cut(&self) {
        self.budget_cuts.fetch_add(1, Relaxed);
    }

    pub(crate) fn panicked(&self) {
        self.panics.fetch_add(1, Relaxed);
    }

    /// A subscription was added (`+1`) or removed (`-1`), and a topic was created or emptied.
    pub(crate) fn subscription(&self, added: bool, topic_changed: bool) {
        let apply = |counter: &AtomicU64| {
            if added {
                counter.fetch_add(1, Relaxed);
            } else {
                counter.fetch_sub(1, Relaxed);
            }
        };
        apply(&self.subscriptions);
        if topic_changed {
            apply(&self.topics);
        }
    }

    /// Bytes compressed by a sender's thread (a publish prepared once for many).
    pub(crate) fn deflated(&self, from: usize, to: usize) {
        self.add(DEFLATED_FROM, from as u64);
        self.add(DEFLATED_TO, to as u64);
    }

    /// The broker went down (`false`) or came back (`true`).
    pub(crate) fn broker_up(&self, up: bool) {
        if let Some(broker) = &self.broker {
            let was_down = broker.down.swap(!up, Relaxed);
            if up && was_down {
                broker.reconnections.fetch_add(1, Relaxed);
            }
        }
    }

    /// A message handed to the broker (`out`) or received from it for this node.
    pub(crate) fn relayed(&self, out: bool) {
        if let Some(broker) = &self.broker {
            let counter = if out {
                &broker.relayed_out
            } else {
                &broker.relayed_in
            };
            counter.fetch_add(1, Relaxed);
        }
    }

    fn snapshot(&self) -> ServerStats {
        let mut sums = [0u64; SLOTS];
        for stripe in self.stripes.iter() {
            for (sum, slot) in sums.iter_mut().zip(&stripe.0) {
                *sum += slot.load(Relaxed);
            }
        }
        let frames = |at: usize| FrameCounts {
            text: sums[at],
            binary: sums[at + 1],
            ping: sums[at + 2],
            pong: sums[at + 3],
            close: sums[at + 4],
        };
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        let closes: Vec<u64> = self.closes.iter().map(load).collect();
        // After the closes: a connection opened and closed meanwhile shows as open, never the
        // other way round (the subtraction saturates all the same).
        let opened = load(&self.opened);
        ServerStats {
            connections: opened.saturating_sub(closes.iter().sum()),
            connections_opened: opened,
            handshakes_accepted: load(&self.accepted),
            handshakes_refused: Refused {
                bad_request: load(&self.refused[Refusal::BadRequest as usize]),
                forbidden: load(&self.refused[Refusal::Forbidden as usize]),
                not_found: load(&self.refused[Refusal::NotFound as usize]),
                unavailable: load(&self.refused[Refusal::Unavailable as usize]),
                rate_limited: load(&self.refused[Refusal::RateLimited as usize]),
                internal_error: load(&self.refused[Refusal::InternalError as usize]),
            },
            received: frames(FRAMES_IN),
            sent: frames(FRAMES_OUT),
            received_bytes: sums[WIRE_IN],
            sent_bytes: sums[WIRE_OUT],
            inflated: Compression {
                uncompressed_bytes: sums[INFLATED_TO],
                compressed_bytes: sums[INFLATED_FROM],
            },
            deflated: Compression {
                uncompressed_bytes: sums[DEFLATED_FROM],
                compressed_bytes: sums[DEFLATED_TO],
            },
            closes: closes
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(bucket, n)| (close_label(bucket), *n))
                .collect(),
            budget_cuts: load(&self.budget_cuts),
            callback_panics: load(&self.panics),
            topics: load(&self.topics),
            subscriptions: load(&self.subscriptions),
            broker: self.broker.as_ref().map(|broker| BrokerStats {
                up: !broker.down.load(Relaxed),
                reconnections: load(&broker.reconnections),
                relayed_out: load(&broker.relayed_out),
                relayed_in: load(&broker.relayed_in),
            }),
        }
    }
}

impl fmt::Debug for Stripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stripe").finish_non_exhaustive()
    }
}

impl Stripe {
    fn slots(&self) -> &[AtomicU64; SLOTS] {
        &self.0
    }

    /// A frame of `kind` received.
    pub(crate) fn frame_in(&self, kind: Kind) {
        self.slots()[FRAMES_IN + kind as usize].fetch_add(1, Relaxed);
    }

    /// A frame of `kind` written whole (`None`: a continuation, not counted).
    pub(crate) fn frame_out(&self, kind: Option<Kind>) {
        if let Some(kind) = kind {
            self.slots()[FRAMES_OUT + kind as usize].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn wire_in(&self, n: usize) {
        self.slots()[WIRE_IN].fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn wire_out(&self, n: usize) {
        self.slots()[WIRE_OUT].fetch_add(n as u64, Relaxed);
    }

    /// A message of `to` bytes inflated from `from`.
    pub(crate) fn inflated(&self, from: usize, to: usize) {
        self.slots()[INFLATED_FROM].fetch_add(from as u64, Relaxed);
        self.slots()[INFLATED_TO].fetch_add(to as u64, Relaxed);
    }

    /// A message of `from` bytes deflated to `to`.
    pub(crate) fn deflated(&self, from: usize, to: usize) {
        self.slots()[DEFLATED_FROM].fetch_add(from as u64, Relaxed);
        self.slots()[DEFLATED_TO].fetch_add(to as u64, Relaxed);
    }
}

/// Reads a server's counters: a cheap, `'static` handle, whatever the server's handler type,
/// from [`WebSocketServer::stats_handle`](crate::WebSocketServer::stats_handle). It keeps the
/// counters (not the server) alive: a terminated server's last figures stay readable.
#[derive(Clone, Debug)]
pub struct StatsHandle(pub(crate) Arc<Counters>);

impl StatsHandle {
    /// The server's configured path (`None`: it serves every path): the `path` label of its
    /// metrics, never the path a client asked for.
    pub fn path(&self) -> Option<&str> {
        self.0.path.as_deref()
    }

    /// The `path` label: the configured path, or `*` for a server of every path.
    pub fn path_label(&self) -> &str {
        self.path().unwrap_or("*")
    }

    /// The figures now. Sums a few dozen atomics: no lock, and no work per connection.
    pub fn snapshot(&self) -> ServerStats {
        self.0.snapshot()
    }
}

/// A snapshot of a server's counters ([`WebSocketServer::stats`](crate::WebSocketServer::stats)).
/// Every figure counts from the server's creation, except the gauges (`connections`,
/// `topics`, `subscriptions`, `broker.up`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now (from the 101 until after `on_terminate`).
    pub connections: u64,
    /// Connections opened since the start.
    pub connections_opened: u64,
    /// Upgrades answered with 101 (or 200 for HTTP/2). A few may then fail to open (the
    /// client left before the answer reached it).
    pub handshakes_accepted: u64,
    /// Upgrades refused, by reason.
    pub handshakes_refused: Refused,
    /// Frames received, by type: a message counts once, however many frames it came in.
    pub received: FrameCounts,
    /// Frames sent, by type, counted once written to the socket.
    pub sent: FrameCounts,
    /// Bytes read from the connections' sockets (frame headers included).
    pub received_bytes: u64,
    /// Bytes written to the connections' sockets (frame headers included).
    pub sent_bytes: u64,
    /// Received messages that were compressed (permessage-deflate): bytes before and after
    /// inflating.
    pub inflated: Compression,
    /// Messages compressed for sending: bytes before and after deflating (a publish
    /// compressed once for many subscribers counts once per subscriber it was queued for).
    pub deflated: Compression,
    /// Connections ended, by close code: `"1000"`–`"1015"`, `"3xxx"`, `"4xxx"`, `"other"`.
    /// Codes not seen yet are absent. 1006: no close frame; a code this side sent when it
    /// failed the connection.
    pub closes: Vec<(String, u64)>,
    /// Connections closed with 1008 because they did not read what was sent to them (the
    /// byte budget, [`BackpressurePolicy::Close`](crate::BackpressurePolicy::Close)).
    pub budget_cuts: u64,
    /// Callbacks (of the server or of its connections) that panicked.
    pub callback_panics: u64,
    /// Topics with at least one subscriber now.
    pub topics: u64,
    /// Subscriptions (connection and topic pairs) now.
    pub subscriptions: u64,
    /// The broker's state, when the server has one.
    pub broker: Option<BrokerStats>,
}

impl ServerStats {
    /// Data messages received (text and binary).
    pub fn messages_received(&self) -> u64 {
        self.received.text + self.received.binary
    }

    /// Data messages sent (text and binary).
    pub fn messages_sent(&self) -> u64 {
        self.sent.text + self.sent.binary
    }

    /// Connections ended, whatever their code.
    pub fn connections_closed(&self) -> u64 {
        self.closes.iter().map(|(_, n)| n).sum()
    }

    /// Upgrades refused, whatever the reason.
    pub fn handshakes_refused_total(&self) -> u64 {
        let r = &self.handshakes_refused;
        r.bad_request
            + r.forbidden
            + r.not_found
            + r.unavailable
            + r.rate_limited
            + r.internal_error
    }
}

/// Frames by type ([`ServerStats::received`], [`ServerStats::sent`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameCounts {
    /// Text messages.
    pub text: u64,
    /// Binary messages.
    pub binary: u64,
    /// Pings.
    pub ping: u64,
    /// Pongs.
    pub pong: u64,
    /// Close frames.
    pub close: u64,
}

/// Upgrades refused, by reason ([`ServerStats::handshakes_refused`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refused {
    /// Not a valid WebSocket handshake: 400, 405, 426, 431.
    pub bad_request: u64,
    /// `on_connection` said no (403).
    pub forbidden: u64,
    /// The server was terminated (404).
    pub not_found: u64,
    /// `max_connections` was reached (503).
    pub unavailable: u64,
    /// An HTTP/2 connection opened WebSockets too fast (429).
    pub rate_limited: u64,
    /// `on_connection` panicked (500).
    pub internal_error: u64,
}

/// Bytes through permessage-deflate ([`ServerStats::inflated`], [`ServerStats::deflated`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// The messages' payloads as the application sees them.
    pub uncompressed_bytes: u64,
    /// The same payloads as they travel.
    pub compressed_bytes: u64,
}

/// A server's broker ([`ServerStats::broker`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Whether the broker is reachable (as far as the last news from it says).
    pub up: bool,
    /// Times it came back after an outage.
    pub reconnections: u64,
    /// Publishes and broadcasts handed to it.
    pub relayed_out: u64,
    /// Messages from other nodes delivered here.
    pub relayed_in: u64,
}

/// A metric family: its name (without `_total`), help, type and samples.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<Sample>,
}

struct Sample {
    labels: Labels,
    value: u64,
}

/// A sample's labels, but `path`.
type Labels = Vec<(&'static str, String)>;

/// How a family reads its samples (but the `path` label) from a server's figures.
type Read = fn(&ServerStats) -> Vec<(Labels, u64)>;

fn one(value: u64) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), value)]
}

fn labelled(label: &'static str, values: &[(&str, u64)]) -> Vec<(Labels, u64)> {
    values
        .iter()
        .map(|(value, n)| (vec![(label, (*value).to_owned())], *n))
        .collect()
}

fn data(counts: &FrameCounts) -> Vec<(Labels, u64)> {
    labelled("type", &[("text", counts.text), ("binary", counts.binary)])
}

fn control(counts: &FrameCounts) -> Vec<(Labels, u64)> {
    labelled(
        "type",
        &[
            ("ping", counts.ping),
            ("pong", counts.pong),
            ("close", counts.close),
        ],
    )
}

fn compression(s: &ServerStats, bytes: fn(&Compression) -> u64) -> Vec<(Labels, u64)> {
    labelled(
        "direction",
        &[
            ("received", bytes(&s.inflated)),
            ("sent", bytes(&s.deflated)),
        ],
    )
}

/// Every family: name (without `_total`), help, counter (or gauge), and its samples.
const FAMILIES: &[(&str, &str, bool, Read)] = &[
    (
        "ferrosock_connections",
        "WebSocket connections open now.",
        false,
        |s| one(s.connections),
    ),
    (
        "ferrosock_connections_opened",
        "WebSocket connections opened.",
        true,
        |s| one(s.connections_opened),
    ),
    (
        "ferrosock_handshakes_accepted",
        "WebSocket upgrades accepted.",
        true,
        |s| one(s.handshakes_accepted),
    ),
    (
        "ferrosock_handshakes_refused",
        "WebSocket upgrades refused, by reason.",
        true,
        |s| {
            let r = &s.handshakes_refused;
            let counts = [
                r.bad_request,
                r.forbidden,
                r.not_found,
                r.unavailable,
                r.rate_limited,
                r.internal_error,
            ];
            let pairs: Vec<(&str, u64)> = REFUSALS.into_iter().zip(counts).collect();
            labelled("reason", &pairs)
        },
    ),
    (
        "ferrosock_messages_received",
        "Data messages received, by type.",
        true,
        |s| data(&s.received),
    ),
    (
        "ferrosock_messages_sent",
        "Data messages written to the socket, by type.",
        true,
        |s| data(&s.sent),
    ),
    (
        "ferrosock_control_frames_received",
        "Control frames received, by type.",
        true,
        |s| control(&s.received),
    ),
    (
        "ferrosock_control_frames_sent",
        "Control frames written to the socket, by type.",
        true,
        |s| control(&s.sent),
    ),
    (
        "ferrosock_received_bytes",
        "Bytes read from WebSocket connections, frame headers included.",
        true,
        |s| one(s.received_bytes),
    ),
    (
        "ferrosock_sent_bytes",
        "Bytes written to WebSocket connections, frame headers included.",
        true,
        |s| one(s.sent_bytes),
    ),
    (
        "ferrosock_uncompressed_bytes",
        "Payloads of compressed messages, in bytes before deflating or after inflating.",
        true,
        |s| compression(s, |c| c.uncompressed_bytes),
    ),
    (
        "ferrosock_compressed_bytes",
        "Payloads of compressed messages, in bytes as they travel.",
        true,
        |s| compression(s, |c| c.compressed_bytes),
    ),
    (
        "ferrosock_connections_closed",
        "WebSocket connections ended, by close code (1006: no close frame).",
        true,
        |s| {
            let pairs: Vec<(&str, u64)> = s.closes.iter().map(|(c, n)| (c.as_str(), *n)).collect();
            labelled("code", &pairs)
        },
    ),
    (
        "ferrosock_budget_cuts",
        "Connections closed with 1008 for not reading what was sent to them.",
        true,
        |s| one(s.budget_cuts),
    ),
    (
        "ferrosock_callback_panics",
        "Callbacks that panicked.",
        true,
        |s| one(s.callback_panics),
    ),
    (
        "ferrosock_topics",
        "Topics with at least one subscriber.",
        false,
        |s| one(s.topics),
    ),
    (
        "ferrosock_subscriptions",
        "Subscriptions of connections to topics.",
        false,
        |s| one(s.subscriptions),
    ),
    (
        "ferrosock_broker_up",
        "1 when the broker is reachable, 0 during an outage.",
        false,
        |s| s.broker.iter().flat_map(|b| one(u64::from(b.up))).collect(),
    ),
    (
        "ferrosock_broker_reconnections",
        "Times the broker came back after an outage.",
        true,
        |s| s.broker.iter().flat_map(|b| one(b.reconnections)).collect(),
    ),
    (
        "ferrosock_broker_relayed",
        "Messages relayed through the broker, by direction.",
        true,
        |s| {
            s.broker
                .iter()
                .flat_map(|b| {
                    labelled("direction", &[("out", b.relayed_out), ("in", b.relayed_in)])
                })
                .collect()
        },
    ),
];

/// The families of every server's figures, in [`FAMILIES`]' order, each server's samples
/// with its `path` label.
fn families(servers: &[StatsHandle]) -> Vec<Family> {
    let snapshots: Vec<(&str, ServerStats)> = servers
        .iter()
        .map(|server| (server.path_label(), server.snapshot()))
        .collect();
    FAMILIES
        .iter()
        .map(|&(name, help, counter, read)| Family {
            name,
            help,
            counter,
            samples: snapshots
                .iter()
                .flat_map(|(path, stats)| {
                    read(stats).into_iter().map(|(mut labels, value)| {
                        labels.insert(0, ("path", (*path).to_owned()));
                        Sample { labels, value }
                    })
                })
                .collect(),
        })
        .collect()
}

/// Writes the figures of `servers` in Prometheus' text exposition format (version 0.0.4, the
/// format `promtool check metrics` reads; serve it as `text/plain; version=0.0.4`), each with
/// its server's `path` label. Families with no sample (the broker's, with no broker) are left
/// out. Give servers of distinct paths: two of one path (two detached servers are both `*`)
/// would write series that Prometheus cannot tell apart.
pub fn write_prometheus(out: &mut String, servers: &[StatsHandle]) {
    for family in families(servers) {
        if family.samples.is_empty() {
            continue;
        }
        let (suffix, kind) = if family.counter {
            ("_total", "counter")
        } else {
            ("", "gauge")
        };
        let _ = writeln!(out, "# HELP {}{suffix} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {}{suffix} {kind}", family.name);
        for sample in family.samples {
            let _ = write!(out, "{}{suffix}{{", family.name);
            for (i, (key, value)) in sample.labels.iter().enumerate() {
                let comma = if i > 0 { "," } else { "" };
                let _ = write!(out, "{comma}{key}=\"");
                for c in value.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            let _ = writeln!(out, "}} {}", sample.value);
        }
    }
}

/// The servers' figures for a `prometheus-client` [`Registry`], read at each scrape (a
/// [`Collector`]): nothing is pushed, so counting costs the message path no more than the
/// atomics it always does, and a scrape sums the counters without touching a connection.
///
/// ```no_run
/// # use ferrosock::*;
/// # fn run<H: ServerHandler>(echo: WebSocketServer<H>, chat: WebSocketServer<H>) {
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(ferrosock::stats::PrometheusCollector::new([
///     echo.stats_handle(),
///     chat.stats_handle(),
/// ])));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// # }
/// ```
///
/// [`Registry`]: prometheus_client::registry::Registry
/// [`Collector`]: prometheus_client::collector::Collector
#[cfg(feature = "prometheus")]
#[derive(Debug)]
pub struct PrometheusCollector {
    servers: Vec<StatsHandle>,
}

#[cfg(feature = "prometheus")]
impl PrometheusCollector {
    /// A collector of these servers' figures.
    pub fn new(servers: impl IntoIterator<Item = StatsHandle>) -> PrometheusCollector {
        PrometheusCollector {
            servers: servers.into_iter().collect(),
        }
    }
}

#[cfg(feature = "prometheus")]
impl prometheus_client::collector::Collector for PrometheusCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        for family in families(&self.servers) {
            if family.samples.is_empty() {
                continue;
            }
            let kind = if family.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            // The encoder appends `_total` to a counter's name.
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for sample in &family.samples {
                let labels: Vec<(&str, &str)> = sample
                    .labels
                    .iter()
                    .map(|(key, value)| (*key, value.as_str()))
                    .collect();
                let encoder = metric.encode_family(&labels)?;
                if family.counter {
                    ConstCounter::new(sample.value).encode(encoder)?;
                } else {
                    ConstGauge::new(i64::try_from(sample.value).unwrap_or(i64::MAX))
                        .encode(encoder)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_bucketed_so_that_a_peer_cannot_grow_the_label_set() {
        let counters = Arc::new(Counters::new(Some("/echo".to_owned()), false));
        for code in [
            1000, 1000, 1006, 1015, 3000, 3999, 4001, 4999, 2000, 5000, 999,
        ] {
            counters.opened();
            counters.closed(code);
        }
        let stats = StatsHandle(counters).snapshot();
        assert_eq!(
            stats.closes,
            [
                ("1000".to_owned(), 2),
                ("1006".to_owned(), 1),
                ("1015".to_owned(), 1),
                ("3xxx".to_owned(), 2),
                ("4xxx".to_owned(), 2),
                ("other".to_owned(), 3),
            ]
        );
        assert_eq!(stats.connections, 0);
        assert_eq!(stats.connections_closed(), 11);
    }

    #[test]
    fn stripes_of_many_threads_add_up() {
        let counters = Arc::new(Counters::new(None, false));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let counters = &counters;
                scope.spawn(move || {
                    let stripe = counters.stripe();
                    for _ in 0..1000 {
                        stripe.frame_in(Kind::Text);
                        stripe.wire_in(7);
                        stripe.frame_out(Kind::of_opcode(0x2));
                        stripe.frame_out(Kind::of_opcode(0x0));
                    }
                });
            }
        });
        let stats = StatsHandle(counters).snapshot();
        assert_eq!(stats.received.text, 8000);
        assert_eq!(stats.received_bytes, 56_000);
        assert_eq!(stats.sent.binary, 8000);
        assert_eq!(stats.messages_sent(), 8000);
    }

    #[test]
    fn the_text_format_escapes_label_values_and_names_counters_total() {
        let counters = Arc::new(Counters::new(Some("/a\"b\\c\nd".to_owned()), true));
        counters.refused(Refusal::of_status(http::StatusCode::FORBIDDEN));
        counters.broker_up(false);
        counters.broker_up(true);
        let mut text = String::new();
        write_prometheus(&mut text, &[StatsHandle(counters)]);
        assert!(
            text.contains("# TYPE ferrosock_connections gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ferrosock_handshakes_refused_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "ferrosock_handshakes_refused_total{path=\"/a\\\"b\\\\c\\nd\",reason=\"forbidden\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("ferrosock_broker_reconnections_total{path=\"/a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        // No close yet: the family is left out rather than written empty.
        assert!(
            !text.contains("ferrosock_connections_closed_total"),
            "{text}"
        );
    }

    #[test]
    fn a_server_without_a_broker_exports_no_broker_family() {
        let mut text = String::new();
        write_prometheus(
            &mut text,
            &[StatsHandle(Arc::new(Counters::new(None, false)))],
        );
        assert!(
            text.contains("ferrosock_connections{path=\"*\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("broker"), "{text}");
    }
}

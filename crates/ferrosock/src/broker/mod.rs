//! Brokers: how [`WebSocketServer::publish`](crate::WebSocketServer::publish) and
//! [`broadcast`](crate::WebSocketServer::broadcast) reach the subscribers of other nodes.
//!
//! Every node delivers what it publishes to its own subscribers at once, in the publisher's
//! thread; the broker carries a copy to the other nodes, which deliver it to theirs. A node
//! ignores the copies of its own messages that come back, so each subscriber gets each
//! message exactly once. Without a broker (the default), `publish` reaches this server's
//! subscribers only.
//!
//! - [`LocalBroker`]: servers in one process (no external service).
//! - `RedisBroker` (feature `redis`): Redis pub/sub.
//! - `NatsBroker` (feature `nats`): NATS core subjects.
//!
//! Delivery across nodes is at most once: a broker that is down drops what is published
//! meanwhile (each node keeps serving its own subscribers), reports the outage through the
//! server's `on_error`, reconnects with backoff and resumes. Nothing is replayed.
//!
//! A broker moves opaque payloads; ferrosock encodes each message with its origin, frame type
//! and topic. Implement [`Broker`] to use another transport.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "nats")]
pub use nats::NatsBroker;
#[cfg(feature = "redis")]
pub use redis::RedisBroker;

/// Where a message goes: every connection of the server ([`broadcast`]) or one topic's
/// subscribers ([`publish`]).
///
/// [`broadcast`]: crate::WebSocketServer::broadcast
/// [`publish`]: crate::WebSocketServer::publish
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel<'a> {
    /// Every connection.
    All,
    /// The subscribers of a topic.
    Topic(&'a str),
}

/// Carries published messages between the nodes that serve the same WebSocket endpoint.
///
/// One broker serves one [`WebSocketServer`](crate::WebSocketServer) (give each endpoint its
/// own, e.g. with a different prefix). ferrosock calls [`start`](Broker::start) once, when the
/// server is created, then [`publish`](Broker::publish) for every message published on this
/// node.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Starts relaying: from now on, what other nodes publish on any channel goes to
    /// [`BrokerInbox::deliver`], and outages and recoveries to [`BrokerInbox::outage`] and
    /// [`BrokerInbox::recovered`]. Spawn the broker's tasks with [`BrokerInbox::runtime`].
    fn start(&self, inbox: BrokerInbox);

    /// Sends `payload` to the other nodes on `channel`. Must not block or wait: while the
    /// broker is unreachable, drop it.
    fn publish(&self, channel: Channel<'_>, payload: Bytes);
}

/// What a broker hands received messages and news to. Cheap to clone.
#[derive(Clone)]
pub struct BrokerInbox {
    deliver: Arc<Deliver>,
    report: Arc<Report>,
    runtime: tokio::runtime::Handle,
}

type Deliver = dyn Fn(Channel<'_>, &[u8]) + Send + Sync;
type Report = dyn Fn(BrokerNews) + Send + Sync;

/// An outage or a recovery.
#[derive(Debug)]
pub(crate) enum BrokerNews {
    Outage(String),
    Recovered,
}

impl BrokerInbox {
    pub(crate) fn new(
        deliver: impl Fn(Channel<'_>, &[u8]) + Send + Sync + 'static,
        report: impl Fn(BrokerNews) + Send + Sync + 'static,
        runtime: tokio::runtime::Handle,
    ) -> BrokerInbox {
        BrokerInbox {
            deliver: Arc::new(deliver),
            report: Arc::new(report),
            runtime,
        }
    }

    /// A payload another node published on `channel`. Copies of this node's own messages are
    /// recognised and ignored.
    pub fn deliver(&self, channel: Channel<'_>, payload: &[u8]) {
        (self.deliver)(channel, payload);
    }

    /// The broker cannot be reached: reported through the server's `on_error` (once per
    /// outage is enough). Local delivery goes on.
    pub fn outage(&self, what: impl fmt::Display) {
        (self.report)(BrokerNews::Outage(what.to_string()));
    }

    /// The broker is reachable again: cross-node delivery resumes.
    pub fn recovered(&self) {
        (self.report)(BrokerNews::Recovered);
    }

    /// The server's runtime, to spawn the broker's tasks on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

impl fmt::Debug for BrokerInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerInbox").finish_non_exhaustive()
    }
}

/// Servers in one process, linked as if they were nodes: what one publishes reaches the
/// others' subscribers. Clones are handles on the same hub.
///
/// ```
/// use ferrosock::{LocalBroker, ServerOptions};
/// let hub = LocalBroker::new();
/// // Two endpoints (or two web servers) sharing topics:
/// let a = ServerOptions::default().path("/a").broker(hub.clone());
/// let b = ServerOptions::default().path("/b").broker(hub);
/// # let _ = (a, b);
/// ```
#[derive(Clone, Default)]
pub struct LocalBroker {
    inboxes: Arc<Mutex<Vec<BrokerInbox>>>,
}

impl LocalBroker {
    /// A hub with no server yet.
    pub fn new() -> LocalBroker {
        LocalBroker::default()
    }
}

impl fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers = self.inboxes.lock().map_or(0, |inboxes| inboxes.len());
        f.debug_struct("LocalBroker")
            .field("servers", &servers)
            .finish()
    }
}

impl Broker for LocalBroker {
    fn start(&self, inbox: BrokerInbox) {
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(inbox);
    }

    fn publish(&self, channel: Channel<'_>, payload: Bytes) {
        let inboxes = self
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for inbox in inboxes {
            inbox.deliver(channel, &payload);
        }
    }
}

/// The envelope ferrosock puts around a message for the other nodes: version (1), the
/// origin node's id (8 bytes), the frame type (1 text, 2 binary), then the payload. The
/// channel carries the topic.
pub(crate) struct Envelope<'a> {
    pub(crate) origin: u64,
    pub(crate) binary: bool,
    pub(crate) payload: &'a [u8],
}

const ENVELOPE_VERSION: u8 = 1;
const HEADER_LEN: usize = 10;

impl<'a> Envelope<'a> {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        out.put_u8(ENVELOPE_VERSION);
        out.put_u64_le(self.origin);
        out.put_u8(if self.binary { 2 } else { 1 });
        out.put_slice(self.payload);
        out.freeze()
    }

    /// `None` for anything that is not an envelope of this version.
    pub(crate) fn decode(bytes: &'a [u8]) -> Option<Envelope<'a>> {
        let (header, payload) = bytes.split_at_checked(HEADER_LEN)?;
        if header[0] != ENVELOPE_VERSION {
            return None;
        }
        let origin = u64::from_le_bytes(header[1..9].try_into().ok()?);
        let binary = match header[9] {
            1 => false,
            2 => true,
            _ => return None,
        };
        Some(Envelope {
            origin,
            binary,
            payload,
        })
    }
}

/// The queue between a broker's `publish`, which never waits, and its publishing task, which
/// sends in order: bounded, dropping what does not fit.
#[cfg(any(feature = "redis", feature = "nats"))]
#[derive(Debug, Default)]
pub(crate) struct Outbox(std::sync::OnceLock<tokio::sync::mpsc::Sender<(String, Bytes)>>);

#[cfg(any(feature = "redis", feature = "nats"))]
impl Outbox {
    /// Messages waiting for the broker; more are dropped (it is slower than the publishers).
    const LEN: usize = 16 * 1024;

    /// Opens the queue and returns its receiving end; `None` if it was open already (a broker
    /// serves one server).
    pub(crate) fn open(&self) -> Option<tokio::sync::mpsc::Receiver<(String, Bytes)>> {
        let (tx, rx) = tokio::sync::mpsc::channel(Self::LEN);
        self.0.set(tx).ok().map(|()| rx)
    }

    /// Queues a message for `channel` (the broker's own name for it), or drops it.
    pub(crate) fn push(&self, channel: String, payload: Bytes) {
        if let Some(tx) = self.0.get() {
            if tx.try_send((channel, payload)).is_err() {
                tracing::debug!("broker publishing queue full: message dropped");
            }
        }
    }
}

/// Reconnection delays: 100 ms doubling to 5 s.
#[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)).min(5_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_strangers_are_refused() {
        let payload = b"hello";
        let encoded = Envelope {
            origin: 0x0102_0304_0506_0708,
            binary: true,
            payload,
        }
        .encode();
        let back = Envelope::decode(&encoded).unwrap();
        assert_eq!(
            (back.origin, back.binary, back.payload),
            (0x0102_0304_0506_0708, true, &payload[..])
        );
        assert!(Envelope::decode(b"short").is_none());
        let mut other = encoded.to_vec();
        other[0] = 2;
        assert!(Envelope::decode(&other).is_none(), "another version");
        other[0] = 1;
        other[9] = 7;
        assert!(Envelope::decode(&other).is_none(), "another frame type");
    }

    #[test]
    fn backoff_grows_to_five_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(10), Duration::from_secs(5));
    }
}

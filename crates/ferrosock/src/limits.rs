//! Per-connection limits (SPEC §6): every one has a safe default and a knob. The process-wide
//! cap on queued bytes is in [`crate::memory`].

use std::time::Duration;

/// Limits that protect a process from one connection. A violated limit closes only the
/// connection that violated it, with the close code given for each field.
///
/// The defaults are sized for a server with many connections: 1 MiB messages (Python
/// `websockets` chose the same; uWebSockets allows 16 KiB, Node `ws` 100 MiB) and 1 MiB of
/// unsent data per connection, so that a thousand peers that stop reading hold about 1 GiB at
/// most — and the process-wide cap ([`crate::memory`], 256 MiB by default) bounds them all
/// together. Raise them for applications that move large messages (a file upload, say).
///
/// Fields are public; setters of the same names chain:
///
/// ```
/// use std::time::Duration;
/// use ferrosock::Limits;
/// let limits = Limits::default()
///     .max_message_size(16 << 20)
///     .max_frame_size(16 << 20)
///     .idle_timeout(Some(Duration::from_secs(20)));
/// assert_eq!(limits.max_message_size, 16 << 20);
/// assert_eq!(Limits::default().max_outgoing_bytes, 1 << 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest message accepted, all fragments counted (decompressed, with
    /// permessage-deflate). Larger: close 1009. Default: 1 MiB.
    pub max_message_size: usize,
    /// The largest single frame accepted. Larger: close 1009, as soon as its header is read.
    /// Default: 1 MiB, the message limit: Python `websockets` and Node `ws` send each message
    /// as one frame, so a lower default would refuse messages the message limit allows. Lower
    /// it to refuse large frames before their payload arrives.
    pub max_frame_size: usize,
    /// The budget of outgoing bytes queued and not yet written to the socket, counted as
    /// allocated: each message's payload plus
    /// [`QUEUED_MESSAGE_OVERHEAD`](crate::memory::QUEUED_MESSAGE_OVERHEAD) for its place in
    /// the queue. A `send` that would exceed it fails with
    /// [`ErrorKind::BufferFull`](crate::ErrorKind) and [`backpressure`](Limits::backpressure)
    /// says what else happens. One message always goes on an empty queue, whatever its size:
    /// the budget bounds what piles up. Default: 1 MiB.
    pub max_outgoing_bytes: usize,
    /// What a `send` over [`max_outgoing_bytes`](Limits::max_outgoing_bytes) does to the
    /// connection. Default: [`BackpressurePolicy::Close`] (close 1008).
    pub backpressure: BackpressurePolicy,
    /// After this long without receiving anything, a ping is sent so that a live peer answers.
    /// `None` turns keepalive pings off. Default: 30 s.
    pub keepalive_interval: Option<Duration>,
    /// After this long without receiving anything (pongs included), the peer is taken for gone:
    /// the socket is dropped and the connection ends with 1006. `None`: wait forever.
    /// Default: 60 s (two keepalive intervals).
    ///
    /// Silence is counted in ticks of the shorter of this and the keepalive interval, so that
    /// receiving costs no clock read: a peer is pinged, or dropped, within one tick after the
    /// time given here.
    pub idle_timeout: Option<Duration>,
    /// How long the close handshake may take: after sending a close frame, how long to wait for
    /// the peer's before dropping the socket. Default: 5 s.
    pub close_timeout: Duration,
}

/// What happens when a `send` would exceed [`Limits::max_outgoing_bytes`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackpressurePolicy {
    /// The message is not queued and the connection is closed with 1008 (policy violation):
    /// a peer that does not read cannot hold the server's memory. The default.
    #[default]
    Close,
    /// The message is not queued; the connection stays open. The caller decides, from the
    /// error `send` returned, whether to retry later, drop messages or close.
    Reject,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_outgoing_bytes: 1 << 20,
            backpressure: BackpressurePolicy::Close,
            keepalive_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(60)),
            close_timeout: Duration::from_secs(5),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Limits {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Limits {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Limits::max_message_size`].
    max_message_size: usize;
    /// Sets [`Limits::max_frame_size`].
    max_frame_size: usize;
    /// Sets [`Limits::max_outgoing_bytes`].
    max_outgoing_bytes: usize;
    /// Sets [`Limits::backpressure`].
    backpressure: BackpressurePolicy;
    /// Sets [`Limits::keepalive_interval`].
    keepalive_interval: Option<Duration>;
    /// Sets [`Limits::idle_timeout`].
    idle_timeout: Option<Duration>;
    /// Sets [`Limits::close_timeout`].
    close_timeout: Duration;
}

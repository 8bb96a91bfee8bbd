//! [`NatsBroker`]: NATS core subjects.

use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use async_nats::connection::State;
use async_nats::{ConnectOptions, Event};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Broker, BrokerInbox, Channel, Outbox};
use crate::error::{Error, ErrorKind};

/// NATS (core, at most once) as a [`Broker`] (feature `nats`).
///
/// Broadcasts go to the subject `PREFIX.all` and each topic to `PREFIX.t.NAME` when the name
/// is a valid subject token (letters, digits, `_` and `-`), `PREFIX.x.HEX` otherwise (the
/// name's bytes in hex); the default prefix is `ferrosock`. A node holds one connection to
/// NATS, subscribed to `PREFIX.>`. When NATS goes away, the node reports it through the
/// server's `on_error`, drops what is published meanwhile (its own subscribers still get it),
/// and the client reconnects with backoff and resumes.
///
/// ```no_run
/// use ferrosock::{broker::NatsBroker, ServerOptions};
/// let broker = NatsBroker::new("nats://127.0.0.1:4222")?.prefix("chat");
/// let options = ServerOptions::default().path("/chat").broker(broker);
/// # Ok::<(), ferrosock::Error>(())
/// ```
pub struct NatsBroker {
    url: String,
    prefix: String,
    client: Arc<OnceLock<async_nats::Client>>,
    outbox: Outbox,
}

impl NatsBroker {
    /// A broker for the NATS server at `url` (`nats://host[:port]`, several separated by
    /// commas). Connects when its server starts; fails only on a malformed URL.
    pub fn new(url: &str) -> Result<NatsBroker, Error> {
        for server in url.split(',') {
            server
                .trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|err| {
                    Error::with_source(
                        ErrorKind::InvalidUrl,
                        format!("invalid NATS URL {url:?}"),
                        err,
                    )
                })?;
        }
        Ok(NatsBroker {
            url: url.to_owned(),
            prefix: "ferrosock".to_owned(),
            client: Arc::new(OnceLock::new()),
            outbox: Outbox::default(),
        })
    }

    /// Sets the first tokens of the subjects (default `ferrosock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> NatsBroker {
        self.prefix = prefix.into();
        self
    }

    fn subject(&self, channel: Channel<'_>) -> String {
        match channel {
            Channel::All => format!("{}.all", self.prefix),
            Channel::Topic(topic) if is_token(topic) => format!("{}.t.{topic}", self.prefix),
            Channel::Topic(topic) => {
                let mut subject = format!("{}.x.", self.prefix);
                for byte in topic.bytes() {
                    let _ = write!(subject, "{byte:02x}");
                }
                if topic.is_empty() {
                    subject.push('-'); // a token cannot be empty
                }
                subject
            }
        }
    }
}

fn is_token(topic: &str) -> bool {
    !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a subject under `prefix` carries: the channel, with an owned topic.
fn parse(prefix: &str, subject: &str) -> Option<Option<String>> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    if rest == "all" {
        return Some(None);
    }
    if let Some(topic) = rest.strip_prefix("t.") {
        return is_token(topic).then(|| Some(topic.to_owned()));
    }
    let hex = rest.strip_prefix("x.")?;
    if hex == "-" {
        return Some(Some(String::new()));
    }
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok().map(Some)
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("prefix", &self.prefix)
            .field(
                "state",
                &self.client.get().map(|c| c.connection_state().to_string()),
            )
            .finish()
    }
}

impl Broker for NatsBroker {
    fn start(&self, inbox: BrokerInbox) {
        let Some(rx) = self.outbox.open() else {
            tracing::error!("a NatsBroker serves one WebSocketServer: give each its own");
            return;
        };
        let (url, prefix, client) = (self.url.clone(), self.prefix.clone(), self.client.clone());
        inbox
            .runtime()
            .clone()
            .spawn(run(url, prefix, client, inbox, rx));
    }

    fn publish(&self, channel: Channel<'_>, payload: Bytes) {
        let up = self
            .client
            .get()
            .is_some_and(|client| client.connection_state() == State::Connected);
        if !up {
            return; // an outage: not replayed later
        }
        self.outbox.push(self.subject(channel), payload);
    }
}

/// Connects (retrying for ever), subscribes, and relays both ways.
async fn run(
    url: String,
    prefix: String,
    slot: Arc<OnceLock<async_nats::Client>>,
    inbox: BrokerInbox,
    mut queue: mpsc::Receiver<(String, Bytes)>,
) {
    let events = inbox.clone();
    let options = ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let inbox = events.clone();
            async move {
                match event {
                    Event::Disconnected => inbox.outage("the connection to NATS was lost"),
                    Event::Connected => inbox.recovered(),
                    _ => {}
                }
            }
        });
    let client = match options.connect(url.as_str()).await {
        Ok(client) => client,
        Err(err) => {
            inbox.outage(format!("cannot connect to NATS: {err}"));
            return;
        }
    };
    let mut subscriber = match client.subscribe(format!("{prefix}.>")).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            inbox.outage(format!("cannot subscribe on NATS: {err}"));
            return;
        }
    };
    let _ = slot.set(client.clone());
    let publisher = async {
        while let Some((subject, payload)) = queue.recv().await {
            if client.connection_state() != State::Connected {
                continue; // queued before an outage: not replayed
            }
            if let Err(err) = client.publish(subject, payload).await {
                tracing::debug!("publishing on NATS failed: {err}");
            }
        }
    };
    let receiver = async {
        while let Some(message) = subscriber.next().await {
            match parse(&prefix, message.subject.as_str()) {
                Some(None) => inbox.deliver(Channel::All, &message.payload),
                Some(Some(topic)) => inbox.deliver(Channel::Topic(&topic), &message.payload),
                None => {}
            }
        }
    };
    tokio::join!(publisher, receiver);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let broker = NatsBroker::new("nats://127.0.0.1:4222")
            .unwrap()
            .prefix("app");
        for (topic, subject) in [
            ("news", "app.t.news"),
            ("a-b_c9", "app.t.a-b_c9"),
            ("a.b", "app.x.612e62"),
            ("é *", "app.x.c3a9202a"),
            ("", "app.x.-"),
        ] {
            assert_eq!(broker.subject(Channel::Topic(topic)), subject);
            assert_eq!(parse("app", subject), Some(Some(topic.to_owned())));
        }
        assert_eq!(broker.subject(Channel::All), "app.all");
        assert_eq!(parse("app", "app.all"), Some(None));
        assert_eq!(parse("app", "other.all"), None);
        assert_eq!(parse("app", "app.x.6"), None);
        assert_eq!(parse("app", "app.x.zz"), None);
        assert!(NatsBroker::new("nats://bad host:x").is_err());
    }
}

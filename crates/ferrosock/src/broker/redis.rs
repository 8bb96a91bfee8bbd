//! [`RedisBroker`]: Redis pub/sub.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{backoff, Broker, BrokerInbox, Channel, Outbox};
use crate::error::{Error, ErrorKind};

/// Redis pub/sub as a [`Broker`] (feature `redis`).
///
/// Each topic is a Redis channel, `PREFIX topic:NAME`, and broadcasts go to `PREFIX all`
/// (the default prefix is `ferrosock:`, so `ferrosock:topic:news`); give each endpoint sharing
/// a Redis its own prefix. A node holds two connections to Redis: one subscribed to
/// `PREFIX*` (Redis allows nothing else on a subscribed connection), one that publishes, in
/// order. When Redis goes away, the node reports it through the server's `on_error`, drops
/// what is published meanwhile (its own subscribers still get it), reconnects with backoff
/// (100 ms doubling to 5 s) and resumes.
///
/// ```no_run
/// use ferrosock::{broker::RedisBroker, ServerOptions};
/// let broker = RedisBroker::new("redis://127.0.0.1:6379")?.prefix("chat:");
/// let options = ServerOptions::default().path("/chat").broker(broker);
/// # Ok::<(), ferrosock::Error>(())
/// ```
pub struct RedisBroker {
    client: redis::Client,
    prefix: String,
    /// Whether the subscribed connection is up: while it is not, publishing drops.
    up: Arc<AtomicBool>,
    outbox: Outbox,
}

impl RedisBroker {
    /// A broker for the Redis at `url` (`redis://[user:password@]host[:port][/db]`). Connects
    /// when its server starts; fails only on a malformed URL.
    pub fn new(url: &str) -> Result<RedisBroker, Error> {
        let client = redis::Client::open(url).map_err(|err| {
            Error::with_source(
                ErrorKind::InvalidUrl,
                format!("invalid Redis URL {url:?}"),
                err,
            )
        })?;
        Ok(RedisBroker {
            client,
            prefix: "ferrosock:".to_owned(),
            up: Arc::new(AtomicBool::new(false)),
            outbox: Outbox::default(),
        })
    }

    /// Sets the prefix of the channel names (default `ferrosock:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisBroker {
        self.prefix = prefix.into();
        self
    }

    fn channel_name(&self, channel: Channel<'_>) -> String {
        match channel {
            Channel::All => format!("{}all", self.prefix),
            Channel::Topic(topic) => format!("{}topic:{topic}", self.prefix),
        }
    }
}

/// The channel of a channel name under `prefix`.
fn parse<'a>(prefix: &str, name: &'a str) -> Option<Channel<'a>> {
    match name.strip_prefix(prefix)? {
        "all" => Some(Channel::All),
        rest => rest.strip_prefix("topic:").map(Channel::Topic),
    }
}

/// `prefix*` as a glob pattern matching `prefix` literally.
fn pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish()
    }
}

impl Broker for RedisBroker {
    fn start(&self, inbox: BrokerInbox) {
        let Some(rx) = self.outbox.open() else {
            tracing::error!("a RedisBroker serves one WebSocketServer: give each its own");
            return;
        };
        let runtime = inbox.runtime().clone();
        runtime.spawn(subscribe(
            self.client.clone(),
            self.prefix.clone(),
            self.up.clone(),
            inbox,
        ));
        runtime.spawn(publish(self.client.clone(), rx));
    }

    fn publish(&self, channel: Channel<'_>, payload: Bytes) {
        if !self.up.load(Ordering::Acquire) {
            return; // an outage: not replayed later
        }
        self.outbox.push(self.channel_name(channel), payload);
    }
}

/// The subscribed connection: receives everything under the prefix, for ever.
async fn subscribe(client: redis::Client, prefix: String, up: Arc<AtomicBool>, inbox: BrokerInbox) {
    let mut attempt = 0;
    let mut down = false;
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(pattern(&prefix)).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match connected {
            Ok(pubsub) => {
                attempt = 0;
                up.store(true, Ordering::Release);
                if std::mem::take(&mut down) {
                    inbox.recovered();
                }
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    if let Some(channel) = parse(&prefix, message.get_channel_name()) {
                        inbox.deliver(channel, message.get_payload_bytes());
                    }
                }
                up.store(false, Ordering::Release);
                down = true;
                inbox.outage("the connection to Redis was lost");
            }
            Err(err) => {
                up.store(false, Ordering::Release);
                if !std::mem::replace(&mut down, true) {
                    inbox.outage(format!("cannot subscribe on Redis: {err}"));
                }
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// The publishing connection: sends queued messages in order.
async fn publish(client: redis::Client, mut queue: mpsc::Receiver<(String, Bytes)>) {
    let mut attempt = 0;
    loop {
        let mut connection = match client.get_multiplexed_async_connection().await {
            Ok(connection) => connection,
            Err(err) => {
                tracing::debug!("cannot connect to Redis to publish: {err}");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        attempt = 0;
        // What was queued while there was no connection is stale: not replayed.
        while queue.try_recv().is_ok() {}
        loop {
            let Some((channel, payload)) = queue.recv().await else {
                return; // the broker is gone
            };
            let sent = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload[..])
                .query_async::<i64>(&mut connection)
                .await;
            if let Err(err) = sent {
                tracing::debug!("publishing on Redis failed: {err}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        let broker = RedisBroker::new("redis://127.0.0.1:1")
            .unwrap()
            .prefix("app:");
        assert_eq!(broker.channel_name(Channel::All), "app:all");
        assert_eq!(broker.channel_name(Channel::Topic("a b")), "app:topic:a b");
        assert_eq!(parse("app:", "app:all"), Some(Channel::All));
        assert_eq!(parse("app:", "app:topic:a b"), Some(Channel::Topic("a b")));
        assert_eq!(parse("app:", "app:topic:"), Some(Channel::Topic("")));
        assert_eq!(parse("app:", "other:all"), None);
        assert_eq!(parse("app:", "app:else"), None);
        assert_eq!(pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
        assert!(RedisBroker::new("not a url").is_err());
    }
}

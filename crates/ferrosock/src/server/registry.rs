//! A WebSocket server's registry: its open connections, its topics' subscribers, and its
//! `max_connections` places ([`Slot`]), with delivery of a prepared message to a channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

use super::{ServerHandler, WebSocketConnection};
use crate::broker::Channel;
use crate::conn::Prepared;

/// The subscribers of each topic, by connection id.
type Subscribers<H> = HashMap<String, BTreeMap<u64, WebSocketConnection<H>>>;

pub(super) struct Registry<H: ServerHandler> {
    /// Open connections by id; ids grow with arrival, so this is arrival order.
    connections: Mutex<BTreeMap<u64, WebSocketConnection<H>>>,
    /// The subscribers of each topic.
    topics: RwLock<Subscribers<H>>,
    max_connections: usize,
    /// Connections from `on_connection` to the end of `on_terminate`, registered or not yet.
    /// Invariant: `active <= max_connections`.
    active: AtomicUsize,
    all_ended: Notify,
}

impl<H: ServerHandler> Registry<H> {
    pub(super) fn new(max_connections: usize) -> Registry<H> {
        Registry {
            connections: Mutex::new(BTreeMap::new()),
            topics: RwLock::new(HashMap::new()),
            max_connections,
            active: AtomicUsize::new(0),
            all_ended: Notify::new(),
        }
    }

    pub(super) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The open connections, locked. Updates are single inserts and removes: a panic elsewhere
    /// cannot leave the map half-done, so a poisoned lock is still usable.
    pub(super) fn connections(&self) -> MutexGuard<'_, BTreeMap<u64, WebSocketConnection<H>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A snapshot of the open connections, in order of arrival.
    pub(super) fn snapshot(&self) -> Vec<WebSocketConnection<H>> {
        self.connections().values().cloned().collect()
    }

    fn topics_read(&self) -> RwLockReadGuard<'_, Subscribers<H>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn topics_write(&self) -> RwLockWriteGuard<'_, Subscribers<H>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The topics with at least one subscriber, sorted.
    pub(super) fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.topics_read().keys().cloned().collect();
        topics.sort();
        topics
    }

    /// Adds a subscriber (the connection records the topic on its side). `Some(new topic)` if
    /// it was not subscribed yet.
    pub(super) fn add_subscriber(
        &self,
        topic: &str,
        connection: &WebSocketConnection<H>,
    ) -> Option<bool> {
        let mut topics = self.topics_write();
        let new_topic = !topics.contains_key(topic);
        let subscribers = topics.entry(topic.to_owned()).or_default();
        let added = subscribers
            .insert(connection.id(), connection.clone())
            .is_none();
        added.then_some(new_topic)
    }

    /// Removes a subscriber; a topic without subscribers is forgotten. `Some(topic
    /// forgotten)` if it was subscribed.
    pub(super) fn remove_subscriber(&self, topic: &str, id: u64) -> Option<bool> {
        let mut topics = self.topics_write();
        let subscribers = topics.get_mut(topic)?;
        subscribers.remove(&id)?;
        let emptied = subscribers.is_empty();
        if emptied {
            topics.remove(topic);
        }
        Some(emptied)
    }

    /// Queues `prepared` on the connections of `channel`, but `except`. Returns on how many.
    pub(super) fn deliver(
        &self,
        channel: Channel<'_>,
        prepared: &Prepared,
        except: Option<u64>,
    ) -> usize {
        let send = |connection: &WebSocketConnection<H>| prepared.send(connection.shared());
        match channel {
            Channel::Topic(topic) => self.topics_read().get(topic).map_or(0, |subscribers| {
                subscribers
                    .values()
                    .filter(|c| Some(c.id()) != except)
                    .map(send)
                    .filter(|sent| *sent)
                    .count()
            }),
            Channel::All => self
                .connections()
                .values()
                .filter(|c| Some(c.id()) != except)
                .map(send)
                .filter(|sent| *sent)
                .count(),
        }
    }

    /// Waits until no connection is active.
    pub(super) async fn all_ended(&self) {
        loop {
            let notified = self.all_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One of a server's `max_connections` places, held from `on_connection` to `on_terminate`.
pub(super) struct Slot<H: ServerHandler> {
    registry: Arc<Registry<H>>,
}

impl<H: ServerHandler> Slot<H> {
    pub(super) fn reserve(registry: &Arc<Registry<H>>) -> Option<Slot<H>> {
        registry
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < registry.max_connections).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            registry: registry.clone(),
        })
    }
}

impl<H: ServerHandler> Drop for Slot<H> {
    fn drop(&mut self) {
        if self.registry.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.all_ended.notify_waiters();
        }
    }
}

//! The broker relay: messages published or broadcast here go to the other nodes of the
//! server's broker, and theirs come back to this server's connections.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use super::websocket_server::{ServerInner, WebSocketServer};
use super::ServerHandler;
use crate::broker::{BrokerInbox, BrokerNews, Channel, Envelope};
use crate::conn::Prepared;
use crate::event::ErrorInfo;
use crate::message::Message;
use crate::proto::OpCode;

impl<H: ServerHandler> ServerInner<H> {
    /// Hands a message published here to the broker, for the other nodes.
    pub(super) fn relay(&self, channel: Channel<'_>, prepared: &Prepared) {
        if let Some(broker) = &self.broker {
            let (opcode, payload) = prepared.parts();
            let envelope = Envelope {
                origin: self.node,
                binary: opcode == OpCode::Binary,
                payload,
            };
            broker.publish(channel, envelope.encode());
            self.stats.relayed(true);
        }
    }

    /// The inbox this server gives its broker. It holds the server weakly: a broker outliving
    /// its server delivers nowhere.
    pub(super) fn inbox(inner: &Arc<Self>) -> BrokerInbox {
        let (deliver_to, report_to) = (Arc::downgrade(inner), Arc::downgrade(inner));
        BrokerInbox::new(
            move |channel, payload| {
                if let Some(inner) = deliver_to.upgrade() {
                    inner.deliver_remote(channel, payload);
                }
            },
            move |news| {
                if let Some(inner) = report_to.upgrade() {
                    WebSocketServer::from_inner(inner).broker_news(news);
                }
            },
            inner.runtime.clone(),
        )
    }

    /// A message another node published: to this server's connections of `channel`.
    fn deliver_remote(&self, channel: Channel<'_>, payload: &[u8]) {
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(path = ?self.path, "a broker message that is not ferrosock's: dropped");
            return;
        };
        if envelope.origin == self.node {
            return; // this server delivered it when it was published
        }
        self.stats.relayed(false);
        let data = Bytes::copy_from_slice(envelope.payload);
        let message = if envelope.binary {
            Message::Blob(data)
        } else {
            match ByteString::try_from(data) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    tracing::warn!(path = ?self.path, "a broker text message that is not UTF-8: dropped");
                    return;
                }
            }
        };
        let (opcode, payload) = message.into_frame();
        self.registry
            .deliver(channel, &Prepared::new(opcode, payload), None);
    }
}

impl<H: ServerHandler> WebSocketServer<H> {
    /// An outage goes to the handler's `on_error`; a recovery to the log.
    fn broker_news(&self, news: BrokerNews) {
        match news {
            BrokerNews::Outage(what) => {
                self.inner().stats.broker_up(false);
                tracing::warn!(path = ?self.path(), "broker unreachable: {what}");
                self.report(ErrorInfo::new(
                    ErrorInfo::BROKER_UNREACHABLE,
                    format!("broker unreachable: {what}; local delivery goes on"),
                    ErrorInfo::BROKER,
                ));
            }
            BrokerNews::Recovered => {
                self.inner().stats.broker_up(true);
                tracing::info!(path = ?self.path(), "broker reachable again");
            }
        }
    }
}

//! The WebSocket servers of `ferrosock serve` and `ferrosock echo`.

use ferrosock::{
    Compress, ConnectionEvent, ConnectionHandler, MessageEvent, OpenEvent, Request, ServerHandler,
    TerminateEvent, WebSocketConnection, WebSocketServer,
};

/// The origins of `--allowed-origin`: browsers from other pages are refused (403).
#[derive(Clone, Debug, Default)]
pub struct Origins(pub Vec<String>);

impl Origins {
    /// Every client when no origin is listed; otherwise browsers from a listed origin, and
    /// clients that send no `Origin` (they are not browsers, so no page can borrow their
    /// cookies).
    fn admit(&self, request: &Request) -> bool {
        if self.0.is_empty() || request.origin().is_none() {
            return true;
        }
        let allowed: Vec<&str> = self.0.iter().map(String::as_str).collect();
        let admitted = request.origin_allowed(&allowed);
        if !admitted {
            tracing::info!(
                origin = request.origin(),
                "upgrade refused: origin not allowed"
            );
        }
        admitted
    }
}

/// Sends every message back as it came: text as text, binary as binary (data type `Auto`),
/// compressed as `compress` says when permessage-deflate was negotiated.
#[derive(Debug)]
pub struct Echo {
    pub compress: Compress,
    pub origins: Origins,
}

/// A connection of [`Echo`].
#[derive(Debug)]
pub struct EchoConnection;

impl ServerHandler for Echo {
    type Connection = EchoConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<EchoConnection> {
        self.origins.admit(&event.request).then_some(EchoConnection)
    }
}

impl ConnectionHandler for EchoConnection {
    type Server = Echo;

    fn on_message(&self, ws: &WebSocketConnection<Echo>, event: MessageEvent) {
        // A full outgoing budget closes the connection (1008): nothing more to do here.
        let _ = ws.send_with(event.data, ws.wss().handler().compress);
    }
}

/// The 4D documentation's first example: sends the text back in upper case.
#[derive(Debug)]
pub struct Uppercase {
    pub origins: Origins,
}

/// A connection of [`Uppercase`].
#[derive(Debug)]
pub struct UppercaseConnection;

impl ServerHandler for Uppercase {
    type Connection = UppercaseConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<UppercaseConnection> {
        self.origins
            .admit(&event.request)
            .then_some(UppercaseConnection)
    }
}

impl ConnectionHandler for UppercaseConnection {
    type Server = Uppercase;

    fn on_message(&self, ws: &WebSocketConnection<Uppercase>, event: MessageEvent) {
        let _ = ws.send(event.data.to_text().to_uppercase());
    }
}

/// The 4D documentation's chat: each message goes to every other client.
#[derive(Debug)]
pub struct Chat {
    pub origins: Origins,
}

/// A connection of [`Chat`].
#[derive(Debug)]
pub struct ChatConnection;

impl ServerHandler for Chat {
    type Connection = ChatConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<ChatConnection> {
        self.origins.admit(&event.request).then_some(ChatConnection)
    }
}

impl ConnectionHandler for ChatConnection {
    type Server = Chat;

    // Each message goes to every other member, on this node and, with --broker, on every
    // node: WebSocketServer::broadcast builds the frame once for all of them.
    fn on_open(&self, ws: &WebSocketConnection<Chat>, _: OpenEvent) {
        let _ = ws.send("Welcome on the chat!");
        ws.wss().broadcast("New client connected", Some(ws.id()));
    }

    fn on_message(&self, ws: &WebSocketConnection<Chat>, event: MessageEvent) {
        ws.wss().broadcast(event.data, Some(ws.id()));
    }

    fn on_terminate(&self, ws: &WebSocketConnection<Chat>, _: TerminateEvent) {
        ws.wss().broadcast("Client disconnected", Some(ws.id()));
    }
}

/// Publish/subscribe by query string: `/pubsub?subscribe=T` (repeatable) receives what is
/// published on T; each message sent on `/pubsub?publish=T` is published on T. With
/// `--broker`, across every node.
#[derive(Debug)]
pub struct PubSub {
    pub origins: Origins,
}

/// A connection of [`PubSub`]: its topics, from its URL.
#[derive(Debug)]
pub struct PubSubConnection {
    subscribe: Vec<String>,
    publish: Option<String>,
}

impl ServerHandler for PubSub {
    type Connection = PubSubConnection;

    fn on_connection(
        &self,
        _: &WebSocketServer<Self>,
        event: ConnectionEvent,
    ) -> Option<PubSubConnection> {
        let request = &event.request;
        if !self.origins.admit(request) {
            return None;
        }
        let query = request.query();
        Some(PubSubConnection {
            subscribe: query.get_all("subscribe").map(str::to_owned).collect(),
            publish: query.get("publish").map(str::to_owned),
        })
    }
}

impl ConnectionHandler for PubSubConnection {
    type Server = PubSub;

    fn on_open(&self, ws: &WebSocketConnection<PubSub>, _: OpenEvent) {
        for topic in &self.subscribe {
            ws.subscribe(topic);
        }
    }

    fn on_message(&self, ws: &WebSocketConnection<PubSub>, event: MessageEvent) {
        if let Some(topic) = &self.publish {
            ws.wss().publish(topic, event.data);
        }
    }
}

//! Where a [`WebSocketServer`] meets the [`WebServer`]: the only module that knows both. The
//! web server routes upgrades to endpoints by path
//! ([`super::upgrade::Endpoint`]); the WebSocket server is one.

use std::sync::Arc;

use super::web_server::WebServer;
use super::websocket_server::WebSocketServer;
use super::{ServerHandler, ServerOptions};
use crate::error::Error;

impl<H: ServerHandler> WebSocketServer<H> {
    /// Creates a WebSocket server on `web` and starts it: `handler.on_open` runs before this
    /// returns.
    ///
    /// Fails with [`ErrorKind::NotStarted`](crate::ErrorKind::NotStarted) if the web server is
    /// not running, with [`ErrorKind::PathInUse`](crate::ErrorKind::PathInUse) if another
    /// WebSocket server has the same path (or is the catch-all too) on it, and with
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for `max_connections`
    /// 0.
    pub fn new(web: &WebServer, handler: H, options: ServerOptions) -> Result<Self, Error> {
        let wss = WebSocketServer::create(handler, options, web.runtime().clone())?;
        let endpoint = wss.endpoint();
        let path = wss.path().map(str::to_owned);
        web.inner().register(path.clone(), endpoint.clone())?;
        // Weak both ways: the web server does not keep a terminated endpoint alive, and the
        // endpoint does not keep the web server.
        let (web, endpoint) = (Arc::downgrade(web.inner()), Arc::downgrade(&endpoint));
        wss.on_detach(move || {
            if let Some(web) = web.upgrade() {
                web.unregister(path.as_deref(), &endpoint);
            }
        });
        wss.start();
        Ok(wss)
    }
}

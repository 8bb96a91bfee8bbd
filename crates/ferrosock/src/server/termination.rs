//! The end of a WebSocket server: [`WebSocketServer::terminate`](crate::WebSocketServer::terminate)
//! or its HTTP layer's stop, and the [`Terminating`] handle that awaits it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::websocket_server::{ServerInner, WebSocketServer};
use super::ServerHandler;
use crate::event::ServerTerminateEvent;
use crate::proto::CloseCode;

impl<H: ServerHandler> ServerInner<H> {
    pub(super) fn terminate(
        self: &Arc<Self>,
        code: CloseCode,
        timeout: Option<Duration>,
    ) -> Terminating {
        let handle = Terminating {
            done: self.done.subscribe(),
        };
        if self.terminated.swap(true, Ordering::AcqRel) {
            return handle;
        }
        let detach = self.detach.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(detach) = detach {
            detach();
        }
        // Taken after `terminated` is set: a connection registering from now on sees the flag
        // (both happen under the registry lock), one registered before is in this snapshot.
        let connections: Vec<_> = self.registry.snapshot();
        let immediate = timeout == Some(Duration::ZERO);
        for connection in &connections {
            if immediate {
                connection.abort();
            } else {
                // The termination's timeout governs each close handshake, longer or shorter
                // than the connections' own close timeout.
                connection.core().close(code, "", timeout);
            }
        }
        let inner = self.clone();
        self.runtime.spawn(async move {
            match timeout {
                Some(limit) if !limit.is_zero() => {
                    if tokio::time::timeout(limit, inner.registry.all_ended())
                        .await
                        .is_err()
                    {
                        let stragglers: Vec<_> = inner.registry.snapshot();
                        for connection in stragglers {
                            connection.abort();
                        }
                        inner.registry.all_ended().await;
                    }
                }
                _ => inner.registry.all_ended().await,
            }
            let wss = WebSocketServer::from_inner(inner);
            wss.guard("on_terminate", |h, wss| {
                h.on_terminate(wss, ServerTerminateEvent::new())
            });
            wss.inner().done.send_replace(true);
        });
        handle
    }
}

/// A handle on a server's termination (or a web server's stop). Await it to wait until every
/// connection has ended and `on_terminate` has run; dropping it changes nothing.
#[derive(Clone, Debug)]
pub struct Terminating {
    done: watch::Receiver<bool>,
}

impl Terminating {
    /// Whether the termination is complete.
    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }
}

impl IntoFuture for Terminating {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        Box::pin(async move {
            // An error means the sender is gone: nothing is left to wait for.
            let _ = self.done.wait_for(|done| *done).await;
        })
    }
}

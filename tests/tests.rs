//! ferrosock's integration tests: one binary, one module per area.

#[path = "it/callbacks.rs"]
mod callbacks;
#[path = "it/client.rs"]
mod client;
#[path = "it/closing.rs"]
mod closing;
#[path = "it/doors.rs"]
mod doors;
#[path = "it/http2.rs"]
mod http2;
#[path = "it/http2_client.rs"]
mod http2_client;
#[path = "it/limits.rs"]
mod limits;
#[path = "it/peers.rs"]
mod peers;
#[path = "it/proxies.rs"]
mod proxies;
#[path = "it/reconnect.rs"]
mod reconnect;
#[path = "it/redirects.rs"]
mod redirects;
#[path = "it/robustness.rs"]
mod robustness;
#[path = "it/stats.rs"]
mod stats;
#[path = "it/streams.rs"]
mod streams;
#[path = "it/threads.rs"]
mod threads;
#[path = "it/topics.rs"]
mod topics;
#[path = "it/web.rs"]
mod web;

//! `ferrosock connect`: a terminal client. Lines of stdin go out as messages; messages come
//! back as lines of stdout (binary ones in hex).

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use ferrosock::{
    ClientHandler, ClientOptions, DataType, ErrorEvent, Message, MessageEvent, OpenEvent, Params,
    Reconnect, ReconnectEvent, TerminateEvent, WebSocket,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

use crate::args::ConnectArgs;
use crate::{note, Reported};

/// Prints what arrives, remembers how the connection ended.
struct Terminal {
    headers: Params,
    /// Told of every message: after stdin's end, the quiet period starts again.
    activity: Notify,
    /// Set when this side starts the close (stdin ended): the server's 1000 in answer is no
    /// news, any other code is.
    closing: std::sync::atomic::AtomicBool,
    /// Set once a reconnection was scheduled: the next `on_open` says so.
    reconnecting: std::sync::atomic::AtomicBool,
    /// The last error, which explains a lost connection (1006).
    error: Mutex<Option<String>>,
    ended: Mutex<Option<TerminateEvent>>,
}

impl ClientHandler for Terminal {
    fn on_open(&self, ws: &WebSocket<Self>, _event: OpenEvent) {
        if self.reconnecting.load(std::sync::atomic::Ordering::Acquire) {
            note(format_args!("ferrosock: reconnected to {}", ws.url()));
        }
    }

    fn on_reconnect(&self, _ws: &WebSocket<Self>, event: ReconnectEvent) {
        self.reconnecting
            .store(true, std::sync::atomic::Ordering::Release);
        note(format_args!(
            "ferrosock: reconnecting in {:.1} s (attempt {})",
            event.delay.as_secs_f64(),
            event.attempt
        ));
    }

    fn on_message(&self, ws: &WebSocket<Self>, event: MessageEvent) {
        self.activity.notify_one();
        let mut stdout = std::io::stdout().lock();
        let written = match &event.data {
            Message::Blob(bytes) => writeln!(stdout, "{}", hex(bytes)),
            other => writeln!(stdout, "{}", other.to_text()),
        };
        if written.and_then(|()| stdout.flush()).is_err() {
            // Nobody reads our output any more (a closed pipe): end quietly.
            ws.terminate();
        }
    }

    fn on_error(&self, _ws: &WebSocket<Self>, event: ErrorEvent) {
        if let Some(error) = event.errors.into_iter().next() {
            *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.message);
        }
    }

    fn on_terminate(&self, _ws: &WebSocket<Self>, event: TerminateEvent) {
        let we_closed = self.closing.load(std::sync::atomic::Ordering::Acquire);
        if event.code == 1006 {
            let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).take();
            let cause = error.unwrap_or_else(|| event.reason.clone());
            note(format_args!("ferrosock: connection lost: {cause}"));
        } else if !we_closed || event.code != 1000 {
            note(format_args!(
                "ferrosock: closed by the server: {} {}",
                event.code, event.reason
            ));
        }
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(event);
    }

    fn data_type(&self) -> DataType {
        DataType::Auto
    }

    fn headers(&self) -> Params {
        self.headers.clone()
    }
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connect_timeout.is_finite() && args.connect_timeout > 0.0,
        "--connect-timeout must be a positive number of seconds"
    );
    let limits = ferrosock::Limits::default()
        .max_message_size(args.max_message_size)
        .max_frame_size(args.max_message_size);
    let mut options = ClientOptions::default()
        .connect_timeout(Duration::from_secs_f64(args.connect_timeout))
        .limits(limits);
    if let Some(ca) = &args.ca {
        options = options.ca_file(ca).context("--ca")?;
    }
    if args.no_deflate {
        options = options.deflate(ferrosock::PerMessageDeflate::disabled());
    }
    if let Some(proxy) = &args.proxy {
        options = options.proxy(proxy).context("--proxy")?;
    }
    if args.no_proxy {
        options = options.no_proxy();
    }
    if args.reconnect {
        options = options.reconnect(Reconnect::default().max_attempts(args.max_attempts));
    }
    options = options.http2(args.http2);
    let offered = !args.protocols.is_empty();
    options = options.protocols(args.protocols);
    let quiet_period = Duration::from_secs_f64(args.quiet_period);
    let handler = Terminal {
        activity: Notify::new(),
        headers: args
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        closing: Default::default(),
        reconnecting: Default::default(),
        error: Mutex::new(None),
        ended: Mutex::new(None),
    };
    let ws = WebSocket::connect_with(&args.url, handler, options)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    if offered {
        match ws.protocol() {
            Some(protocol) => note(format_args!("ferrosock: subprotocol: {protocol}")),
            None => note(format_args!("ferrosock: subprotocol: none agreed")),
        }
    }

    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    let closed = ws.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => break,
            line = lines.next_segment() => match line.context("reading stdin")? {
                Some(mut line) => {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let sent = if args.binary {
                        ws.send(line)
                    } else {
                        ws.send(String::from_utf8_lossy(&line).into_owned())
                    };
                    if let Err(err) = sent {
                        note(format_args!("ferrosock: cannot send: {err}"));
                    }
                }
                None => {
                    // stdin ended. The replies to the last lines may still be on their way,
                    // and a server may close as soon as it reads our close frame, before it
                    // answers what it read: wait for the server's silence, then close with
                    // 1000 and wait for the server's close.
                    let quiet = until_quiet(&ws.handler().activity, quiet_period, &mut closed);
                    if quiet.await == Lingered::Quiet {
                        ws.handler().closing.store(true, std::sync::atomic::Ordering::Release);
                        ws.terminate();
                        closed.await;
                    }
                    break;
                }
            },
        }
    }
    let ended = ws
        .handler()
        .ended
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match ended {
        Some(event)
            if event.code == 1000 || event.code == 1005 || (3000..=4999).contains(&event.code) =>
        {
            Ok(())
        }
        _ => Err(Reported(1).into()),
    }
}

/// How the wait after the end of stdin ended.
#[derive(Debug, PartialEq, Eq)]
enum Lingered {
    /// No message for the quiet period: time to close.
    Quiet,
    /// The connection closed first.
    Closed,
}

/// Waits until `closed` resolves or no `activity` was signalled for `quiet`: each signal starts
/// the quiet period again.
async fn until_quiet(
    activity: &Notify,
    quiet: Duration,
    closed: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Lingered {
    loop {
        tokio::select! {
            () = &mut *closed => return Lingered::Closed,
            () = activity.notified() => continue,
            () = tokio::time::sleep(quiet) => return Lingered::Quiet,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const QUIET: Duration = Duration::from_millis(500);

    /// Messages keep arriving for a while after stdin's end: the close waits for the quiet
    /// period after the last one (issue #10: a piped run lost its last replies).
    #[tokio::test(start_paused = true)]
    async fn the_quiet_period_starts_again_at_each_message() {
        let activity = std::sync::Arc::new(Notify::new());
        let started = Instant::now();
        let notifier = activity.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                notifier.notify_one();
            }
        });
        let mut never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(
            until_quiet(&activity, QUIET, &mut never).await,
            Lingered::Quiet
        );
        // The last message came at 1.2 s; the quiet period ran from there.
        assert_eq!(started.elapsed(), Duration::from_millis(1200) + QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_closed_after_the_quiet_period() {
        let started = Instant::now();
        let mut never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(
            until_quiet(&Notify::new(), QUIET, &mut never).await,
            Lingered::Quiet
        );
        assert_eq!(started.elapsed(), QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_closes_ends_the_wait_at_once() {
        let started = Instant::now();
        let activity = Notify::new();
        activity.notify_one(); // a message just before the close
        let mut closed = std::pin::pin!(tokio::time::sleep(Duration::from_millis(200)));
        assert_eq!(
            until_quiet(&activity, QUIET, &mut closed).await,
            Lingered::Closed
        );
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }
}

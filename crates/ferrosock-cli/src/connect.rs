//! `ferrosock connect`: a terminal client. Lines of stdin go out as messages; messages come
//! back as lines of stdout (binary ones in hex).

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use ferrosock::{
    ClientHandler, ClientOptions, DataType, ErrorEvent, Message, MessageEvent, Params,
    TerminateEvent, WebSocket,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::ConnectArgs;
use crate::{note, Reported};

/// Prints what arrives, remembers how the connection ended.
struct Terminal {
    headers: Params,
    /// Set when this side starts the close (stdin ended): the server's 1000 in answer is no
    /// news, any other code is.
    closing: std::sync::atomic::AtomicBool,
    /// The last error, which explains a lost connection (1006).
    error: Mutex<Option<String>>,
    ended: Mutex<Option<TerminateEvent>>,
}

impl ClientHandler for Terminal {
    fn on_message(&self, ws: &WebSocket<Self>, event: MessageEvent) {
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
    let mut options =
        ClientOptions::default().connect_timeout(Duration::from_secs_f64(args.connect_timeout));
    if let Some(ca) = &args.ca {
        options = options.ca_file(ca).context("--ca")?;
    }
    if args.no_deflate {
        options = options.deflate(ferrosock::PerMessageDeflate::disabled());
    }
    let handler = Terminal {
        headers: args
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        closing: Default::default(),
        error: Mutex::new(None),
        ended: Mutex::new(None),
    };
    let ws = WebSocket::connect_with(&args.url, handler, options)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;

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
                    // stdin ended: close with 1000 and wait for the server's close.
                    ws.handler().closing.store(true, std::sync::atomic::Ordering::Release);
                    ws.terminate();
                    closed.await;
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

//! Runs every case of an Autobahn TestSuite fuzzingserver against ferrosock's client, echoing
//! each message with its frame type.
//!
//! ```sh
//! kosoku -m fuzzingserver -o reports/autobahn-client 127.0.0.1:9002 &
//! cargo run --release -p ferrosock --example autobahn-client -- ws://127.0.0.1:9002 ferrosock
//! ```
//! The fuzzingserver writes its reports when `updateReports` is called, at the end.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use ferrosock::{
    ClientHandler, ClientOptions, Compress, DataType, Limits, MessageEvent, WebSocket,
};

/// Echoes every message as it came: text as text, binary as binary.
struct Echo;

impl ClientHandler for Echo {
    fn on_message(&self, ws: &WebSocket<Self>, event: MessageEvent) {
        // Compressed whenever permessage-deflate was negotiated, even when that makes a
        // message longer: sections 12 and 13 then exercise the codec on every message.
        // A full budget or a closing socket: the case decides what that means.
        let _ = ws.send_with(event.data, Compress::Always);
    }

    fn data_type(&self) -> DataType {
        DataType::Auto
    }
}

/// Keeps the one message `getCaseCount` sends.
#[derive(Default)]
struct CaseCount(Mutex<Option<String>>);

impl ClientHandler for CaseCount {
    fn on_message(&self, _ws: &WebSocket<Self>, event: MessageEvent) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(event.data.to_text());
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, agent] = args.as_slice() else {
        eprintln!("usage: autobahn-client URL AGENT   (e.g. ws://127.0.0.1:9002 ferrosock)");
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/');
    match run(base, agent).await {
        Ok(count) => {
            println!("autobahn-client: ran {count} cases; reports updated for agent {agent}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("autobahn-client: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(base: &str, agent: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let counter = WebSocket::connect(&format!("{base}/getCaseCount"), CaseCount::default()).await?;
    counter.closed().await;
    let count_text = counter
        .handler()
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let count: usize = count_text
        .ok_or("getCaseCount sent no count")?
        .trim()
        .parse()?;
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        // Section 9 sends messages of up to 16 MiB (the default limit is 1 MiB).
        let limits = Limits::default()
            .max_message_size(16 << 20)
            .max_frame_size(16 << 20)
            .max_outgoing_bytes(16 << 20);
        let options = ClientOptions::default().limits(limits);
        match WebSocket::connect_with(&url, Echo, options).await {
            // Every case ends with a close by one side; the bound only guards against a hang.
            Ok(ws) => {
                if tokio::time::timeout(Duration::from_secs(60), ws.closed())
                    .await
                    .is_err()
                {
                    eprintln!("case {case}: still open after 60 s, dropping it");
                    ws.terminate();
                }
            }
            Err(err) => eprintln!("case {case}: {err}"),
        }
    }
    let reports = WebSocket::connect(&format!("{base}/updateReports?agent={agent}"), ()).await?;
    reports.closed().await;
    Ok(count)
}

//! Command-line arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A WebSocket server and client.
#[derive(Debug, Parser)]
#[command(name = "ferrosock", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Web server with the demo page at / and the WebSocket endpoints /echo, /uppercase, /chat.
    Serve(ServeArgs),
    /// Bare WebSocket echo server on every path (text stays text, binary stays binary).
    Echo(EchoArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Serve the files of this folder (index.html for folders); the demo page stays at / unless
    /// the folder has an index.html.
    #[arg(long = "static", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    pub listen: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options every server command takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Most WebSocket connections open at once per endpoint; more get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = positive)]
    pub max_connections: usize,
    /// Largest message accepted, in bytes; larger ones close the connection with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message_size: usize,
}

fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// Prints a usage error on one line (help and version in full) and picks the exit code.
pub fn report_usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = err.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            crate::note(format_args!("ferrosock: {first} (see ferrosock --help)"));
            ExitCode::from(2)
        }
    }
}

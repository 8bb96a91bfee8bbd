//! The `ferrosock` command: `serve` (web server with WebSocket endpoints and the demo page)
//! and `echo` (a bare echo server for conformance and load tests).

/// mimalloc: fewer bytes per idle connection than glibc's allocator, which keeps the pages
/// of the buffers freed after each opening handshake (docs/PERFORMANCE.md). Built without
/// transparent huge pages (`no_thp`): memory is then returned in 64 KiB pieces rather than
/// 2 MiB ones, and an idle server's resident memory halves (12 MiB to 6.6 MiB). See
/// [`return_freed_memory`] for the rest of its configuration.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod bench;
mod bench_h2;
mod connect;
mod endpoints;
mod metrics;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use ferrosock::{
    Compress, DataType, Limits, PerMessageDeflate, ServerOptions, WebServer, WebServerOptions,
    WebSocketServer,
};

use args::{Cli, Command, CommonArgs, EchoArgs, ServeArgs};

/// What `main` returns for a run that did not go as asked but printed why already.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Reported {}

/// The demo page served at `/` by `ferrosock serve`.
const DEMO_PAGE: &[u8] = include_bytes!("../../../web/index.html");

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return args::report_usage_error(&err),
    };
    let json = match &cli.command {
        Command::Serve(args) => args.common.log_format == "json",
        Command::Echo(args) => args.common.log_format == "json",
        _ => false,
    };
    let logger = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // On a failed write it would report with eprintln!, which panics once stderr is closed.
        .log_internal_errors(false);
    if json {
        // One object per line, the event's fields at its top level beside the message.
        logger
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        logger
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    raise_descriptor_limit();
    return_freed_memory();
    if let Command::Bench(args) = cli.command {
        // The load generator runs on one thread of its own: see bench.rs.
        return match bench::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                note(format_args!("ferrosock: {err:#}"));
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            note(format_args!("ferrosock: cannot start the runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Echo(args) => echo(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<Reported>().is_some() => {
            ExitCode::from(err.downcast_ref::<Reported>().map_or(1, |r| r.0))
        }
        Err(err) => {
            // One line: the error and its causes.
            note(format_args!("ferrosock: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    check_timeouts(&args.common)?;
    let signals = Signals::listen()?;
    let mut options =
        web_options(args.listen, &args.common).asset("/", "text/html; charset=utf-8", DEMO_PAGE);
    if let Some(dir) = &args.static_dir {
        anyhow::ensure!(dir.is_dir(), "--static {}: not a directory", dir.display());
        options = options.static_dir(dir);
    }
    let web = WebServer::start(options).await?;
    let server_options = server_options(&args.common);
    let origins = endpoints::Origins(args.common.allowed_origins.clone());
    let mut servers = Vec::new();
    let mut attach = || -> Result<(), ferrosock::Error> {
        let echo = WebSocketServer::new(
            &web,
            endpoints::Echo {
                compress: Compress::Auto,
                origins: origins.clone(),
            },
            server_options
                .clone()
                .path("/echo")
                .data_type(DataType::Auto),
        )?;
        servers.push(echo.stats_handle());
        let uppercase = WebSocketServer::new(
            &web,
            endpoints::Uppercase {
                origins: origins.clone(),
            },
            server_options.clone().path("/uppercase"),
        )?;
        servers.push(uppercase.stats_handle());
        let spanning = |path: &str, name: &str| -> Result<ServerOptions, ferrosock::Error> {
            let options = server_options.clone().path(path);
            Ok(match args.broker.as_deref() {
                Some(url) if url.starts_with("nats") || url.starts_with("tls") => options.broker(
                    ferrosock::broker::NatsBroker::new(url)?.prefix(format!("ferrosock.{name}")),
                ),
                Some(url) => options.broker(
                    ferrosock::broker::RedisBroker::new(url)?.prefix(format!("ferrosock:{name}:")),
                ),
                None => options,
            })
        };
        let chat = WebSocketServer::new(
            &web,
            endpoints::Chat {
                origins: origins.clone(),
            },
            spanning("/chat", "chat")?,
        )?;
        servers.push(chat.stats_handle());
        let pubsub = WebSocketServer::new(
            &web,
            endpoints::PubSub {
                origins: origins.clone(),
            },
            spanning("/pubsub", "pubsub")?,
        )?;
        servers.push(pubsub.stats_handle());
        Ok(())
    };
    attach().context("cannot attach the WebSocket servers")?;
    let addr = web.local_addr();
    let across = args
        .broker
        .as_deref()
        .map(|url| format!("; /chat and /pubsub across the nodes of {}", redact(url)))
        .unwrap_or_default();
    let metrics = start_metrics(&args.common, servers).await?;
    let shown = metrics.as_ref().map(metrics_line).unwrap_or_default();
    eprintln!(
        "ferrosock serve: http://{addr}/ (WebSocket endpoints ws://{addr}/echo, /uppercase, /chat, /pubsub{across}){shown}"
    );
    signals.stop_on_signal(&web, metrics).await
}

async fn echo(args: EchoArgs) -> anyhow::Result<()> {
    check_timeouts(&args.common)?;
    let signals = Signals::listen()?;
    let web = WebServer::start(web_options(args.listen, &args.common)).await?;
    let echo = endpoints::Echo {
        compress: args.compress,
        origins: endpoints::Origins(args.common.allowed_origins.clone()),
    };
    let wss = WebSocketServer::new(
        &web,
        echo,
        server_options(&args.common)
            .data_type(DataType::Auto)
            .protocols(args.protocols),
    )
    .context("cannot attach the echo server")?;
    let metrics = start_metrics(&args.common, vec![wss.stats_handle()]).await?;
    let shown = metrics.as_ref().map(metrics_line).unwrap_or_default();
    let ws = if web.is_tls() { "wss" } else { "ws" };
    note(format_args!(
        "ferrosock echo: {ws}://{}/{shown}",
        web.local_addr()
    ));
    signals.stop_on_signal(&web, metrics).await
}

/// The metrics listener of `--metrics`, if asked for.
async fn start_metrics(
    common: &CommonArgs,
    servers: Vec<ferrosock::stats::StatsHandle>,
) -> anyhow::Result<Option<metrics::Metrics>> {
    match &common.metrics {
        Some(listen) => Ok(Some(metrics::Metrics::start(listen, servers).await?)),
        None => Ok(None),
    }
}

/// The end of the ready line when `--metrics` is on.
fn metrics_line(metrics: &metrics::Metrics) -> String {
    let addr = metrics.local_addr();
    format!("; metrics http://{addr}/metrics, status page http://{addr}/status")
}

/// A broker URL without its password, for the log.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A client is pinged after `--keepalive` of silence so that a live one answers before
/// `--idle-timeout`: the timeout must leave it that chance.
fn check_timeouts(common: &CommonArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        common.idle_timeout > common.keepalive,
        "--idle-timeout ({} s) must be longer than --keepalive ({} s)",
        common.idle_timeout,
        common.keepalive
    );
    Ok(())
}

fn web_options(listen: String, common: &CommonArgs) -> WebServerOptions {
    let options = WebServerOptions::default()
        .listen(listen)
        .handshake_timeout(Duration::from_secs_f64(common.handshake_timeout))
        .shutdown_timeout(Duration::from_secs_f64(common.shutdown_timeout))
        .threads(common.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }));
    match (&common.tls_cert, &common.tls_key) {
        (Some(cert), Some(key)) => options.tls(cert, key),
        _ => options,
    }
}

fn server_options(common: &CommonArgs) -> ServerOptions {
    ferrosock::memory::set_max_queued_bytes(common.max_outgoing_total);
    let limits = Limits::default()
        .max_message_size(common.max_message_size)
        .max_frame_size(common.max_message_size)
        .max_outgoing_bytes(common.max_outgoing_bytes)
        .keepalive_interval(Some(Duration::from_secs_f64(common.keepalive)))
        .idle_timeout(Some(Duration::from_secs_f64(common.idle_timeout)));
    let deflate = PerMessageDeflate::default()
        .enabled(!common.no_deflate)
        .threshold(common.deflate_threshold);
    ServerOptions::default()
        .max_connections(common.max_connections)
        .limits(limits)
        .deflate(deflate)
}

/// Gives the memory that connections freed back to the system within a second.
///
/// mimalloc purges freed memory only when the thread that owns it allocates again, so the
/// megabytes a stalled reader's queue held, freed when it is cut, stayed resident while the
/// server's threads were idle (measured: 18 MiB still there 20 s later). A thread of its own
/// asks mimalloc to collect once a second: a no-op on an idle heap, and measured without
/// effect on echo throughput (docs/PERFORMANCE.md).
fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("ferrosock-memory".to_owned())
        .spawn(|| {
            // mimalloc collects only from a thread whose heap is initialized, which its first
            // allocation does.
            drop(std::hint::black_box(Box::new(0u64)));
            loop {
                std::thread::sleep(Duration::from_secs(1));
                // SAFETY: `mi_collect` takes no pointer and may be called from any thread at
                // any time; it only frees and purges memory that no live allocation uses.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        });
    if let Err(err) = spawned {
        tracing::warn!("cannot start the memory collector thread: {err}");
    }
}

/// Every connection holds a file descriptor, and a common soft limit is 1,024: lift the soft
/// limit to the hard one (as nginx and Go's runtime do), so that `--max-connections` and
/// `bench --idle` are not capped by a default the operator never chose.
fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(err) => tracing::warn!("cannot raise the open file limit: {err}"),
    }
}

/// Writes a line to stderr. Unlike `eprintln!`, a closed stderr (the reader went away) is not a
/// reason to crash a server: the line is dropped.
pub fn note(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// SIGINT and SIGTERM, listened for from the start: a signal that arrives as soon as the
/// ready line is printed (or before) stops the server in good order instead of killing it.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Serves until SIGINT or SIGTERM, then stops: every WebSocket client gets close 1001,
    /// the status pages too.
    async fn stop_on_signal(
        mut self,
        web: &WebServer,
        metrics: Option<metrics::Metrics>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        note(format_args!("ferrosock: stopping"));
        match metrics {
            Some(metrics) => tokio::join!(web.stop(), metrics.stop()).0,
            None => web.stop().await,
        }
        Ok(())
    }
}

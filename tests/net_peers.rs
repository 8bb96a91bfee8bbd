//! Third-party proxies and HTTP/2 servers on the loopback, for the tests of the client's proxy
//! and HTTP/2 support: tinyproxy (an HTTP CONNECT proxy), microsocks (a SOCKS5 proxy), stunnel
//! (TLS in front of a proxy: an `https://` proxy) and Hypercorn (WebSockets over HTTP/2, RFC
//! 8441, with tests/interop/hypercorn_echo.py).
//!
//! Each server is a child process, killed when its value is dropped, with its config and its
//! logs in a temp folder of its own (`ferrosock-<what>-<pid>-<n>`), removed on drop. Each
//! listens on 127.0.0.1 on a port the kernel chose, never on a port probed then reused: see
//! [`Tinyproxy::start_with`] for the one program that cannot bind port 0. Each `start` waits
//! (up to [`TIMEOUT`]) until the server listens, returns `None` when the program is not
//! installed (outside CI; under `CI=true` that is a failure, see [`peer_installed`]), and
//! panics, showing the server's output, when it does not start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{listening_port_now, peer_installed, repo_root, TestPki, TIMEOUT};

/// The file in a server's folder that gets its standard output and error.
const OUTPUT: &str = "output.log";

/// A server process and its temp folder: the process is killed (and reaped), then the folder
/// removed, on drop.
struct Running {
    what: &'static str,
    child: Child,
    dir: PathBuf,
}

impl Running {
    /// A new temp folder for `what`, empty.
    fn folder(what: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ferrosock-{what}-{}-{n}", std::process::id()));
        // A leftover of an earlier process that had the same pid.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
        dir
    }

    /// Starts `command` in the background, its standard output and error going to
    /// [`OUTPUT`] in `dir`; the folder is removed if it does not start.
    fn spawn(what: &'static str, dir: PathBuf, mut command: Command) -> Running {
        let output = std::fs::File::create(dir.join(OUTPUT)).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        match command.spawn() {
            Ok(child) => Running { what, child, dir },
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{what} does not start ({command:?}): {err}");
            }
        }
    }

    /// The text of a file in the server's folder ("" if there is none yet).
    fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Every file of the server's folder, for a failure message.
    fn report(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| format!("--- {name}\n{}", self.text(name)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `ready` until it gives a value; panics, with the server's files, if the process
    /// exits first or after [`TIMEOUT`].
    fn wait_for<T>(&mut self, what_for: &str, mut ready: impl FnMut(&Running) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(value) = ready(self) {
                return value;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what_for}:\n{}",
                    self.what,
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not {what_for} after {TIMEOUT:?}:\n{}",
                self.what,
                self.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process listens on a TCP port, and returns it.
    fn wait_listening(&mut self) -> u16 {
        self.wait_for("listening", |running| {
            listening_port_now(running.child.id())
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Panics unless `word` is one word, as the config files and command lines here need.
fn one_word(what: &str, word: &str) {
    assert!(
        !word.is_empty() && !word.contains(|c: char| c.is_whitespace() || c == '"' || c == '#'),
        "the {what} {word:?} must be one word, without quotes or #"
    );
}

// ---------------------------------------------------------------------------------------------
// tinyproxy

/// How a [`Tinyproxy`] behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct TinyproxyOptions<'a> {
    /// User and password it requires (`BasicAuth user password`): a request without
    /// `Proxy-Authorization` gets `407 Proxy Authentication Required` with
    /// `Proxy-Authenticate: Basic realm="Tinyproxy"`; one with wrong credentials gets
    /// `401 Unauthorized` (with `WWW-Authenticate`, not a 407). Each one word.
    pub auth: Option<(&'a str, &'a str)>,
    /// Refuses every CONNECT, whatever the port, with `403 Access violation` (`ConnectPort 0`);
    /// its log says "Refused CONNECT method on port N".
    pub refuse_connect: bool,
}

/// tinyproxy, an HTTP proxy, on 127.0.0.1: CONNECT to any port (its config has no
/// `ConnectPort` line: 443 and 563 only are in Debian's default config, not here). It answers
/// a CONNECT with `HTTP/1.0 200 Connection established`. Killed on drop.
pub struct Tinyproxy {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    running: Running,
}

impl Tinyproxy {
    /// A proxy for any CONNECT, with Basic authentication when `auth` (user, password) is
    /// given; `None` when tinyproxy is not installed (outside CI).
    pub fn start(auth: Option<(&str, &str)>) -> Option<Tinyproxy> {
        Tinyproxy::start_with(TinyproxyOptions {
            auth,
            ..TinyproxyOptions::default()
        })
    }

    /// A proxy as `options` say; `None` when tinyproxy is not installed (outside CI).
    ///
    /// tinyproxy cannot listen on port 0 (it exits: "You MUST set a Port in the config
    /// file"). So the port is reserved first, race-free: a socket with `SO_REUSEADDR` is
    /// bound to 127.0.0.1 port 0, never listening, and held while tinyproxy (which sets
    /// `SO_REUSEADDR` too) binds and listens on the same port, which Linux allows since the
    /// holder does not listen. Meanwhile the kernel gives that port to no other bind to port 0
    /// and to no outgoing connection; it is released once tinyproxy listens on it.
    pub fn start_with(options: TinyproxyOptions<'_>) -> Option<Tinyproxy> {
        let program = Path::new("/usr/bin/tinyproxy");
        if !peer_installed(program, "tinyproxy") {
            return None;
        }
        let reservation = tokio::net::TcpSocket::new_v4()
            .and_then(|socket| {
                socket.set_reuseaddr(true)?;
                socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
                Ok(socket)
            })
            .expect("a loopback port for tinyproxy");
        let port = reservation.local_addr().unwrap().port();
        let dir = Running::folder("tinyproxy");
        let log = dir.join("tinyproxy.log");
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 100\n\
             LogFile \"{}\"\nLogLevel Info\n",
            log.display()
        );
        if let Some((user, password)) = options.auth {
            one_word("tinyproxy user", user);
            one_word("tinyproxy password", password);
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        if options.refuse_connect {
            // "To disable CONNECT altogether, include a single ConnectPort line with a value
            // of 0" (tinyproxy.conf(5)).
            config.push_str("ConnectPort 0\n");
        }
        let config_file = dir.join("tinyproxy.conf");
        std::fs::write(&config_file, config).unwrap();
        let mut command = Command::new(program);
        command.arg("-d").arg("-c").arg(&config_file);
        let mut running = Running::spawn("tinyproxy", dir, command);
        running.wait_for(&format!("listening on port {port}"), |running| {
            (listening_port_now(running.child.id()) == Some(port)).then_some(())
        });
        drop(reservation);
        Some(Tinyproxy { port, running })
    }

    /// tinyproxy's log so far (level Info). A CONNECT that went through shows as
    /// `Request (file descriptor N): CONNECT 127.0.0.1:PORT HTTP/1.1` then
    /// `Established connection to host "127.0.0.1" using file descriptor M.` (the host
    /// without the port), both written before the client gets its 200.
    pub fn log(&self) -> String {
        self.running.text("tinyproxy.log")
    }
}

// ---------------------------------------------------------------------------------------------
// microsocks

/// microsocks, a SOCKS5 proxy, on 127.0.0.1. Killed on drop.
pub struct Microsocks {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    running: Running,
}

impl Microsocks {
    /// A SOCKS5 proxy, requiring user and password (RFC 1929) when `auth` is given (then a
    /// client offering no authentication gets method 0xFF, one with a wrong password the
    /// status 0x02, then EOF); `None` when microsocks is not installed (outside CI).
    pub fn start(auth: Option<(&str, &str)>) -> Option<Microsocks> {
        let program = Path::new("/usr/bin/microsocks");
        if !peer_installed(program, "microsocks") {
            return None;
        }
        let mut command = Command::new(program);
        // Port 0: the kernel chooses; microsocks does not say which, /proc does.
        command.args(["-i", "127.0.0.1", "-p", "0"]);
        if let Some((user, password)) = auth {
            one_word("microsocks user", user);
            one_word("microsocks password", password);
            command.arg("-u").arg(user).arg("-P").arg(password);
        }
        let mut running = Running::spawn("microsocks", Running::folder("microsocks"), command);
        let port = running.wait_listening();
        Some(Microsocks { port, running })
    }

    /// What microsocks printed: one line per connection it made for a client,
    /// `client[FD] 127.0.0.1: connected to HOST:PORT` (HOST as the client gave it, address
    /// or name), written before the client gets its reply.
    pub fn log(&self) -> String {
        self.running.text(OUTPUT)
    }
}

// ---------------------------------------------------------------------------------------------
// stunnel

/// stunnel, a TLS server on 127.0.0.1 in front of a plain TCP server on 127.0.0.1 (for an
/// `https://` proxy: TLS to stunnel, then tinyproxy behind it). Killed on drop.
pub struct Stunnel {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    running: Running,
}

impl Stunnel {
    /// TLS with `pki`'s certificate for localhost (a client trusts `pki.ca`), each connection
    /// forwarded to 127.0.0.1:`to_port`; `None` when stunnel is not installed (outside CI).
    pub fn start(pki: &TestPki, to_port: u16) -> Option<Stunnel> {
        let program = Path::new("/usr/bin/stunnel4");
        if !peer_installed(program, "stunnel") {
            return None;
        }
        let dir = Running::folder("stunnel");
        // Port 0: stunnel binds it as it is; the port is read from /proc.
        let config = format!(
            "foreground = yes\npid =\nsyslog = no\ndebug = notice\n\n\
             [tls]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:{to_port}\ncert = {}\nkey = {}\n",
            pki.cert.display(),
            pki.key.display()
        );
        let config_file = dir.join("stunnel.conf");
        std::fs::write(&config_file, config).unwrap();
        let mut command = Command::new(program);
        command.arg(&config_file);
        let mut running = Running::spawn("stunnel", dir, command);
        let port = running.wait_listening();
        Some(Stunnel { port, running })
    }

    /// stunnel's log so far (level notice): `Service [tls] accepted connection from ...`
    /// for each client, among others.
    pub fn log(&self) -> String {
        self.running.text(OUTPUT)
    }
}

// ---------------------------------------------------------------------------------------------
// Hypercorn

/// Hypercorn, a Python ASGI server, on 127.0.0.1, serving tests/interop/hypercorn_echo.py:
/// WebSockets over HTTP/1.1 and over HTTP/2 (RFC 8441: its SETTINGS carry
/// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`, over TLS and over h2c alike), each message echoed,
/// except the text "request", answered with the HTTP version of the WebSocket's request ("2"
/// or "1.1"). The first subprotocol a client offers is accepted. Killed on drop.
pub struct Hypercorn {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    running: Running,
}

impl Hypercorn {
    /// With `pki`, TLS with its certificate for localhost (a client trusts `pki.ca`), HTTP/2
    /// by ALPN `h2` (or HTTP/1.1 by ALPN `http/1.1`); without, plain text: HTTP/1.1, or
    /// HTTP/2 by prior knowledge (h2c: a connection that starts with the HTTP/2 preface).
    /// `None` when Hypercorn is not installed in .peers/py (outside CI).
    pub fn start(pki: Option<&TestPki>) -> Option<Hypercorn> {
        let root = repo_root();
        let bin = root.join(".peers/py/bin");
        if !peer_installed(&bin.join("hypercorn"), "Hypercorn") {
            return None;
        }
        let mut command = Command::new(bin.join("python"));
        // One process (--workers 0: no worker processes that would outlive a kill).
        command.args(["-m", "hypercorn", "--bind", "127.0.0.1:0", "--workers", "0"]);
        command.args(["--error-logfile", "-", "--access-logfile", "-"]);
        if let Some(pki) = pki {
            command
                .arg("--certfile")
                .arg(&pki.cert)
                .arg("--keyfile")
                .arg(&pki.key);
        }
        command
            .arg("hypercorn_echo:app")
            .current_dir(root.join("tests/interop"))
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut running = Running::spawn("Hypercorn", Running::folder("hypercorn"), command);
        // Once serving, it prints the port it got: "... [INFO] Running on
        // http://127.0.0.1:PORT (CTRL + C to quit)" (https:// with TLS).
        let scheme = if pki.is_some() { "https" } else { "http" };
        let running_on = format!("Running on {scheme}://127.0.0.1:");
        let port = running.wait_for("serving", |running| {
            let output = running.text(OUTPUT);
            let (_, after) = output.split_once(&running_on)?;
            // The space after the port: the whole number is there.
            after.split_once(' ')?.0.parse().ok()
        });
        Some(Hypercorn { port, running })
    }

    /// What Hypercorn printed: its start, then a line per request, e.g.
    /// `... [INFO] 127.0.0.1:43594 - - [...] "GET /path 2" 200 - "-" "-"` for a WebSocket over
    /// HTTP/2 (an extended CONNECT shows as GET, its answer as 200) and `"GET /path 1.1" 101`
    /// over HTTP/1.1. A line is written just after the answer is sent: a test that reads it
    /// right after its handshake may have to wait for it.
    pub fn log(&self) -> String {
        self.running.text(OUTPUT)
    }
}

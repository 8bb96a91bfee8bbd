//! The `ferrosock` command's interface: help, one-line errors, serving, stopping on a signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ferrosock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrosock"))
        .args(args)
        .output()
        .expect("ferrosock runs")
}

/// Starts `ferrosock ARGS --listen 127.0.0.1:0`-like and returns it once it printed its address.
fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrosock"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferrosock starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .find(|line| line.as_ref().map_or(true, |l| l.starts_with("ferrosock ")))
        .expect("a ready line")
        .unwrap();
    // Keep reading, as a terminal would, so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    // "ferrosock serve: http://127.0.0.1:PORT/ ..." or "ferrosock echo: ws://127.0.0.1:PORT/"
    let addr = first
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    (child, addr)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_describes_each_command() {
    for (args, words) in [
        (&["--help"][..], &["serve", "echo"][..]),
        (
            &["serve", "--help"][..],
            &["--listen", "--static", "--max-connections"][..],
        ),
        (
            &["echo", "--help"][..],
            &["--listen", "--max-message-size"][..],
        ),
    ] {
        let output = ferrosock(args);
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        for word in words {
            assert!(help.contains(word), "{args:?} help lacks {word}: {help}");
        }
    }
}

#[test]
fn default_addresses() {
    for (command, addr) in [("serve", "127.0.0.1:8080"), ("echo", "127.0.0.1:9001")] {
        let output = ferrosock(&[command, "--help"]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains(&format!("[default: {addr}]")),
            "{command}: {help}"
        );
    }
}

#[test]
fn a_bad_flag_is_one_line_and_a_failure() {
    for args in [
        &["serve", "--bogus"][..],
        &["serve", "--max-connections", "0"][..],
        &["echo", "--max-message-size", "lots"][..],
        &["frobnicate"][..],
        &[][..],
    ] {
        let output = ferrosock(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        if !args.is_empty() {
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.starts_with("ferrosock: "), "{stderr}");
        }
    }
}

#[test]
fn an_address_in_use_is_one_line_and_a_failure() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for command in ["serve", "echo"] {
        let output = ferrosock(&[command, "--listen", &addr]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = stderr_of(&output);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("ferrosock:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(&addr) && errors[0].contains("in use"),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_static_folder_is_reported() {
    let output = ferrosock(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--static",
        "/no/such/folder",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_of(&output).contains("--static /no/such/folder: not a directory"));
}

#[test]
fn serve_ships_the_demo_page_and_stops_on_sigterm() {
    let (mut child, addr) = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let page = http_get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("text/html") && page.contains("new WebSocket("),
        "{page}"
    );
    assert!(http_get(&addr, "/nothing-here").starts_with("HTTP/1.1 404"));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_closed_stderr_does_not_crash_the_server() {
    // Logging on (the default level) so that the server writes while shutting down.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrosock"))
        .args(["echo", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    // The reader is gone: every later line the server writes hits a closed pipe.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_static_folder_with_its_own_index_replaces_the_demo_page() {
    let dir = std::env::temp_dir().join(format!("ferrosock-cli-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>mine</p>").unwrap();
    let (mut child, addr) = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--static",
        dir.to_str().unwrap(),
    ]);
    assert!(http_get(&addr, "/").ends_with("<p>mine</p>"));
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

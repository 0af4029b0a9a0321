//! The built `sluice-gateway` binary: `serve` refuses a worker URL with credentials
//! (a non-zero exit, the password never printed), and on SIGTERM lets a stream in
//! flight finish and exits 0.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_gateway::mock::MockWorker;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-gateway");
const DEADLINE: Duration = Duration::from_secs(20);

/// The child, killed if the test ends before it exited.
struct Gateway(Option<Child>);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn credentials_in_an_upstream_url_are_refused_with_a_non_zero_exit() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://admin:hunter2@127.0.0.1:8000",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run the binary");
    assert!(!out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("carries credentials"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_stream_in_flight_finish_and_exits_0() {
    let worker = MockWorker::start("w", Duration::from_millis(20))
        .await
        .expect("mock");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(format!("w=http://{}", worker.addr))
        .args(["--shutdown-grace", "30s"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let mut gateway = Gateway(Some(child));
    // The log lines, read on a thread of their own; the first says where it listens.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(plain(&line)).is_err() {
                break;
            }
        }
    });
    let addr: SocketAddr = tokio::time::timeout(DEADLINE, async {
        loop {
            let line = lines
                .recv()
                .await
                .expect("the gateway says where it listens");
            if let Some(at) = line.find("listen=") {
                let addr = line[at + "listen=".len()..].split_whitespace().next();
                return addr.expect("an address").parse().expect("a socket address");
            }
        }
    })
    .await
    .expect("listening in time");

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let send = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"stream":true,"max_tokens":20}"#)
        .send();
    let mut response = tokio::time::timeout(DEADLINE, send)
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let mut text = Vec::new();
    while !text.windows(2).any(|w| w == b"\n\n") {
        let chunk = tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .expect("a token in time")
            .expect("the stream")
            .expect("a token");
        text.extend_from_slice(&chunk);
    }

    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    loop {
        match tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .expect("the rest in time")
        {
            Ok(Some(chunk)) => text.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!("the stream was cut: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert_eq!(text.matches("\"delta\"").count(), 20, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    let mut child = gateway.0.take().expect("the child");
    let waited =
        tokio::time::timeout(DEADLINE, tokio::task::spawn_blocking(move || child.wait())).await;
    let Ok(waited) = waited else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("the gateway did not exit within {DEADLINE:?} of SIGTERM");
    };
    let status = waited.expect("join").expect("wait");
    assert!(status.success(), "{status:?}");
    // The shutdown was logged, and the stream's verdict with it (the reader thread
    // ends at the pipe's end, which closes the channel).
    let mut logs = Vec::new();
    while let Some(line) = tokio::time::timeout(DEADLINE, lines.recv())
        .await
        .expect("the logs' end")
    {
        logs.push(line);
    }
    let logs = logs.join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        logs.contains("verdict=\"success\"") || logs.contains("verdict=success"),
        "{logs}"
    );
    assert!(
        logs.contains("cause=\"done\"") || logs.contains("cause=done"),
        "{logs}"
    );
}

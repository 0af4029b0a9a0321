//! Clients that hold connections without sending requests, on loopback: `serve`
//! closes a connection whose request head does not come within
//! `--client-header-timeout` (nothing sent, half a head, or a kept-alive connection
//! left idle), and a stream longer than that timeout is not cut by it. The timeout is
//! 100 ms, set by the flag; every wait in a test is on the gateway, bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use common::{post as post_chat, read_all, serve_router, within};
use futures_util::stream;
use sluice_gateway::serve::{self, ServeArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_millis(100);

/// `serve` with `--client-header-timeout 100ms` in front of `worker`.
async fn gateway(worker: SocketAddr) -> serve::Serving {
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        client_header_timeout: TIMEOUT,
        ..ServeArgs::new(vec![format!("w=http://{worker}")])
    };
    serve::start(&args).await.expect("serve")
}

/// Reads `socket` until the gateway closes it; what it read.
async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within("the gateway closing", socket.read(&mut buf)).await {
            Ok(0) | Err(_) => return read,
            Ok(n) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// A worker that streams eight tokens 50 ms apart, then `[DONE]`: 400 ms, four times
/// the client header timeout.
async fn slow_worker() -> SocketAddr {
    let answer = || async {
        let events = stream::unfold(0, |i| async move {
            match i {
                0..8 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let token = format!(
                        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{i}\"}}}}]}}\n\n"
                    );
                    Some((Ok::<_, std::io::Error>(Bytes::from(token)), i + 1))
                }
                8 => Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), i + 1)),
                _ => None,
            }
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(events),
        )
            .into_response()
    };
    serve_router(Router::new().route("/v1/chat/completions", post(answer))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_no_head_is_disconnected_at_the_timeout() {
    let serving = gateway(slow_worker().await).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(serving.addr).await.expect("connect");
    let mut half = TcpStream::connect(serving.addr).await.expect("connect");
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n")
        .await
        .expect("write");
    assert!(
        read_to_close(&mut silent).await.is_empty(),
        "nothing sent back"
    );
    read_to_close(&mut half).await;
    assert!(started.elapsed() >= TIMEOUT, "not before the timeout");
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_left_idle_is_closed_at_the_timeout() {
    let serving = gateway(slow_worker().await).await;
    let mut socket = TcpStream::connect(serving.addr).await.expect("connect");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .expect("write");
    let answered = Instant::now();
    let read = read_to_close(&mut socket).await;
    assert!(
        read.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&read)
    );
    assert!(answered.elapsed() >= TIMEOUT, "not before the timeout");
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_timeout_is_not_cut_by_it() {
    let serving = gateway(slow_worker().await).await;
    let started = Instant::now();
    let response = post_chat(serving.addr, Some("long"), r#"{"stream":true}"#).await;
    assert_eq!(response.status(), 200);
    let (text, clean) = read_all(response).await;
    assert!(clean, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("content").count(), 8, "{text}");
    assert!(
        started.elapsed() >= 4 * TIMEOUT,
        "the stream outlived the timeout"
    );
    drop(serving);
}

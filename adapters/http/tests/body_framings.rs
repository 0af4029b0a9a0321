//! `TrackedBody` with the framings beside SSE: NDJSON (Ollama) and the AWS event
//! stream (Bedrock), each judged from data frames split anywhere, and the last rules
//! given winning.

use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use sluice::eventstream::EventStreamRules;
use sluice::ndjson::NdjsonRules;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Verdict};
use sluice_http::TrackedBody;

/// The worker's body: data frames, then its end.
type Upstream = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;
type Rec = Box<dyn FnOnce(Outcome)>;

/// A body of these data frames, then its end.
fn body(frames: Vec<Vec<u8>>) -> Upstream {
    let frames: Vec<_> = frames
        .into_iter()
        .map(|f| Ok(Frame::data(Bytes::from(f))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

/// Drains a tracked body of `frames`, its rules set by `rules`, and returns its one
/// outcome.
fn outcome(
    frames: Vec<Vec<u8>>,
    rules: impl FnOnce(TrackedBody<Upstream, Rec>) -> TrackedBody<Upstream, Rec>,
) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let recorder: Rec = Box::new(move |o: Outcome| {
        let _ = tx.send(o);
    });
    let tracked = rules(TrackedBody::new(body(frames), recorder));
    futures_executor_block_on(tracked.collect()).expect("no error frame");
    let outcome = rx.recv().expect("one outcome");
    assert!(rx.try_recv().is_err(), "exactly one outcome");
    outcome
}

fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// CRC-32 (zlib's), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A Bedrock event frame: `:event-type` and `:message-type` headers, a payload.
fn frame(message_type: &str, event_type: &str, payload: &str) -> Vec<u8> {
    let mut head = Vec::new();
    let kind = if message_type == "event" {
        ":event-type"
    } else {
        ":exception-type"
    };
    for (name, value) in [(kind, event_type), (":message-type", message_type)] {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = (16 + head.len() + payload.len()) as u32;
    let mut out = total.to_be_bytes().to_vec();
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

/// Every 2-way split of `bytes` into data frames (and the whole).
fn splits(bytes: &[u8]) -> impl Iterator<Item = Vec<Vec<u8>>> + '_ {
    (0..=bytes.len()).map(|at| vec![bytes[..at].to_vec(), bytes[at..].to_vec()])
}

#[test]
fn bedrock_frames_split_anywhere() {
    let mut clean = frame("event", "messageStart", r#"{"role":"assistant"}"#);
    clean.extend(frame(
        "event",
        "contentBlockDelta",
        r#"{"delta":{"text":"Hi"}}"#,
    ));
    clean.extend(frame(
        "event",
        "messageStop",
        r#"{"stopReason":"end_turn"}"#,
    ));
    let mut failed = frame("event", "messageStart", r#"{"role":"assistant"}"#);
    failed.extend(frame(
        "exception",
        "throttlingException",
        r#"{"message":"slow down"}"#,
    ));
    for (bytes, want) in [
        (clean.clone(), (Verdict::Success, Cause::Done)),
        (failed, (Verdict::Failure, Cause::ErrorEvent)),
        (
            clean[..clean.len() - 3].to_vec(),
            (Verdict::Failure, Cause::Truncated),
        ),
    ] {
        for frames in splits(&bytes) {
            let o = outcome(frames, |b| b.with_eventstream(EventStreamRules::bedrock()));
            assert_eq!((o.verdict, o.cause), want);
        }
    }
}

#[test]
fn ollama_lines_split_anywhere() {
    let clean = b"{\"response\":\"Hi\",\"done\":false}\n{\"response\":\"\",\"done\":true}\n";
    let failed = b"{\"response\":\"Hi\",\"done\":false}\n{\"error\":\"boom\"}\n";
    for (bytes, want) in [
        (&clean[..], (Verdict::Success, Cause::Done)),
        (&failed[..], (Verdict::Failure, Cause::ErrorEvent)),
        (&clean[..33], (Verdict::Failure, Cause::Truncated)),
    ] {
        for frames in splits(bytes) {
            let o = outcome(frames, |b| b.with_ndjson(NdjsonRules::ollama()));
            assert_eq!((o.verdict, o.cause), want);
        }
    }
}

#[test]
fn the_last_rules_given_win() {
    let lines = b"{\"done\":true}\n".to_vec();
    // SSE rules, then NDJSON: the done line counts.
    let o = outcome(vec![lines.clone()], |b| {
        b.with_sse(SseRules::openai_chat())
            .with_ndjson(NdjsonRules::ollama())
    });
    assert_eq!((o.verdict, o.cause), (Verdict::Success, Cause::Done));
    // NDJSON, then SSE: no `[DONE]`, cut short.
    let o = outcome(vec![lines], |b| {
        b.with_ndjson(NdjsonRules::ollama())
            .with_sse(SseRules::openai_chat())
    });
    assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::Truncated));
}

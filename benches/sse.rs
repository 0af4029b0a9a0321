//! Throughput of the SSE scanner, with its baselines measured in the same run.
//!
//! `cargo bench --bench sse`. Two groups, both in bytes per second:
//!
//! * `sse_chat_1mib_64b_chunks`: a realistic ~1 MiB OpenAI Chat Completions stream fed
//!   in 64-byte chunks to the scanner (and to the scanner without its error-object
//!   walk, to show what that walk costs, and on the same stream with an `error`
//!   member nested in every chunk object); to a `memchr` newline count (the practical
//!   limit for anything that looks at every line end); to a per-chunk substring search
//!   for `[DONE]` (fast, and wrong: it matches inside JSON and misses a split
//!   pattern); and to `eventsource-stream`, a full SSE parser that builds every event.
//! * `sse_chat_1mib_event_chunks`: the same stream in one chunk per event, as engines
//!   write it, to the scanner and to the newline count.
//! * `sse_small_event_chunks`: the load check's stream (64 short token events, one
//!   per chunk, then `data: [DONE]`), a fresh scanner per stream as a gateway makes
//!   one: the scanner's cost per event where it is highest against the bytes, and the
//!   newline count over the same chunks.
//! * `sse_8mib_line`: one 8 MiB `data` line fed whole and in 1,024 chunks: the cost
//!   of splitting; and the same for a bare `memchr2` line-end search, which is what
//!   the scanner runs inside a value.

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::pin;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use sluice::sse::{Signal, SseRules, SseScanner};

const CHUNK: usize = 64;
const MIB: usize = 1 << 20;

/// A Chat Completions stream of about `size` bytes: one chunk object per token, each
/// followed by a blank line, and `data: [DONE]` at the end.
fn chat_stream(size: usize) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        "Hello",
        ",",
        " world",
        " the",
        " stream",
        "ing",
        " of",
        " tokens",
        "\\n\\n",
        " \\\"quoted\\\"",
        " caf\u{e9}",
        " 42",
        ".",
        " [DONE]",
        " data:",
        " async",
        " fn",
        " main",
        "()",
    ];
    const TAIL: &[u8] = b"data: [DONE]\n\n";
    let mut out = Vec::with_capacity(size + 512);
    for i in 0.. {
        let line = format!(
            "data: {{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\
             \"created\":{},\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\",\
             \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
            1_741_569_952 + i / 40,
            TOKENS[(i * 7 + 3) % TOKENS.len()],
        );
        if out.len() + line.len() + TAIL.len() > size {
            break;
        }
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(TAIL);
    out
}

fn scan(chunks: &[&[u8]]) -> Option<Signal> {
    scan_with(SseRules::openai_chat(), chunks)
}

fn scan_with(rules: SseRules, chunks: &[&[u8]]) -> Option<Signal> {
    let mut scanner = SseScanner::new(rules);
    let mut signal = None;
    for chunk in chunks {
        signal = signal.max(scanner.feed(black_box(chunk)));
    }
    signal
}

/// `scan` for the event-chunk group, never inlined: the function to count with
/// callgrind (`--toggle-collect=sse::scan_events`; instructions per event are its
/// total over its calls and the events per call).
#[inline(never)]
fn scan_events(events: &[&[u8]]) -> Option<Signal> {
    scan(events)
}

fn count_newlines(chunks: &[&[u8]]) -> usize {
    chunks
        .iter()
        .map(|chunk| memchr::memchr_iter(b'\n', black_box(chunk)).count())
        .sum()
}

/// The first CR or LF of every chunk, as the scanner looks for it inside a value.
fn find_line_ends(chunks: &[&[u8]]) -> usize {
    chunks
        .iter()
        .map(|chunk| memchr::memchr2(b'\r', b'\n', black_box(chunk)).unwrap_or(0))
        .sum()
}

fn naive_done(finder: &memchr::memmem::Finder<'_>, chunks: &[&[u8]]) -> bool {
    let mut done = false;
    for chunk in chunks {
        done |= finder.find(black_box(chunk)).is_some();
    }
    done
}

/// Runs `eventsource-stream` over the chunks; true if an event's data is `[DONE]`.
fn eventsource_done(chunks: Vec<Bytes>) -> bool {
    futures_executor::block_on(async {
        let mut events = pin!(
            futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)).eventsource()
        );
        let mut done = false;
        while let Some(event) = events.next().await {
            if let Ok(event) = event {
                done |= event.data == "[DONE]";
            }
        }
        done
    })
}

fn chat(c: &mut Criterion) {
    let input = chat_stream(MIB);
    let chunks: Vec<&[u8]> = input.chunks(CHUNK).collect();
    let owned: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
    let finder = memchr::memmem::Finder::new(b"[DONE]");

    let nested = String::from_utf8(input.clone())
        .expect("UTF-8")
        .replace(
            r#""logprobs":null"#,
            r#""error":{"message":"nested","code":500}"#,
        )
        .into_bytes();
    let nested_chunks: Vec<&[u8]> = nested.chunks(CHUNK).collect();
    assert_eq!(scan(&nested_chunks), Some(Signal::Done));

    // Every contender gets the answer it should before it is timed.
    assert_eq!(scan(&chunks), Some(Signal::Done));
    assert_eq!(scan(&[&input]), Some(Signal::Done));
    assert!(count_newlines(&chunks) > 0);
    assert!(eventsource_done(owned.clone()));

    let mut group = c.benchmark_group("sse_chat_1mib_64b_chunks");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("scanner", |b| b.iter(|| scan(&chunks)));
    // The same without the JSON walk (no error objects, no usage): what the line
    // scanner costs alone.
    let no_walk = || {
        SseRules::openai_chat()
            .failed_on_error_object(false)
            .with_usage(None)
    };
    group.bench_function("scanner_no_error_objects", |b| {
        b.iter(|| scan_with(no_walk(), &chunks))
    });
    // Every chunk object with an `error` member nested deeper (not a failure): the
    // walk must tell it from a top-level one.
    group.bench_function("scanner_nested_errors", |b| b.iter(|| scan(&nested_chunks)));
    group.bench_function("memchr_newlines", |b| b.iter(|| count_newlines(&chunks)));
    group.bench_function("naive_substring", |b| {
        b.iter(|| naive_done(&finder, &chunks))
    });
    group.bench_function("eventsource_stream", |b| {
        b.iter_batched(|| owned.clone(), eventsource_done, BatchSize::LargeInput)
    });
    group.finish();

    // The same stream in the chunks an engine writes: one event each (the common
    // case on the wire: whole events, most without `error` or `usage` bytes).
    let events: Vec<&[u8]> = input
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|lines| &input[offset(&input, lines[0])..][..lines.iter().map(|l| l.len()).sum()])
        .collect();
    assert_eq!(events.iter().map(|e| e.len()).sum::<usize>(), input.len());
    assert_eq!(scan_events(&events), Some(Signal::Done));
    let mut group = c.benchmark_group("sse_chat_1mib_event_chunks");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("scanner", |b| b.iter(|| scan_events(&events)));
    group.bench_function("memchr_newlines", |b| b.iter(|| count_newlines(&events)));
    group.finish();
}

/// The load check's stream (`tests/load`): `tokens` events of one short chat chunk
/// each, then `data: [DONE]`, one event per chunk as the mock worker writes them.
fn small_events(tokens: usize) -> Vec<Vec<u8>> {
    let mut events: Vec<Vec<u8>> = (0..tokens)
        .map(|i| {
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} \"}}}}]}}\n\n"
            )
            .into_bytes()
        })
        .collect();
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

fn small(c: &mut Criterion) {
    let owned = small_events(64);
    let events: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let bytes: usize = events.iter().map(|e| e.len()).sum();
    assert_eq!(scan_events(&events), Some(Signal::Done));
    let mut group = c.benchmark_group("sse_small_event_chunks");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("scanner", |b| b.iter(|| scan_events(&events)));
    group.bench_function("memchr_newlines", |b| b.iter(|| count_newlines(&events)));
    group.finish();
}

/// Where `part` (a subslice of `whole`) starts in it.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

fn long_line(c: &mut Criterion) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    let mut input = b"data: ".to_vec();
    input.extend((0..8 * MIB).map(|i| ALPHABET[i % ALPHABET.len()]));
    input.extend_from_slice(b"\n\n");
    let split: Vec<&[u8]> = input.chunks(input.len().div_ceil(1024)).collect();
    assert_eq!(split.len(), 1024);
    let whole: Vec<&[u8]> = vec![&input];
    assert_eq!(scan(&split), None);
    assert_eq!(scan(&whole), None);

    let mut group = c.benchmark_group("sse_8mib_line");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("unsplit", |b| b.iter(|| scan(&whole)));
    group.bench_function("split_1024", |b| b.iter(|| scan(&split)));
    // What the same splits cost the line-end search alone.
    group.bench_function("memchr2_unsplit", |b| b.iter(|| find_line_ends(&whole)));
    group.bench_function("memchr2_split_1024", |b| b.iter(|| find_line_ends(&split)));
    group.finish();
}

criterion_group!(benches, chat, small, long_line);
criterion_main!(benches);

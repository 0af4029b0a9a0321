//! Hand-written SSE cases for [`SseScanner`], each checked fed whole, in its natural
//! chunks (which `feed` call reports which signal), byte by byte, and in every 2-way
//! split.
//!
//! A case is the input in chunks, each with the signals of the events that chunk
//! dispatches, in order. From that table every case is checked five ways:
//!
//! 1. fed in its chunks, each `feed` returns the strongest of that chunk's signals;
//! 2. fed whole, `feed` returns the strongest of all;
//! 3. fed byte by byte, the signals within each chunk's bytes are exactly that chunk's
//!    list, in order, and only a CR or LF byte reports one (a blank line dispatches);
//! 4. fed in two chunks, for every split point, each half reports the strongest of the
//!    byte-by-byte signals that fell in it.

use Signal::{Done, Failed};
use sluice::sse::{Signal, SseRules, SseScanner};

struct Case {
    name: &'static str,
    rules: SseRules,
    chunks: Vec<(Vec<u8>, Vec<Signal>)>,
}

/// `case!(name, rules, [bytes => [signals], ...])`.
macro_rules! case {
    ($name:expr, $rules:expr, [$($bytes:expr => [$($sig:expr),*]),* $(,)?]) => {
        Case {
            name: $name,
            rules: $rules,
            chunks: vec![$(($bytes.to_vec(), vec![$($sig),*])),*],
        }
    };
}

fn chat() -> SseRules {
    SseRules::openai_chat()
}

fn responses() -> SseRules {
    SseRules::openai_responses()
}

fn anthropic() -> SseRules {
    SseRules::anthropic()
}

fn empty() -> SseRules {
    SseRules::empty()
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn cases() -> Vec<Case> {
    vec![
        // Line ends.
        case!("lf", chat(), [b"data: [DONE]\n" => [], b"\n" => [Done]]),
        case!("cr", chat(), [b"data: [DONE]\r" => [], b"\r" => [Done]]),
        case!("crlf", chat(), [b"data: [DONE]\r\n" => [], b"\r\n" => [Done]]),
        case!("crlf split across chunks is one line end", chat(), [
            b"data: [DONE]\r" => [],
            b"\n" => [],
            b"\r\n" => [Done],
            b"\r\n" => [],
        ]),
        case!("cr then lf alone is not yet dispatched", chat(), [
            b"data: [DONE]\r" => [],
            b"\n" => [],
        ]),
        case!("cr cr is a blank line", chat(), [b"data: [DONE]\r\r" => [Done]]),
        case!("lf cr is a blank line", chat(), [b"data: [DONE]\n\r" => [Done], b"\n" => []]),
        case!("cr lf cr lf split between the ends", chat(), [
            b"data: [DONE]\r\n\r" => [Done],
            b"\n" => [],
            b"data: [DONE]\n" => [],
            b"\r" => [Done],
        ]),
        case!("mixed line ends join data", empty().done_on_data("a\nb\nc"), [
            b"data: a\r\ndata: b\rdata: c\n" => [],
            b"\r\n" => [Done],
        ]),
        case!("blank lines alone dispatch nothing", chat(), [b"\n\n\r\n\r\r\n\n" => []]),
        // Byte order mark.
        case!("bom at the start", chat(), [
            cat(&[BOM, b"data: [DONE]\n"]) => [],
            b"\n" => [Done],
        ]),
        case!("bom split across chunks", chat(), [
            b"\xEF" => [],
            b"\xBB" => [],
            b"\xBF" => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("bom before an event field", anthropic(), [
            cat(&[BOM, b"event: error\ndata: {}\n\n"]) => [Failed],
        ]),
        case!("bom not at the start is part of the field name", chat(), [
            cat(&[b"\n", BOM, b"data: [DONE]\n\n"]) => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("only one bom is skipped", chat(), [
            cat(&[BOM, BOM, b"data: [DONE]\n\n"]) => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("partial bom then a field is one unknown field", chat(), [
            b"\xEF\xBB" => [],
            b"data: [DONE]\n\n" => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("partial bom then a line end", chat(), [
            b"\xEF" => [],
            b"\n" => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("partial bom then a colon is an unknown field", empty().done_on_data("x"), [
            b"\xEF\xBB:x\n\n" => [],
            b"data:x\n\n" => [Done],
        ]),
        case!("partial bom at the start then a blank line", chat(), [
            b"\xEF\xBB\n\ndata: [DONE]\n\n" => [Done],
        ]),
        // Comments and field syntax.
        case!("comment is not data", chat(), [
            b": [DONE]\n\n" => [],
            b":[DONE]\r\n\r\n" => [],
            b"data: [DONE]\n: keep-alive\n" => [],
            b"\n" => [Done],
        ]),
        case!("data without the space", chat(), [b"data:[DONE]\n\n" => [Done]]),
        case!("data with two spaces keeps one", chat(), [b"data:  [DONE]\n\n" => []]),
        case!("two spaces keep one for a custom rule", empty().done_on_data(" x"), [
            b"data:  x\n\n" => [Done],
            b"data: x\n\n" => [],
        ]),
        case!("a tab is not stripped", chat(), [b"data:\t[DONE]\n\n" => []]),
        case!("a space before the colon is part of the name", chat(), [
            b"data : [DONE]\n\n" => [],
            b" data: [DONE]\n\n" => [],
        ]),
        case!("the first colon splits the value", empty().done_on_data("a: b"), [
            b"data: a: b\n\n" => [Done],
        ]),
        case!("no colon is an empty value", empty().done_on_data(""), [
            b"data\n\n" => [Done],
            b"data:\n\n" => [Done],
            b"data: \n\n" => [Done],
            b"data:  \n\n" => [],
        ]),
        case!("no colon under chat is an event with empty data", chat(), [
            b"data\n\n" => [],
            b"data\ndata: [DONE]\n\n" => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("multi-line data is joined, not done", chat(), [
            b"data: [DO\ndata: NE]\n\n" => [],
            b"data: [DONE]\ndata:\n\n" => [],
        ]),
        case!("custom rule on multi-line data", empty().done_on_data("a\nb"), [
            b"data: a\ndata: b\n\n" => [Done],
            b"data: a\r\ndata:b\r\n\r\n" => [Done],
            b"data: a\n\ndata: b\n\n" => [],
            b"data: a\ndata: b\ndata:\n\n" => [],
            b"data: a\ndata\ndata: b\n\n" => [],
        ]),
        case!("event without data is not dispatched", anthropic(), [
            b"event: message_stop\n\n" => [],
            b"event: error\r\n\r\n" => [],
            b"event: message_stop\ndata: {}\n" => [],
            b"\n" => [Done],
        ]),
        case!("done inside json is not done", chat(), [
            br#"data: {"text":"data: [DONE]"}"# => [],
            b"\n\n" => [],
            b"data: {\"text\":\"[DONE]\"}\n\n" => [],
        ]),
        case!("prefix and suffix are not matches", chat(), [
            b"data: [DONE]x\n\n" => [],
            b"data: x[DONE]\n\n" => [],
            b"data: [DON\n\n" => [],
            b"data: [DONE] \n\n" => [],
            b"data: [done]\n\n" => [],
            b"data: \n\n" => [],
        ]),
        // Presets.
        case!("openai chat ignores event names", chat(), [
            b"event: error\ndata: {}\n\n" => [],
            b"event: response.failed\ndata: {}\n\n" => [],
        ]),
        case!("openai responses events", responses(), [
            b"event: response.created\ndata: {}\n\n" => [],
            b"event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n" => [],
            b"event: response.completed\ndata: {}\n\n" => [Done],
            b"event: response.incomplete\ndata: {}\n\n" => [Done],
            b"event: response.failed\ndata: {}\n\n" => [Failed],
            b"event: error\ndata: {}\n\n" => [Failed],
        ]),
        case!("openai responses near misses", responses(), [
            b"event: response.completedX\ndata: {}\n\n" => [],
            b"event: response.complete\ndata: {}\n\n" => [],
            b"event: response\ndata: {}\n\n" => [],
            b"event: response.\ndata: {}\n\n" => [],
            b"event: errors\ndata: {}\n\n" => [],
            b"event: Error\ndata: {}\n\n" => [],
            b"event:  error\ndata: {}\n\n" => [],
            b"data: [DONE]\n\n" => [],
            b"data: {}\n\n" => [],
        ]),
        case!("anthropic events", anthropic(), [
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n" => [],
            b"event: content_block_delta\ndata: {}\n\n" => [],
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n" => [],
            b"event: message_delta\ndata: {}\n\n" => [],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n" => [Done],
            b"event: error\ndata: {\"type\":\"error\"}\n\n" => [Failed],
        ]),
        case!("anthropic near misses", anthropic(), [
            b"event: message\ndata: {}\n\n" => [],
            b"event: message_sto\ndata: {}\n\n" => [],
            b"event: message_stops\ndata: {}\n\n" => [],
            b"event: err\ndata: {}\n\n" => [],
            b"data: [DONE]\n\n" => [],
        ]),
        case!("the last event line wins", anthropic(), [
            b"event: error\nevent: message_stop\ndata: {}\n\n" => [Done],
            b"event: message_stop\nevent: error\ndata: {}\n\n" => [Failed],
            b"event: message_stop\nevent:\ndata: {}\n\n" => [],
            b"event: message_stop\nevent\ndata: {}\n\n" => [],
            b"event: message_stop\ndata: {}\nevent: ping\n\n" => [],
        ]),
        case!("event is reset after dispatch", anthropic(), [
            b"event: message_stop\ndata: {}\n\n" => [Done],
            b"data: {}\n\n" => [],
            b"event: error\n\n" => [],
            b"data: {}\n\n" => [],
        ]),
        case!("unknown fields are ignored", chat(), [
            b"id: [DONE]\nretry: 100\ndataX: [DONE]\nDATA: [DONE]\nevent: [DONE]\n\n" => [],
            b"dat: [DONE]\n\n" => [],
            b"id: 7\ndata: [DONE]\nretry: 5\nfoo\n" => [],
            b"\n" => [Done],
        ]),
        case!("unknown event-like fields are ignored", anthropic(), [
            b"eventX: message_stop\ndata: {}\n\n" => [],
            b"even: message_stop\ndata: {}\n\n" => [],
            b"Event: message_stop\ndata: {}\n\n" => [],
            b"eventevent: message_stop\ndata: {}\n\n" => [],
        ]),
        // Signal strength and custom rules.
        case!("failed over done in one chunk", responses(), [
            b"event: response.completed\ndata: {}\n\nevent: error\ndata: {}\n\n" => [Done, Failed],
            b"event: error\ndata: {}\n\nevent: response.completed\ndata: {}\n\n" => [Failed, Done],
            b"event: response.completed\ndata: {}\n\n" => [Done],
        ]),
        case!("failed event with done data", chat().failed_on_event("error"), [
            b"event: error\ndata: [DONE]\n\n" => [Failed],
            b"event: ping\ndata: [DONE]\n\n" => [Done],
        ]),
        case!("custom rules", empty().done_on_data("[END]").failed_on_event("boom").done_on_event("fin"), [
            b"data: [DONE]\n\n" => [],
            b"data: [END]\n\n" => [Done],
            b"event: boom\ndata: x\n\n" => [Failed],
            b"event: fin\ndata: x\n\n" => [Done],
            b"event: boom\n\n" => [],
        ]),
        case!("custom rules extend a preset", chat().done_on_data("[END]").failed_on_data("[ERR]"), [
            b"data: [DONE]\n\n" => [Done],
            b"data: [END]\n\n" => [Done],
            b"data: [ERR]\n\n" => [Failed],
            b"data: [E\n\n" => [],
        ]),
        case!("duplicate pattern, failed wins", empty().done_on_data("x").failed_on_data("x"), [
            b"data: x\n\n" => [Failed],
        ]),
        case!("duplicate pattern, failed wins in either order", empty().failed_on_event("x").done_on_event("x"), [
            b"event: x\ndata: y\n\n" => [Failed],
        ]),
        case!("duplicate of a preset pattern", chat().failed_on_data("[DONE]"), [
            b"data: [DONE]\n\n" => [Failed],
        ]),
        case!("patterns that are prefixes of each other", empty().done_on_data("ab").failed_on_data("abc").done_on_data("a\nb"), [
            b"data: a\n\n" => [],
            b"data: ab\n\n" => [Done],
            b"data: abc\n\n" => [Failed],
            b"data: abcd\n\n" => [],
            b"data: a\ndata: b\n\n" => [Done],
            b"data: a\ndata: bc\n\n" => [],
        ]),
        case!("a rule on the message event matches events without an event field", empty().done_on_event("message"), [
            b"data: hi\n\n" => [Done],
            b"event: message\ndata: hi\n\n" => [Done],
            b"event:\ndata: hi\n\n" => [Done],
            b"event\ndata: hi\n\n" => [Done],
            b"event: other\ndata: hi\n\n" => [],
            b"event: message\n\n" => [],
            b"event: messages\ndata: hi\n\n" => [],
        ]),
        case!("message rule after another event was reset", anthropic().failed_on_event("message"), [
            b"event: message_stop\ndata: {}\n\n" => [Done],
            b"data: {}\n\n" => [Failed],
        ]),
        case!("empty rules report nothing", empty(), [
            b"data: [DONE]\n\nevent: error\ndata: x\n\nevent: message_stop\ndata: x\n\n" => [],
        ]),
        // Bytes that are not UTF-8, and ends of input.
        case!("invalid utf-8 matches nothing and does not derail", chat(), [
            b"data: \xFF\xFE[DONE]\n\n" => [],
            b"data: [DONE]\xFF\n\n" => [],
            b"\xFF\xC3: [DONE]\n\n" => [],
            b"data: \xC3\n\xC3\n\n" => [],
            b"data: [DONE]\n\n" => [Done],
        ]),
        case!("invalid utf-8 in an event name", anthropic(), [
            b"event: message_stop\xC3\ndata: {}\n\n" => [],
            b"event: \xE2\x80error\ndata: {}\n\n" => [],
            b"event: error\ndata: \xFF\n\n" => [Failed],
        ]),
        case!("non-ascii custom rule", empty().done_on_data("h\u{e9}llo").failed_on_event("\u{1F4A5}"), [
            "data: h\u{e9}llo\n\n".as_bytes() => [Done],
            b"data: h\xC3\n\n" => [],
            "event: \u{1F4A5}\ndata: x\n\n".as_bytes() => [Failed],
        ]),
        case!("undispatched event at the end reports nothing", chat(), [
            b"data: x\n\n" => [],
            b"data: [DONE]" => [],
            b"\n" => [],
        ]),
        case!("a realistic chat stream", chat(), [
            b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" => [],
            b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n: ping\n\n" => [],
            b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" => [],
            b"data: [DONE]\n" => [],
            b"\n" => [Done],
        ]),
    ]
}

fn strongest(signals: &[Signal]) -> Option<Signal> {
    signals.iter().copied().max()
}

fn strongest_of(results: &[Option<Signal>]) -> Option<Signal> {
    results.iter().copied().max().flatten()
}

fn check(case: &Case) {
    let name = case.name;
    let input: Vec<u8> = case
        .chunks
        .iter()
        .flat_map(|(b, _)| b.iter().copied())
        .collect();
    let all: Vec<Signal> = case
        .chunks
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect();

    // 1. In its chunks.
    let mut scanner = SseScanner::new(case.rules.clone());
    for (i, (bytes, signals)) in case.chunks.iter().enumerate() {
        assert_eq!(
            scanner.feed(bytes),
            strongest(signals),
            "{name}: chunk {i} {:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    // 2. Whole.
    let mut scanner = SseScanner::new(case.rules.clone());
    assert_eq!(scanner.feed(&input), strongest(&all), "{name}: whole");

    // 3. Byte by byte.
    let mut scanner = SseScanner::new(case.rules.clone());
    let per_byte: Vec<Option<Signal>> = input.iter().map(|b| scanner.feed(&[*b])).collect();
    let mut at = 0;
    for (i, (bytes, signals)) in case.chunks.iter().enumerate() {
        let got: Vec<Signal> = per_byte[at..at + bytes.len()]
            .iter()
            .flatten()
            .copied()
            .collect();
        assert_eq!(&got, signals, "{name}: byte by byte, chunk {i}");
        at += bytes.len();
    }
    for (i, signal) in per_byte.iter().enumerate() {
        if signal.is_some() {
            assert!(
                matches!(input[i], b'\r' | b'\n'),
                "{name}: byte {i} ({:#04x}) reported {signal:?}",
                input[i]
            );
        }
    }

    // 4. Every 2-way split, including the empty halves.
    for k in 0..=input.len() {
        let mut scanner = SseScanner::new(case.rules.clone());
        let left = scanner.feed(&input[..k]);
        let right = scanner.feed(&input[k..]);
        assert_eq!(
            left,
            strongest_of(&per_byte[..k]),
            "{name}: split at {k}, left"
        );
        assert_eq!(
            right,
            strongest_of(&per_byte[k..]),
            "{name}: split at {k}, right"
        );
    }
}

#[test]
fn corpus() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for case in &cases {
        check(case);
    }
}

#[test]
fn empty_chunks_change_nothing() {
    for case in &cases() {
        let mut scanner = SseScanner::new(case.rules.clone());
        for (i, (bytes, signals)) in case.chunks.iter().enumerate() {
            let mut got = scanner.feed(b"");
            assert_eq!(got, None, "{}: chunk {i}", case.name);
            for b in bytes {
                got = got.max(scanner.feed(&[*b]));
                assert_eq!(scanner.feed(b""), None, "{}: chunk {i}", case.name);
            }
            assert_eq!(got, strongest(signals), "{}: chunk {i}", case.name);
        }
    }
}

/// `data: ` and then a megabyte of value on one line: nothing is kept of it, the
/// result is right, and the scanner classifies the next event as usual.
#[test]
fn one_megabyte_line() {
    const MB: usize = 1 << 20;
    let mut long = b"data: [DONE]".to_vec();
    long.resize(MB, b'x');
    let lines: [(&[u8], Option<Signal>); 3] = [
        (&long, None),
        (b"\n\n", None),
        (b"data: [DONE]\n\n", Some(Done)),
    ];
    let input: Vec<u8> = lines.iter().flat_map(|(b, _)| b.iter().copied()).collect();

    let mut scanner = SseScanner::new(chat());
    for (bytes, signal) in lines {
        assert_eq!(scanner.feed(bytes), signal);
    }
    assert_eq!(SseScanner::new(chat()).feed(&input), Some(Done));

    // In chunks of several sizes, and byte by byte: the signal comes with the chunk
    // that holds the last byte, the blank line's LF.
    let blank = input.len() - 1;
    for size in [1, 2, 3, 5, 64, 4096, 65_537] {
        let mut scanner = SseScanner::new(chat());
        for (i, chunk) in input.chunks(size).enumerate() {
            let holds_blank = (i * size..i * size + chunk.len()).contains(&blank);
            let expected = holds_blank.then_some(Done);
            assert_eq!(
                scanner.feed(chunk),
                expected,
                "chunk size {size}, chunk {i}"
            );
        }
    }

    // A megabyte-long event name and comment are skipped the same way.
    let mut scanner = SseScanner::new(anthropic());
    let mut name = b"event: message_stop".to_vec();
    name.resize(MB, b'_');
    assert_eq!(scanner.feed(&name), None);
    assert_eq!(scanner.feed(b"\ndata: {}\n\n"), None);
    let mut comment = b": ".to_vec();
    comment.resize(MB, b'.');
    assert_eq!(scanner.feed(&comment), None);
    assert_eq!(
        scanner.feed(b"\nevent: message_stop\ndata: {}\n\n"),
        Some(Done)
    );
}

/// The scanner owns no growable buffer, so all its state is in a plain clone: a clone
/// taken anywhere goes on exactly as the original does.
#[test]
fn a_clone_mid_line_goes_on_like_the_original() {
    let input = b"event: message_stop\ndata: {\"a\":1}\ndata: x\r\n\r\nevent: error\ndata: y\n\n";
    for k in 0..=input.len() {
        let mut scanner = SseScanner::new(anthropic());
        scanner.feed(&input[..k]);
        let mut copy = scanner.clone();
        assert_eq!(
            copy.feed(&input[k..]),
            scanner.feed(&input[k..]),
            "split at {k}"
        );
    }
}

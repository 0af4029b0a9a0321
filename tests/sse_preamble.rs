//! SPEC section 2, "Preamble and first progress": the events an API sends before any
//! output are not progress. Checked three ways:
//!
//! * every wire transcript (`tests/wire/`): the scanner's progress count, however the
//!   bytes are split, equals a reference that buffers each event, parses its data with
//!   `serde_json` and applies the rule; a few counts are also written out by hand;
//! * generated chat chunks (role-only or not, with every content-bearing member empty
//!   or not, nested look-alikes, odd whitespace, data over several lines, cut short or
//!   with trailing garbage), split anywhere: the scanner agrees with the reference;
//! * the cases the SPEC names: a role chunk then nothing, Anthropic `message_start`,
//!   `content_block_start` and `ping`, Responses `response.created` and
//!   `response.in_progress`: no progress; and after the first progress, preamble
//!   events count.

mod sse_json;

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value};
use sluice::sse::{Signal, SseRules, SseScanner};
use sse_json::{Ending, frame};

/// One dispatched event: its name (empty for none) and data.
struct ReferenceEvent {
    name: String,
    data: String,
}

/// A buffering reference reading of an event stream: one optional BOM, CR/LF/CRLF
/// line ends, comments, `field:value` with one leading space dropped; an event is
/// dispatched by a blank line if it had a `data` field (as the scanner does).
fn events(bytes: &[u8]) -> Vec<ReferenceEvent> {
    let text = String::from_utf8_lossy(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes));
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    let (mut name, mut data, mut has_data) = (String::new(), String::new(), false);
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // after the last line end: an unfinished line dispatches nothing
    for line in lines {
        if line.is_empty() {
            if has_data {
                out.push(ReferenceEvent {
                    name: std::mem::take(&mut name),
                    data: std::mem::take(&mut data),
                });
            }
            (name, data, has_data) = (String::new(), String::new(), false);
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            "event" => name = value.to_owned(),
            _ => {}
        }
    }
    out
}

/// A key the scanner can read without escapes.
fn plain(key: &str) -> bool {
    !key.chars().any(|c| c == '"' || c == '\\' || c < ' ')
}

/// An empty value: `null`, `""`, `[]` or `{}`.
fn empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The role-only chunk rule (module docs of `sluice::sse`), on parsed data.
fn role_only(data: &str) -> bool {
    let Ok(Value::Object(top)) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    if !top.keys().all(|k| plain(k)) {
        return false;
    }
    let Some(choices) = top.get("choices") else {
        return false;
    };
    let Value::Array(choices) = choices else {
        return false;
    };
    let mut role = false;
    for choice in choices {
        let Value::Object(choice) = choice else {
            return false;
        };
        if !choice.keys().all(|k| plain(k)) {
            return false;
        }
        if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
            return false;
        }
        match choice.get("delta") {
            None => {}
            Some(Value::Object(delta)) => {
                for (key, value) in delta {
                    if !plain(key) {
                        return false;
                    }
                    if key == "role" {
                        role = true;
                    } else if !empty(value) {
                        return false;
                    }
                }
            }
            Some(_) => return false,
        }
    }
    role
}

/// SPEC section 2's OpenAI error object, on parsed data.
fn error_object(data: &str) -> bool {
    let Ok(Value::Object(members)) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    members.get("error").is_some_and(|v| !v.is_null())
        || members.get("object").and_then(Value::as_str) == Some("error")
}

/// Which preset a transcript is read with, and the reference's view of it.
#[derive(Clone, Copy, Debug)]
enum Preset {
    Chat,
    Responses,
    Anthropic,
}

impl Preset {
    fn rules(self) -> SseRules {
        match self {
            Preset::Chat => SseRules::openai_chat(),
            Preset::Responses => SseRules::openai_responses(),
            Preset::Anthropic => SseRules::anthropic(),
        }
    }

    fn keep_alive(self, e: &ReferenceEvent) -> bool {
        matches!(self, Preset::Anthropic) && e.name == "ping"
    }

    /// Preamble (before the first progress) by the preset's own rules; a done or
    /// failed event never is.
    fn preamble(self, e: &ReferenceEvent) -> bool {
        match self {
            Preset::Chat => e.data != "[DONE]" && !error_object(&e.data) && role_only(&e.data),
            Preset::Responses => ["response.created", "response.in_progress"].contains(&&*e.name),
            Preset::Anthropic => ["message_start", "content_block_start"].contains(&&*e.name),
        }
    }

    /// The progress count the reference gives the events.
    fn progress(self, events: &[ReferenceEvent]) -> u64 {
        let mut progress = 0;
        for e in events {
            if self.keep_alive(e) || progress == 0 && self.preamble(e) {
                continue;
            }
            progress += 1;
        }
        progress
    }
}

fn scanned(rules: &SseRules, chunks: &[&[u8]]) -> (u64, Option<Signal>) {
    let mut scanner = SseScanner::new(rules.clone());
    let signal = chunks.iter().map(|c| scanner.feed(c)).max().flatten();
    (scanner.progress(), signal)
}

fn wire() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wire"))
}

/// Every transcript of `cases.txt` with its preset (the OpenAI and Anthropic ones:
/// the other dialects' progress is checked with their scanners' own tests).
fn transcripts() -> Vec<(String, Preset)> {
    let list = std::fs::read_to_string(wire().join("cases.txt")).expect("cases.txt");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().expect("name").to_owned();
            let preset = match words.next() {
                Some("openai_chat") => Preset::Chat,
                Some("openai_responses") => Preset::Responses,
                Some("anthropic") => Preset::Anthropic,
                Some("gemini" | "cohere" | "ollama_ndjson" | "bedrock") => return None,
                other => panic!("unknown rules {other:?}"),
            };
            Some((name, preset))
        })
        .collect()
}

#[test]
fn every_transcript_counts_its_progress_without_the_preamble_however_split() {
    let cases = transcripts();
    assert!(cases.len() >= 40);
    let mut skipped = 0;
    for (name, preset) in &cases {
        let bytes = std::fs::read(wire().join(format!("{name}.sse"))).expect("transcript");
        let events = events(&bytes);
        let expected = preset.progress(&events);
        let all = events.len() as u64;
        skipped += all - expected - events.iter().filter(|e| preset.keep_alive(e)).count() as u64;
        let rules = preset.rules();
        assert_eq!(scanned(&rules, &[&bytes]).0, expected, "{name} whole");
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(scanned(&rules, &bytewise).0, expected, "{name} bytewise");
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(scanned(&rules, &[a, b]).0, expected, "{name} split at {at}");
        }
    }
    // The rule is not vacuous on the corpus: the role chunks and the named events of
    // the normal transcripts, at least, are preamble.
    assert!(skipped >= 15, "only {skipped} preamble events");
}

/// The counts of the engines' normal transcripts, by hand: every event with data, less
/// the keep-alives and the preamble.
#[test]
fn the_normal_transcripts_count_as_read_by_hand() {
    for (name, preset, progress) in [
        // role chunk (content ""), 3 texts, finish, usage, [DONE]
        ("vllm-chat-normal", Preset::Chat, 6),
        // role chunk (content ""), 3 texts, finish (delta {}), usage, [DONE]
        ("sglang-chat-normal", Preset::Chat, 6),
        // role chunk (content null), 2 texts, finish, usage, [DONE]
        ("llamacpp-chat-normal", Preset::Chat, 5),
        // comments, role chunk (content null), 2 texts, finish, [DONE]
        ("llamacpp-chat-ping", Preset::Chat, 4),
        // role chunk (content "", refusal null, usage null), 2 texts, finish, usage, [DONE]
        ("openai-chat-normal", Preset::Chat, 5),
        // the role on every chunk, next to the text: all progress
        ("tgi-chat-normal", Preset::Chat, 5),
        ("ollama-chat-normal", Preset::Chat, 6),
        ("openrouter-chat-normal", Preset::Chat, 4),
        // message_start, content_block_start, 2 deltas, ping, 4 deltas, stop, delta, stop
        ("anthropic-normal", Preset::Anthropic, 9),
        ("llamacpp-anthropic-normal", Preset::Anthropic, 5),
        // created, in_progress, then 8 events
        ("openai-responses-normal", Preset::Responses, 8),
    ] {
        let bytes = std::fs::read(wire().join(format!("{name}.sse"))).expect("transcript");
        assert_eq!(scanned(&preset.rules(), &[&bytes]).0, progress, "{name}");
        assert_eq!(
            preset.progress(&events(&bytes)),
            progress,
            "{name} (reference)"
        );
    }
}

#[test]
fn a_role_chunk_then_nothing_is_no_progress() {
    for role in [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}]}"#,
        r#"{"choices":[{"delta":{"role":"assistant","content":"","refusal":null,"tool_calls":[]}}],"usage":null}"#,
    ] {
        let bytes = format!("data: {role}\n\n: keep-alive\n\n");
        for at in 0..=bytes.len() {
            let (a, b) = bytes.as_bytes().split_at(at);
            assert_eq!(
                scanned(&SseRules::openai_chat(), &[a, b]),
                (0, None),
                "{role}"
            );
        }
        // The first token is the first progress; without the rule, the role chunk is.
        let token = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        let stream = format!("{bytes}{token}");
        assert_eq!(scanned(&SseRules::openai_chat(), &[stream.as_bytes()]).0, 1);
        let off = SseRules::openai_chat().preamble_on_role_chunk(false);
        assert_eq!(scanned(&off, &[bytes.as_bytes()]).0, 1);
        // Two role chunks (n = 2 as separate chunks) are both preamble; a role chunk
        // after the first token is progress.
        let twice = format!("data: {role}\n\ndata: {role}\n\n{token}data: {role}\n\n");
        assert_eq!(scanned(&SseRules::openai_chat(), &[twice.as_bytes()]).0, 2);
    }
}

#[test]
fn anthropic_message_start_content_block_start_and_ping_are_no_progress() {
    let preamble = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
        event: content_block_start\n\
        data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        event: ping\n\
        data: {\"type\": \"ping\"}\n\n";
    let rules = SseRules::anthropic();
    for at in 0..=preamble.len() {
        let (a, b) = preamble.as_bytes().split_at(at);
        assert_eq!(scanned(&rules, &[a, b]), (0, None), "split at {at}");
    }
    // After text, a new block's start is progress (the worker moving on); a ping never.
    let rest = "event: content_block_delta\n\
        data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
        event: ping\ndata: {}\n\n\
        event: content_block_start\n\
        data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\"}}\n\n";
    let stream = format!("{preamble}{rest}");
    assert_eq!(scanned(&rules, &[stream.as_bytes()]), (2, None));
}

#[test]
fn responses_created_and_in_progress_are_no_progress() {
    let preamble = "event: response.created\n\
        data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"status\":\"in_progress\",\"output\":[]}}\n\n\
        event: response.in_progress\n\
        data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"status\":\"in_progress\"}}\n\n";
    let rules = SseRules::openai_responses();
    for at in 0..=preamble.len() {
        let (a, b) = preamble.as_bytes().split_at(at);
        assert_eq!(scanned(&rules, &[a, b]), (0, None), "split at {at}");
    }
    let delta = "event: response.output_text.delta\ndata: {\"delta\":\"Hi\"}\n\n";
    let done = "event: response.completed\ndata: {}\n\n";
    let stream = format!("{preamble}{delta}{done}");
    assert_eq!(
        scanned(&rules, &[stream.as_bytes()]),
        (2, Some(Signal::Done))
    );
    // The end marker and a failure are progress, even first.
    let stream = format!("{preamble}{done}");
    assert_eq!(
        scanned(&rules, &[stream.as_bytes()]),
        (1, Some(Signal::Done))
    );
    let failed = "event: response.failed\ndata: {}\n\n";
    let stream = format!("{preamble}{failed}");
    assert_eq!(
        scanned(&rules, &[stream.as_bytes()]),
        (1, Some(Signal::Failed))
    );
}

#[test]
fn custom_preamble_events_and_the_stronger_rule() {
    let rules = SseRules::empty()
        .preamble_on_event("hello")
        .keep_alive_on_event("beat")
        .keep_alive_on_event("hello") // weaker than preamble: still preamble
        .preamble_on_event("bye")
        .done_on_event("bye"); // stronger: done
    let stream = b"event: hello\ndata: {}\n\nevent: beat\ndata: {}\n\n";
    assert_eq!(scanned(&rules, &[stream]), (0, None));
    let stream = b"event: hello\ndata: {}\n\nevent: bye\ndata: {}\n\nevent: hello\ndata: {}\n\n";
    assert_eq!(scanned(&rules, &[stream]), (2, Some(Signal::Done)));
    // The role-only chunk rule alone, on custom rules.
    let rules = SseRules::empty().preamble_on_role_chunk(true);
    let role = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    assert_eq!(scanned(&rules, &[role]), (0, None));
    assert_eq!(scanned(&SseRules::empty(), &[role]), (1, None));
}

/// An error object that is also shaped like a role chunk is a failure, and progress.
#[test]
fn a_failure_is_progress_even_in_a_role_chunk() {
    let data = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}],\"error\":{\"message\":\"x\"}}\n\n";
    assert_eq!(
        scanned(&SseRules::openai_chat(), &[data]),
        (1, Some(Signal::Failed))
    );
}

// ------------------------------------------------------------ generated chat chunks

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::Null),
        2 => Just(Value::from("")),
        1 => Just(Value::Array(vec![])),
        1 => Just(Value::Object(Map::new())),
        2 => Just(Value::from("Hi")),
        1 => Just(Value::from("}]\"role\":{[\\")),
        1 => any::<bool>().prop_map(Value::from),
        1 => (0..3_i32).prop_map(Value::from),
    ]
}

/// Any JSON, with the rule's keys in it, to nest where the rule does not look.
fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "role",
            "content",
            "delta",
            "choices",
            "finish_reason",
            "tool_calls",
            "reasoning_content",
            "refusal",
            "index",
            "roles",
            "rol",
            "delt",
            "error",
            "a\"b",
            "x\\",
        ][..],
    )
    .prop_map(str::to_owned)
}

/// A delta: mostly a role and content-bearing members, empty or not.
fn delta() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        3 => Just("role".to_owned()),
        3 => Just("content".to_owned()),
        1 => Just("refusal".to_owned()),
        1 => Just("tool_calls".to_owned()),
        1 => Just("reasoning_content".to_owned()),
        1 => key(),
    ];
    let empty = prop_oneof![
        Just(Value::Null),
        Just(Value::from("")),
        Just(Value::Array(vec![])),
        Just(Value::Object(Map::new())),
    ];
    let value = prop_oneof![8 => empty, 3 => leaf(), 1 => any_json()];
    prop_oneof![
        12 => (prop::bool::weighted(0.8), prop::collection::vec((member, value), 0..4))
            .prop_map(|(role, members)| {
                let mut m: Map<String, Value> = members.into_iter().collect();
                if role {
                    m.insert("role".into(), Value::from("assistant"));
                }
                Value::Object(m)
            }),
        1 => any_json(),
    ]
}

fn choice() -> impl Strategy<Value = Value> {
    let finish = prop_oneof![6 => Just(Value::Null), 1 => Just(Value::from("stop")), 1 => leaf()];
    prop_oneof![
        12 => (
            prop::option::of(delta()),
            prop::option::of(finish),
            prop::option::of(any_json()),
            prop::option::weighted(0.2, (key(), any_json())),
        )
            .prop_map(|(delta, finish, logprobs, extra)| {
                let mut m = Map::new();
                m.insert("index".into(), Value::from(0));
                if let Some((k, v)) = extra {
                    m.insert(k, v);
                }
                if let Some(d) = delta {
                    m.insert("delta".into(), d);
                }
                if let Some(f) = finish {
                    m.insert("finish_reason".into(), f);
                }
                if let Some(l) = logprobs {
                    m.insert("logprobs".into(), l);
                }
                Value::Object(m)
            }),
        1 => any_json(),
    ]
}

/// A chat chunk (or not quite one), written with any whitespace, sometimes cut short
/// or followed by something.
fn chunk() -> impl Strategy<Value = String> {
    let top = (
        prop_oneof![
            12 => prop::collection::vec(choice(), 0..3).prop_map(Value::Array),
            1 => any_json(),
        ],
        prop::option::weighted(0.2, (key(), any_json())),
        any::<bool>(),
    )
        .prop_map(|(choices, extra, choices_first)| {
            let mut m = Map::new();
            if !choices_first {
                m.insert("id".into(), Value::from("chatcmpl-1"));
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            m.insert("choices".into(), choices);
            m.insert("model".into(), Value::from("m"));
            Value::Object(m)
        });
    sse_json::data(
        top,
        &["", "", "", " ", "\t", "\n", " \n "],
        &[
            Ending::Cut,
            Ending::Garbage,
            Ending::Done,
            Ending::Whole,
            Ending::Whole,
            Ending::Whole,
            Ending::Whole,
            Ending::Whole,
            Ending::Whole,
            Ending::Whole,
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn the_scanner_agrees_with_serde_json_on_chat_chunks(
        chunks in prop::collection::vec(chunk(), 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let rules = SseRules::openai_chat();
        // Each chunk on its own: preamble or progress.
        for data in &chunks {
            let bytes = frame(std::slice::from_ref(data));
            let event = ReferenceEvent { name: String::new(), data: data.clone() };
            let expected = u64::from(!Preset::Chat.preamble(&event));
            prop_assert_eq!(scanned(&rules, &[&bytes]).0, expected, "data {:?}", data);
        }
        // All of them, split anywhere and byte by byte.
        let bytes = frame(&chunks);
        let expected = Preset::Chat.progress(&events(&bytes));
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        let split: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        prop_assert_eq!(scanned(&rules, &split).0, expected);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(scanned(&rules, &bytewise).0, expected);
    }
}

/// The generator makes role-only chunks and others often, so the property is not
/// vacuous.
#[test]
fn the_generator_makes_role_chunks_and_others() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut role, mut other) = (0, 0);
    for _ in 0..3_000 {
        let data = chunk().new_tree(&mut runner).expect("tree").current();
        if role_only(&data) {
            role += 1;
        } else {
            other += 1;
        }
    }
    println!("{role} role-only, {other} others");
    assert!(
        role > 300 && other > 300,
        "{role} role-only, {other} others"
    );
}

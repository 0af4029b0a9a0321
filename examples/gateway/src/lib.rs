//! `sluice-gateway`: a model gateway built only from sluice's public API, runnable in
//! one command.
//!
//! * `cargo run -p sluice-gateway` plays a scripted demo in one process on loopback
//!   ([`scenarios`]): a mock pool of three inference workers ([`mock`], one flaky),
//!   the [`gateway`] (axum + reqwest, a [`SharedBreakerSet`](sluice::breaker::SharedBreakerSet)
//!   with one breaker per worker) and scripted clients, on a
//!   [`ManualClock`](sluice::breaker::ManualClock). It prints a timeline and a
//!   ledger, then exits.
//! * `cargo run --release -p sluice-gateway -- serve --upstream URL ...` runs the
//!   same gateway in front of real engines ([`serve`]).
//!
//! # Routes
//!
//! | route | API | a stream succeeds at | fails at |
//! |---|---|---|---|
//! | `POST /v1/chat/completions`, `/v1/completions` | OpenAI | `data: [DONE]` | `data: {"error": ...}`, an end before `[DONE]` |
//! | `POST /v1/messages` | Anthropic | `event: message_stop` | `event: error`, an end before `message_stop` |
//! | `POST /v1/responses` | OpenAI Responses | `response.completed` / `response.incomplete` | `response.failed`, `error`, an end before the done event |
//! | `GET /metrics` | OpenMetrics | | |
//!
//! The verdict rules come from the response, not the request: a 2xx answer whose
//! `Content-Type` is `text/event-stream` (any case, any parameters) is tracked with
//! its route's SSE rules; any other 2xx body without rules: its clean end is its
//! success (cause `end`). The request body is passed on byte for byte (the `sglang`
//! profile adds its `rid`). The start of every answer goes through the default
//! `StatusPolicy` (5xx: Failure; 429 and other 4xx: Abandoned, so a storm of bad
//! requests ejects nobody; 3xx: Failure, never followed, and the client gets 502);
//! a non-2xx body is passed on capped at 64 KiB and 5 s. A worker that sends no
//! response head within `--header-timeout` fails (cause `header_timeout`, 504).
//!
//! Every 2xx body runs the worker's progress timers from its first poll
//! (`--first-token-timeout`, default `60s`; `--idle-timeout`, `30s`; `--deadline`,
//! `10m`; `off` or `0` switches one off): with SSE rules they count progress events
//! (keep-alives such as `: ping` and Anthropic's `ping` are not progress), without
//! them chunks. An expiry is the worker's Failure with the timer's cause
//! (`first_token_timeout`, `idle_timeout`, `deadline`), counted by its breaker, and
//! the upstream is closed. A worker failure after the response head (a timer, a
//! broken connection, an end before the done event) reaches an event stream's
//! client as the route's error event (the core's
//! [`SseRules::failure_event`](sluice::sse::SseRules::failure_event), its message
//! naming the worker: OpenAI-style `data: {"error": ...}` and no `[DONE]`, Anthropic
//! `event: error`, Responses `response.failed`), and an Ollama NDJSON client as
//! Ollama's own error line (`{"error": ...}`, no `"done": true`), never as a clean
//! end; any other body is cut.
//!
//! When no worker admits a call (every breaker open, or a one-worker pool whose
//! worker is down) the gateway answers 503 with `Retry-After` at once, without
//! trying a worker.
//!
//! A client must send each request's head within `--client-header-timeout` (default
//! `30s`) of its connection's start, or of its last answer on a kept-alive
//! connection; else the connection is closed (hyper's header read timeout, on
//! tokio's timer).
//!
//! # Workers
//!
//! `--upstream [NAME=]URL`: a worker is named (by default `host:port`), and the name
//! is all that logs, metrics and client-facing errors show of it; the detail of an
//! error (which may hold the URL) goes to the logs only. A URL with credentials is
//! refused at start. With `--health-check PATH`, a worker failing three checks in a
//! row is forced open until one passes ([`gateway::health`]).
//!
//! # Shutdown
//!
//! On SIGTERM or Ctrl-C, `serve` stops accepting, lets the streams in flight run for
//! `--shutdown-grace`, ends the rest (Abandoned, cause `shutdown`) and exits 0
//! ([`serve::start_until`] takes the trigger as a future, for tests and embedders).
//!
//! # Logs
//!
//! Structured, with `tracing` (`RUST_LOG` filters; `serve` logs at `info` by
//! default): one event per verdict (`request`, `worker`, `verdict`, `cause`,
//! `chunks`, `bytes`), one per breaker transition (`worker`, `from`, `to`, `reason`,
//! `at_ms`; a warning when a worker is ejected or the cap holds it in), one per 503
//! and per explicit abort. The demo prints its timeline instead (and the logs too
//! when `RUST_LOG` is set).
//!
//! Every request has an id in `x-request-id`: the client's, kept as it came, or a
//! random UUID the gateway makes (`tower-http`'s request-id layers). It goes to the
//! worker and back to the client. Each request runs in a `request` span
//! (`tower-http`'s `TraceLayer`: `request_id`, `method`, `route`, and `worker` once
//! one is picked), and its verdict event is logged inside that span. The response
//! body is not wrapped by the trace layer (it would read the clock for every chunk):
//! the span covers the handling and the verdict, and the verdict line, not
//! `TraceLayer`'s end-of-stream line, tells how the stream ended.
//!
//! # Metrics
//!
//! `GET /metrics` ([`metrics`]): verdicts by worker and cause, breaker states and
//! transitions, 503s, aborts, health checks, and the OpenTelemetry GenAI histograms
//! `gen_ai_server_time_to_first_token_seconds`,
//! `gen_ai_server_time_per_output_token_seconds` and
//! `gen_ai_server_request_duration_seconds`.
//!
//! # Engines
//!
//! See [`engine`]: which engines stop when the connection closes, and the `sglang`
//! profile that aborts explicitly.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod duration;
pub mod engine;
pub mod gateway;
pub mod metrics;
pub mod mock;
pub mod scenarios;
pub mod serve;

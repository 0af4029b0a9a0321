//! The gateway's load check: does `sluice-gateway serve` stay close to a bare relay?
//!
//! ```sh
//! cargo run --release -p sluice-load                     # 1,000 streams, 3 rounds
//! cargo run --release -p sluice-load -- --streams 200 --rounds 1
//! cargo run --release -p sluice-load -- --relays bare,tracked,gateway --together --rounds 12
//! # one relay alone, under a profiler (`{role}` is replaced by the relay's role):
//! cargo run --release -p sluice-load -- --streams 100 --rounds 1 --relays gateway \
//!     --wrap 'valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.{role}.out'
//! ```
//!
//! One mock worker (its own process) streams `--tokens` SSE events `--gap-ms` apart,
//! then `data: [DONE]`. Relays in front of it, each its own process with the same
//! runtime (two worker threads, no logs):
//!
//! * `bare`: an axum + reqwest relay that copies the body;
//! * `tracked`: the floor of a relay with honest verdicts: the bare relay plus what
//!   the library does for every stream (a breaker permit, the header timeout,
//!   `TrackedStream` with the OpenAI chat SSE rules, the gateway's default progress
//!   timers and the failure event), without the gateway's routing, retries, request
//!   ids, spans and metrics;
//! * `gateway`: `sluice_gateway::serve::start`, with its defaults and one worker.
//!
//! `--relays` names those to run, in order (default `bare,gateway`). Each round runs
//! them under the same load: `--streams` concurrent streaming requests from this
//! process, every body read to its end and checked for its `[DONE]`. A relay's CPU
//! time (user + system, from `/proc/PID/stat`, counted from when it is ready) and its
//! peak RSS (`VmHWM` in `/proc/PID/status`) are read from the OS. Printed as ratios in
//! the same round (the order reversed every other round), with their median over the
//! rounds and the ratio of the CPU time summed over all rounds (and of its user and
//! system parts): `gateway / bare`, and with `tracked` also `tracked / bare` (what
//! honest verdicts cost) and `gateway / tracked` (what the gateway adds). Linux only.
//!
//! `--together` runs the relays at the same time, each under its own `--streams` from
//! this process: the machine's other load then falls on all alike, at the price of a
//! busier machine. `--wrap 'CMD ARGS'` starts each relay under a command (a profiler:
//! `valgrind --tool=callgrind`, `valgrind --tool=dhat`, `perf record`), its words
//! split on whitespace and `{role}` in them replaced by the relay's role; the relay is
//! then stopped with SIGTERM (not killed), so that the profiler writes its output,
//! and the ratios measure the profiler too.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use sluice::breaker::{Classified, Config, SharedBreaker, StatusPolicy};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use sluice::{Cause, Outcome, Recorder, TrackedStream, Verdict};
use sluice_tokio::TokioTimer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// The command line, parsed by hand: a handful of numbers.
#[derive(Debug, Clone)]
struct Load {
    streams: usize,
    tokens: u32,
    gap_ms: u64,
    rounds: u32,
    /// The relays to run, in order.
    relays: Vec<&'static str>,
    /// A command each relay runs under (a profiler), if any.
    wrap: Vec<String>,
    /// Run the relays at the same time, each under its own streams.
    together: bool,
}

impl Load {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut load = Self {
            streams: 1_000,
            tokens: 64,
            gap_ms: 20,
            rounds: 3,
            relays: vec!["bare", "gateway"],
            wrap: Vec::new(),
            together: false,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--together" {
                load.together = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--streams" => load.streams = value.parse().map_err(bad)?,
                "--tokens" => load.tokens = value.parse().map_err(bad)?,
                "--gap-ms" => load.gap_ms = value.parse().map_err(bad)?,
                "--rounds" => load.rounds = value.parse().map_err(bad)?,
                "--relays" => {
                    load.relays = Vec::new();
                    for relay in value.split(',') {
                        match relay.trim() {
                            "bare" => load.relays.push("bare"),
                            "tracked" => load.relays.push("tracked"),
                            "gateway" => load.relays.push("gateway"),
                            other => return Err(format!("--relays: unknown relay {other}")),
                        }
                    }
                }
                "--wrap" => load.wrap = value.split_whitespace().map(str::to_owned).collect(),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(load)
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = match args.first().map(String::as_str) {
        Some("worker") => runtime.block_on(worker(&args[1..])),
        Some("bare") => runtime.block_on(bare(&args[1..])),
        Some("tracked") => runtime.block_on(tracked(&args[1..])),
        Some("gateway") => runtime.block_on(gateway(&args[1..])),
        _ => match Load::parse(&args) {
            Ok(load) => runtime.block_on(drive(load)),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Binds a loopback port and tells the parent where (one line on stdout).
async fn listen() -> Result<TcpListener, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("ready {addr}");
    Ok(listener)
}

/// The mock worker: every POST streams `tokens` events `gap_ms` apart, then `[DONE]`.
async fn worker(args: &[String]) -> Result<(), String> {
    let number = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| "worker TOKENS GAP_MS".to_owned())
    };
    let (tokens, gap) = (number(0)?, Duration::from_millis(number(1)?));
    let answer = move || async move {
        let ticks = stream::unfold(0, move |i| async move {
            if i > tokens {
                return None;
            }
            tokio::time::sleep(gap).await;
            let event = if i == tokens {
                Bytes::from_static(b"data: [DONE]\n\n")
            } else {
                Bytes::from(format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} \"}}}}]}}\n\n"
                ))
            };
            Some((Ok::<_, std::io::Error>(event), i + 1))
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(ticks),
        )
    };
    let app = Router::new().route("/v1/chat/completions", post(answer));
    axum::serve(listen().await?, app)
        .await
        .map_err(|e| e.to_string())
}

/// The bare relay: the request to the worker, its status, content type and body
/// back, nothing else.
async fn bare(args: &[String]) -> Result<(), String> {
    let upstream = args.first().ok_or("bare UPSTREAM")?.clone();
    async fn relay(
        State((client, upstream)): State<(reqwest::Client, String)>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut call = client.post(format!("{upstream}{}", uri.path())).body(body);
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            call = call.header(header::CONTENT_TYPE, ct);
        }
        match call.send().await {
            Ok(answer) => {
                let status = answer.status();
                let ct = answer.headers().get(header::CONTENT_TYPE).cloned();
                let mut out = Response::new(Body::from_stream(answer.bytes_stream()));
                *out.status_mut() = status;
                if let Some(ct) = ct {
                    out.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                out
            }
            Err(_) => StatusCode::BAD_GATEWAY.into_response(),
        }
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let app = Router::new()
        .route("/v1/chat/completions", post(relay))
        .with_state((client, upstream));
    axum::serve(listen().await?, app)
        .await
        .map_err(|e| e.to_string())
}

/// The floor of a relay with honest verdicts: the bare relay plus what the library
/// does for every stream, with the gateway's default timeouts (a breaker permit, the
/// header timeout, the verdict from the OpenAI chat SSE rules, the progress timers,
/// the failure event). No routing, retries, request ids, spans or metrics: the
/// gateway's cost over this one is its own.
async fn tracked(args: &[String]) -> Result<(), String> {
    let upstream = args.first().ok_or("tracked UPSTREAM")?.clone();
    let defaults = sluice_gateway::serve::ServeArgs::new(vec![upstream.clone()]);
    let timeouts = Timeouts::new()
        .first_token(defaults.first_token_timeout)
        .idle(defaults.idle_timeout)
        .deadline(defaults.deadline);
    let header_timeout = defaults.header_timeout;
    let breaker = SharedBreaker::new(Config::default());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let relay = move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, upstream, breaker) = (client.clone(), upstream.clone(), breaker.clone());
        async move {
            let Ok(permit) = breaker.try_acquire_owned() else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            let mut call = client.post(format!("{upstream}{}", uri.path())).body(body);
            if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                call = call.header(header::CONTENT_TYPE, ct);
            }
            let answer = match tokio::time::timeout(header_timeout, call.send()).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => {
                    let failed = Outcome::new(Verdict::Failure, Cause::SendFailed, 0, 0);
                    permit.record(failed);
                    return StatusCode::BAD_GATEWAY.into_response();
                }
            };
            let status = answer.status();
            if let Classified::Settle(verdict) = StatusPolicy::new().classify(status.as_u16()) {
                permit.record(Outcome::new(verdict, Cause::Status, 0, 0));
                return status.into_response();
            }
            let ct = answer.headers().get(header::CONTENT_TYPE).cloned();
            let tracked = TrackedStream::new(answer.bytes_stream(), permit)
                .with_sse(SseRules::openai_chat())
                .with_timers(TokioTimer, timeouts)
                .with_failure_event();
            let mut out = Response::new(Body::from_stream(tracked));
            *out.status_mut() = status;
            if let Some(ct) = ct {
                out.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            out
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(relay));
    axum::serve(listen().await?, app)
        .await
        .map_err(|e| e.to_string())
}

/// The gateway as `serve` runs it, with its defaults and one worker.
async fn gateway(args: &[String]) -> Result<(), String> {
    let upstream = args.first().ok_or("gateway UPSTREAM")?.clone();
    let mut serve = sluice_gateway::serve::ServeArgs::new(vec![upstream]);
    serve.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let serving = sluice_gateway::serve::start(&serve)
        .await
        .map_err(|e| e.to_string())?;
    println!("ready {}", serving.addr);
    serving.wait().await.map_err(|e| e.to_string())
}

/// A child process of this binary, in one of its roles, and where it listens.
struct Role {
    child: Child,
    addr: SocketAddr,
}

impl Role {
    async fn spawn(args: &[&str]) -> Result<Self, String> {
        Self::spawn_wrapped(&[], args).await
    }

    /// This binary with `args`, run under the command `wrap` if it is not empty.
    async fn spawn_wrapped(wrap: &[String], args: &[&str]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = match wrap.split_first() {
            Some((program, wrap_args)) => {
                let mut command = Command::new(program);
                command.args(wrap_args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {args:?}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{args:?} said {line:?}, not `ready ADDR`"))?;
        Ok(Self { child, addr })
    }

    fn pid(&self) -> Result<u32, String> {
        self.child
            .id()
            .ok_or_else(|| "the child has exited".to_owned())
    }

    /// Stops the child with SIGTERM and waits (at most a minute) for it to exit, so
    /// that a profiler it runs under writes its output.
    async fn terminate(mut self) -> Result<(), String> {
        let pid = self.pid()?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid}: {status}"));
        }
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .map_err(|_| format!("{pid} still running a minute after SIGTERM"))?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// CPU time used by process `pid` so far (user + system).
fn cpu(pid: u32) -> Result<Duration, String> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// CPU time used by process `pid` so far: user, system.
fn cpu_split(pid: u32) -> Result<(Duration, Duration), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').ok_or("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    // utime and stime are fields 14 and 15 of the line; here 12 and 13, in ticks of
    // USER_HZ, which is 100 on Linux.
    Ok((
        Duration::from_millis(tick(11)? * 10),
        Duration::from_millis(tick(12)? * 10),
    ))
}

/// The peak resident set of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// What one relay did under one round's load.
#[derive(Debug, Clone, Copy)]
struct Figures {
    complete: usize,
    wall: Duration,
    cpu: Duration,
    /// Of which in the kernel.
    system: Duration,
    peak_rss_kib: u64,
}

/// Runs `load.streams` concurrent streams through the relay `role`.
async fn round(load: &Load, role: &str, worker: SocketAddr) -> Result<Figures, String> {
    let wrap: Vec<String> = load
        .wrap
        .iter()
        .map(|w| w.replace("{role}", role))
        .collect();
    let relay = Role::spawn_wrapped(&wrap, &[role, &format!("http://{worker}")]).await?;
    let pid = relay.pid()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}/v1/chat/completions", relay.addr);
    let body = r#"{"model":"load","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (user_before, system_before) = cpu_split(pid)?;
    let started = Instant::now();
    let complete = stream::iter(0..load.streams)
        .map(|_| {
            let call = client
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
            async move {
                let answer = call.send().await.ok()?;
                let bytes = answer.bytes().await.ok()?;
                bytes.ends_with(b"data: [DONE]\n\n").then_some(())
            }
        })
        .buffer_unordered(load.streams)
        .filter(|done| std::future::ready(done.is_some()))
        .count()
        .await;
    let wall = started.elapsed();
    let figures = Figures {
        complete,
        wall,
        cpu: cpu(pid)?.saturating_sub(user_before + system_before),
        system: cpu_split(pid)?.1.saturating_sub(system_before),
        peak_rss_kib: peak_rss_kib(pid)?,
    };
    if load.wrap.is_empty() {
        drop(relay);
    } else {
        relay.terminate().await?;
    }
    Ok(figures)
}

/// One relay's time over another's (a time too short to read counts as 10 ms).
fn ratio(relay: Duration, base: Duration) -> f64 {
    relay.as_secs_f64() / base.as_secs_f64().max(0.01)
}

/// The pairs of relays compared, among those run: each other relay against the
/// bare one, and the gateway against the tracked one (its cost over the floor).
fn comparisons(relays: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    let ran = |r: &str| relays.contains(&r);
    [
        ("tracked", "bare"),
        ("gateway", "bare"),
        ("gateway", "tracked"),
    ]
    .into_iter()
    .filter(|(a, b)| ran(a) && ran(b))
    .collect()
}

/// The latest figures of `relay`.
fn last(all: &[(&str, Vec<Figures>)], relay: &str) -> Figures {
    let rounds = &all
        .iter()
        .find(|(r, _)| *r == relay)
        .expect("a relay run")
        .1;
    *rounds.last().expect("a round run")
}

async fn drive(load: Load) -> Result<(), String> {
    let worker =
        Role::spawn(&["worker", &load.tokens.to_string(), &load.gap_ms.to_string()]).await?;
    println!(
        "{} concurrent streams of {} tokens, {} ms apart; {} round(s)",
        load.streams, load.tokens, load.gap_ms, load.rounds
    );
    println!(
        "{:>5}  {:<8} {:>9} {:>8} {:>9} {:>9} {:>13}",
        "round", "relay", "complete", "wall s", "cpu s", "of it sys", "peak rss MiB"
    );
    // Per relay: each round's figures, and its CPU and system time summed.
    let mut all: Vec<(&str, Vec<Figures>)> = load.relays.iter().map(|&r| (r, Vec::new())).collect();
    for n in 1..=load.rounds {
        // Every other round the relays go in the other order: none always meets the
        // worker (and the machine) fresh.
        let mut order = load.relays.clone();
        if n % 2 == 0 {
            order.reverse();
        }
        let figures = match load.together {
            true => {
                let rounds = order.iter().map(|&role| round(&load, role, worker.addr));
                futures_util::future::try_join_all(rounds).await?
            }
            false => {
                let mut figures = Vec::new();
                for &role in &order {
                    figures.push(round(&load, role, worker.addr).await?);
                }
                figures
            }
        };
        for (&role, f) in order.iter().zip(figures) {
            println!(
                "{n:>5}  {role:<8} {:>9} {:>8.2} {:>9.2} {:>9.2} {:>13.1}",
                f.complete,
                f.wall.as_secs_f64(),
                f.cpu.as_secs_f64(),
                f.system.as_secs_f64(),
                f.peak_rss_kib as f64 / 1024.0
            );
            if f.complete != load.streams {
                return Err(format!(
                    "{role}: only {} of {} streams ended with [DONE]",
                    f.complete, load.streams
                ));
            }
            if let Some((_, rounds)) = all.iter_mut().find(|(r, _)| *r == role) {
                rounds.push(f);
            }
        }
        for (relay, base) in comparisons(&load.relays) {
            let (a, b) = (last(&all, relay), last(&all, base));
            let cpu = ratio(a.cpu, b.cpu);
            let rss = a.peak_rss_kib as f64 / b.peak_rss_kib.max(1) as f64;
            println!("{n:>5}  {relay} / {base}: cpu {cpu:.3}x, peak rss {rss:.3}x");
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (relay, base) in comparisons(&load.relays) {
        let rounds = |r: &str| &all.iter().find(|(role, _)| *role == r).expect("run").1;
        let pairs: Vec<_> = rounds(relay).iter().zip(rounds(base)).collect();
        let cpu = median(pairs.iter().map(|(a, b)| ratio(a.cpu, b.cpu)).collect());
        let rss = median(
            pairs
                .iter()
                .map(|(a, b)| a.peak_rss_kib as f64 / b.peak_rss_kib.max(1) as f64)
                .collect(),
        );
        let sum = |r: &str| {
            rounds(r)
                .iter()
                .fold((Duration::ZERO, Duration::ZERO), |(c, s), f| {
                    (c + f.cpu, s + f.system)
                })
        };
        let ((a_cpu, a_sys), (b_cpu, b_sys)) = (sum(relay), sum(base));
        println!(
            "{relay} / {base}: median of {} round(s): cpu {cpu:.3}x, peak rss {rss:.3}x; \
             all rounds summed: cpu {:.3}x (user {:.3}x, system {:.3}x)",
            pairs.len(),
            ratio(a_cpu, b_cpu),
            ratio(a_cpu.saturating_sub(a_sys), b_cpu.saturating_sub(b_sys)),
            ratio(a_sys, b_sys)
        );
    }
    Ok(())
}

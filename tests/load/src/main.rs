//! The gateway's load check: does `sluice-gateway serve` stay close to a bare relay?
//!
//! ```sh
//! cargo run --release -p sluice-load                     # 1,000 streams, 3 rounds
//! cargo run --release -p sluice-load -- --streams 200 --rounds 1
//! cargo run --release -p sluice-load -- --relays bare,tracked,gateway --together --rounds 20
//! cargo run --release -p sluice-load -- --relays bare,tracked,gateway --together --server hyper
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
//! The bare and tracked relays serve with `axum::serve` (the plain way to run an axum
//! app); the gateway runs hyper's HTTP/1.1 server itself, with a timer (its clients'
//! header timeout) and flattened writes, which costs less. `--server hyper` runs the
//! other two on that same server, so that the ratios compare the relays' own work
//! alone.
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
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use hyper_util::rt::{TokioIo, TokioTimer as HyperTimer};
use hyper_util::service::TowerToHyperService;
use sluice::breaker::{Classified, Config, OwnedSharedPermit, SharedBreaker, StatusPolicy};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Recorder, TrackedStream, Verdict};
use sluice_gateway::gateway::{DEFAULT_HEADER_TIMEOUT, DEFAULT_TIMEOUTS};
use sluice_tokio::TokioTimer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::timeout;

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
    /// How the bare and tracked relays serve: `axum` or `hyper`.
    server: &'static str,
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
            server: "axum",
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
                        let relay = match relay.trim() {
                            "bare" => "bare",
                            "tracked" => "tracked",
                            "gateway" => "gateway",
                            other => return Err(format!("--relays: unknown relay {other:?}")),
                        };
                        if load.relays.contains(&relay) {
                            return Err(format!("--relays: {relay} named twice"));
                        }
                        load.relays.push(relay);
                    }
                }
                "--wrap" => load.wrap = value.split_whitespace().map(str::to_owned).collect(),
                "--server" => {
                    load.server = match value.as_str() {
                        "axum" => "axum",
                        "hyper" => "hyper",
                        other => return Err(format!("--server: unknown server {other:?}")),
                    }
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if load.streams == 0 || load.rounds == 0 {
            return Err("--streams and --rounds must be at least 1".to_owned());
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
    let upstream = args.first().ok_or("bare UPSTREAM SERVER")?.clone();
    let server = args.get(1).map_or("axum", String::as_str);
    let client = upstream_client()?;
    let relay = move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let call = upstream_call(&client, &upstream, &uri, &headers, body);
        async move {
            match call.send().await {
                Ok(answer) => relayed(answer, |answer| Body::from_stream(answer.bytes_stream())),
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(relay));
    serve_on(listen().await?, app, server).await
}

/// The floor of a relay with honest verdicts: the bare relay plus what the library
/// does for every stream, with the gateway's default timeouts (a breaker permit, the
/// header timeout, the verdict from the OpenAI chat SSE rules, the progress timers,
/// the failure event). No routing, retries, request ids, spans or metrics: the
/// gateway's cost over this one is its own.
async fn tracked(args: &[String]) -> Result<(), String> {
    let upstream = args.first().ok_or("tracked UPSTREAM SERVER")?.clone();
    let server = args.get(1).map_or("axum", String::as_str);
    let breaker = SharedBreaker::new(Config::default());
    let policy = StatusPolicy::new();
    let client = upstream_client()?;
    let relay = move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let call = upstream_call(&client, &upstream, &uri, &headers, body);
        let breaker = breaker.clone();
        async move {
            let Ok(permit) = breaker.try_acquire_owned() else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            let (cause, status) = match timeout(DEFAULT_HEADER_TIMEOUT, call.send()).await {
                Ok(Ok(answer)) => return tracked_answer(answer, permit, policy),
                Ok(Err(_)) => (Cause::SendFailed, StatusCode::BAD_GATEWAY),
                Err(_) => (Cause::HeaderTimeout, StatusCode::GATEWAY_TIMEOUT),
            };
            permit.record(Outcome::new(Verdict::Failure, cause, 0, 0));
            status.into_response()
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(relay));
    serve_on(listen().await?, app, server).await
}

/// The tracked relay's answer: a status the policy settles is recorded at once, a
/// body to track goes to the client in the library's tracked stream.
fn tracked_answer(
    answer: reqwest::Response,
    permit: OwnedSharedPermit,
    policy: StatusPolicy,
) -> Response {
    let status = answer.status();
    if let Classified::Settle(verdict) = policy.classify(status.as_u16()) {
        permit.record(Outcome::new(verdict, Cause::Status, 0, 0));
        return status.into_response();
    }
    relayed(answer, |answer| {
        let tracked = TrackedStream::new(answer.bytes_stream(), permit)
            .with_sse(SseRules::openai_chat())
            .with_timers(TokioTimer, DEFAULT_TIMEOUTS)
            .with_failure_event();
        Body::from_stream(tracked)
    })
}

/// The relays' client to the worker: redirects not followed.
fn upstream_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The client's request as a relay sends it on: the path, the content type, the body.
fn upstream_call(
    client: &reqwest::Client,
    upstream: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> reqwest::RequestBuilder {
    let mut call = client.post(format!("{upstream}{}", uri.path())).body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        call = call.header(header::CONTENT_TYPE, ct);
    }
    call
}

/// The worker's `answer` relayed: its status and content type, and the body `body`
/// makes of it.
fn relayed(answer: reqwest::Response, body: impl FnOnce(reqwest::Response) -> Body) -> Response {
    let status = answer.status();
    let ct = answer.headers().get(header::CONTENT_TYPE).cloned();
    let mut out = Response::new(body(answer));
    *out.status_mut() = status;
    if let Some(ct) = ct {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

/// Serves `app` on `listener` as `server` says: `axum` (`axum::serve`, the plain way)
/// or `hyper` (hyper's HTTP/1.1 server with a timer and flattened writes, as the
/// gateway's `serve` runs).
async fn serve_on(listener: TcpListener, app: Router, server: &str) -> Result<(), String> {
    if server != "hyper" {
        return axum::serve(listener, app).await.map_err(|e| e.to_string());
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(HyperTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .writev(false);
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
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

impl Figures {
    /// This relay's CPU time and peak RSS over `base`'s.
    fn over(&self, base: &Self) -> (f64, f64) {
        let rss = self.peak_rss_kib as f64 / base.peak_rss_kib.max(1) as f64;
        (ratio(self.cpu, base.cpu), rss)
    }
}

/// Runs `load.streams` concurrent streams through the relay `role`.
async fn round(load: &Load, role: &str, worker: SocketAddr) -> Result<Figures, String> {
    let wrap: Vec<String> = load
        .wrap
        .iter()
        .map(|w| w.replace("{role}", role))
        .collect();
    let upstream = format!("http://{worker}");
    let relay = Role::spawn_wrapped(&wrap, &[role, &upstream, load.server]).await?;
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

/// The pairs of relays compared, among those run, as their places in `relays`: each
/// other relay against the bare one, and the gateway against the tracked one (its
/// cost over the floor).
fn comparisons(relays: &[&str]) -> Vec<(usize, usize)> {
    let place = |r: &str| relays.iter().position(|&x| x == r);
    [
        ("tracked", "bare"),
        ("gateway", "bare"),
        ("gateway", "tracked"),
    ]
    .into_iter()
    .filter_map(|(a, b)| Some((place(a)?, place(b)?)))
    .collect()
}

/// The median of `v` (the mean of the middle two if their number is even), `v` not
/// empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n % 2 {
        1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

async fn drive(load: Load) -> Result<(), String> {
    let worker =
        Role::spawn(&["worker", &load.tokens.to_string(), &load.gap_ms.to_string()]).await?;
    println!(
        "{} concurrent streams of {} tokens, {} ms apart; {} round(s); bare and tracked on {}",
        load.streams, load.tokens, load.gap_ms, load.rounds, load.server
    );
    println!(
        "{:>5}  {:<8} {:>9} {:>8} {:>9} {:>9} {:>13}",
        "round", "relay", "complete", "wall s", "cpu s", "of it sys", "peak rss MiB"
    );
    // Each round's figures, per relay, in the order of `load.relays`.
    let mut all: Vec<Vec<Figures>> = vec![Vec::new(); load.relays.len()];
    let pairs = comparisons(&load.relays);
    for n in 1..=load.rounds {
        // Every other round the relays go in the reverse order: each pair of them
        // takes turns to go first.
        let mut order: Vec<usize> = (0..load.relays.len()).collect();
        if n % 2 == 0 {
            order.reverse();
        }
        let rounds = order
            .iter()
            .map(|&i| round(&load, load.relays[i], worker.addr));
        let figures = match load.together {
            true => futures_util::future::try_join_all(rounds).await?,
            false => {
                let mut figures = Vec::new();
                for round in rounds {
                    figures.push(round.await?);
                }
                figures
            }
        };
        for (&i, f) in order.iter().zip(figures) {
            let role = load.relays[i];
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
            all[i].push(f);
        }
        for &(a, b) in &pairs {
            if let (Some(x), Some(y)) = (all[a].last(), all[b].last()) {
                let (cpu, rss) = x.over(y);
                let (a, b) = (load.relays[a], load.relays[b]);
                println!("{n:>5}  {a} / {b}: cpu {cpu:.3}x, peak rss {rss:.3}x");
            }
        }
    }
    for &(a, b) in &pairs {
        let ratios: Vec<(f64, f64)> = all[a].iter().zip(&all[b]).map(|(x, y)| x.over(y)).collect();
        let cpu = median(ratios.iter().map(|r| r.0).collect());
        let rss = median(ratios.iter().map(|r| r.1).collect());
        // CPU time, and of it system time, summed over the rounds.
        let sum = |rounds: &[Figures]| {
            rounds
                .iter()
                .fold((Duration::ZERO, Duration::ZERO), |(c, s), f| {
                    (c + f.cpu, s + f.system)
                })
        };
        let ((a_cpu, a_sys), (b_cpu, b_sys)) = (sum(&all[a]), sum(&all[b]));
        println!(
            "{} / {}: median of {} round(s): cpu {cpu:.3}x, peak rss {rss:.3}x; \
             all rounds summed: cpu {:.3}x (user {:.3}x, system {:.3}x)",
            load.relays[a],
            load.relays[b],
            ratios.len(),
            ratio(a_cpu, b_cpu),
            ratio(a_cpu.saturating_sub(a_sys), b_cpu.saturating_sub(b_sys)),
            ratio(a_sys, b_sys)
        );
    }
    Ok(())
}

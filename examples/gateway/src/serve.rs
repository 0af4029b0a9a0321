//! `serve`: the gateway as a server in front of real workers (vLLM, SGLang,
//! llama.cpp server, or anything that speaks the OpenAI HTTP API; the Anthropic and
//! Responses routes for engines that speak those too).

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sluice::breaker::{Config, DEFAULT_MAX_EJECTED_PERCENT, Pick, StdClock};
use sluice::retry::RetryBudgetConfig;
use sluice::timers::Timeouts;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::duration::{format_duration, format_timeout, parse_duration, parse_timeout};
use crate::engine::Engine;
use crate::gateway::pd::{DEFAULT_BOOTSTRAP_PORT, PrefillSpec};
use crate::gateway::{Api, Gateway, GatewayError, HealthCheck, Options, WorkerSpec};

/// How long a worker may take to send its response head, by default (`30s`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = crate::gateway::DEFAULT_HEADER_TIMEOUT;

/// How long a worker may take from the start of its answer's body to its first
/// token, by default (`60s`: a long prompt's prefill on a busy engine).
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = crate::gateway::DEFAULT_FIRST_TOKEN_TIMEOUT;

/// How long a worker may go without a token once it has sent one, by default (`30s`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = crate::gateway::DEFAULT_IDLE_TIMEOUT;

/// How long a worker's answer may take from the start of its body to its end, by
/// default (`10m`).
pub const DEFAULT_DEADLINE: Duration = crate::gateway::DEFAULT_DEADLINE;

/// The time between two rounds of health checks, by default (`5s`).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How long streams in flight may run on after SIGTERM or Ctrl-C, by default (`30s`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// After the grace, how long connections that still hold a stream the gateway could
/// not end (a client that reads nothing, so its body is never polled) may stay
/// before the server stops without them.
pub const AFTER_GRACE: Duration = Duration::from_secs(1);

/// How long a client may take to send a request's head, by default (`30s`).
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How `serve` picks a worker among those whose breaker admits the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
#[non_exhaustive]
pub enum PickArg {
    /// The next worker after the last one picked.
    #[default]
    RoundRobin,
    /// The worker with the fewest streams in flight (ties: round-robin order).
    LeastInFlight,
}

impl From<PickArg> for Pick {
    fn from(pick: PickArg) -> Self {
        match pick {
            PickArg::RoundRobin => Self::RoundRobin,
            PickArg::LeastInFlight => Self::LeastInFlight,
        }
    }
}

/// The share of the recent requests that retries and hedges may add, in percent,
/// by default (Finagle's).
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;

/// The `serve` flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// An upstream worker: its base URL, e.g. http://127.0.0.1:8000, optionally
    /// named, e.g. alpha=http://127.0.0.1:8000 (repeat the flag for several
    /// workers). Unnamed, a worker is named host:port. The name is what logs,
    /// metrics and error answers show; the URL is never shown to clients. The
    /// request's path (/v1/chat/completions, ...) is appended to the URL. A URL
    /// with credentials (user:pass@) is refused.
    #[arg(
        long = "upstream",
        value_name = "[NAME=]URL",
        required_unless_present = "prefills"
    )]
    pub upstreams: Vec<String>,

    /// Prefill/decode (PD) mode, instead of --upstream: a prefill worker, its URL
    /// ([NAME=]URL, as --upstream) and optionally its KV bootstrap port (default
    /// 8998; `none` for none), as SGLang's router takes it: --prefill
    /// http://p0:30000 9000 (repeat the flag for several). Each request goes to a
    /// prefill and a decode worker at once, with bootstrap_host, bootstrap_port and
    /// bootstrap_room added to its JSON; the client gets the decode worker's answer.
    #[arg(
        long = "prefill",
        value_name = "URL [BOOTSTRAP_PORT]",
        num_args = 1..=2,
        conflicts_with = "upstreams",
        requires = "decodes"
    )]
    pub prefills: Vec<String>,

    /// PD mode: a decode worker ([NAME=]URL; repeat the flag for several).
    #[arg(long = "decode", value_name = "URL", requires = "prefills")]
    pub decodes: Vec<String>,

    /// How to pick a worker among those whose breaker admits the call.
    #[arg(long, value_enum, default_value_t = PickArg::RoundRobin)]
    pub pick: PickArg,

    /// At most max(1, floor(workers * PERCENT / 100)) workers are ejected (breaker
    /// open or half-open) at once; a worker that would open beyond that stays in,
    /// and the transition says so (reason ejection_capped).
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_MAX_EJECTED_PERCENT)]
    pub max_ejected_percent: u8,

    /// Failures in a row that open a worker's circuit breaker.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub failure_threshold: u32,

    /// Successful half-open probes in a row that close it again.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub success_threshold: u32,

    /// Seconds an open breaker rejects calls before it lets a probe through.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub open_secs: u64,

    /// The engine profile: generic (closing the connection is enough: vLLM, TGI,
    /// current llama.cpp and Ollama) or sglang (a request id in each body, and
    /// POST /abort_request when a client abandons a request the engine has).
    #[arg(long, value_enum, default_value_t = Engine::Generic)]
    pub engine: Engine,

    /// How long a worker may take to send its response head (500ms, 30s, 2m): past
    /// it the request is the worker's failure (cause header_timeout) and the client
    /// gets a 504.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// How long a worker's streamed answer may go from the start of its body to its
    /// first token (500ms, 60s, 2m; off or 0: no limit). Keep-alives (`: ping`,
    /// Anthropic's ping) are not tokens. Past it the request is the worker's failure
    /// (cause first_token_timeout) and the client gets the API's error event.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    pub first_token_timeout: Duration,

    /// How long a worker may go without a token once it has sent one (off or 0: no
    /// limit); keep-alives do not count. Past it: the worker's failure (cause
    /// idle_timeout), the API's error event to the client.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// How long a worker's answer may take from the start of its body to its end,
    /// whatever it sends (off or 0: no limit). Past it: the worker's failure (cause
    /// deadline), the API's error event to the client.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
    pub deadline: Duration,

    /// Check each worker with GET PATH (e.g. /health) every --health-interval; a
    /// worker failing 3 checks in a row is forced open (no traffic) until a check
    /// passes. Off unless given.
    #[arg(long, value_name = "PATH")]
    pub health_check: Option<String>,

    /// The time between two rounds of health checks, and each check's time limit.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// On SIGTERM or Ctrl-C, stop accepting and let streams in flight run for this
    /// long; then end the rest (their verdict: abandoned, cause shutdown) and exit 0.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long a client may take to send a request's head, from its connection's
    /// start or the previous answer on a kept-alive connection; past it the
    /// connection is closed (a client that sends nothing holds none).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub client_header_timeout: Duration,

    /// Attempts after the first, each on a worker the request has not tried, when
    /// one fails before its first token reaches the client: a connect error, a 5xx,
    /// a 429 or 503, a redirect, a timeout to the head or the first token, an error
    /// event or a cut. Never after the first token, never on another 4xx. With 0
    /// (and no --hedge-after), a stream's head goes to the client at once; otherwise
    /// it goes with the first token.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,

    /// Retries and hedges may add at most PERCENT of the requests of the last 10 s,
    /// plus 10 per second: a pool in outage gets no retry storm.
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_RETRY_BUDGET_PERCENT)]
    pub retry_budget: u32,

    /// Start a second attempt on another worker when the first has sent no token
    /// after this long (200ms, 2s; off or 0: never); the first to send a token is
    /// the answer, the other is dropped (abandoned, cause hedge_lost).
    #[arg(long, value_name = "DURATION", default_value = "off", value_parser = parse_timeout)]
    pub hedge_after: Duration,
}

impl ServeArgs {
    /// The defaults of every flag, with these upstreams.
    pub fn new(upstreams: Vec<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstreams,
            prefills: Vec::new(),
            decodes: Vec::new(),
            pick: PickArg::RoundRobin,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            failure_threshold: 5,
            success_threshold: 2,
            open_secs: 30,
            engine: Engine::Generic,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            health_check: None,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            client_header_timeout: DEFAULT_CLIENT_HEADER_TIMEOUT,
            retries: 0,
            retry_budget: DEFAULT_RETRY_BUDGET_PERCENT,
            hedge_after: Duration::ZERO,
        }
    }
}

/// Why `serve` cannot start (or stopped).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// No `--upstream` was given.
    #[error("serve needs at least one --upstream URL")]
    NoUpstream,
    /// An `--upstream` is not a usable URL.
    #[error("invalid --upstream URL `{url}`: {reason}")]
    Upstream {
        /// The URL as given (credentials, if any, replaced by `***`).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `--upstream` URL carries credentials (`user:pass@` or `user@`).
    #[error(
        "--upstream URL `{url}` carries credentials: refused (a worker's URL may show up \
         in logs; give the worker its credentials another way)"
    )]
    Credentials {
        /// The URL with its credentials replaced by `***`.
        url: String,
    },
    /// An `--upstream` name is unusable.
    #[error("invalid --upstream name `{name}`: {reason}")]
    Name {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two workers have the same name (the default name is `host:port`).
    #[error(
        "two --upstream workers are named `{0}`: name them (NAME=URL) so that logs and \
         metrics can tell them apart"
    )]
    DuplicateName(String),
    /// A flag's value is unusable.
    #[error("invalid --{flag}: {reason}")]
    Flag {
        /// The flag, without its dashes.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The gateway cannot be built.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The server stopped with an error.
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// `text` with whatever stands before an `@` in its authority replaced by `***`,
/// for error messages.
fn redacted(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let redacted_rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted_rest}"),
        None => redacted_rest,
    }
}

/// Checks one `--upstream` value, `[NAME=]URL`: the URL an `http` URL with a host,
/// no credentials, no query or fragment. Returns the worker: its name (as given, or
/// the URL's `host:port`) and the base the request paths are appended to.
///
/// A `NAME` has no `:`, `/` or whitespace (so `http://h/a=b` is a URL, not a name).
pub fn parse_upstream(spec: &str) -> Result<WorkerSpec, ServeError> {
    let (name, url) = match spec.split_once('=') {
        Some((name, url)) if !name.contains([':', '/']) => (Some(name.trim()), url.trim()),
        _ => (None, spec.trim()),
    };
    let bad = |reason: &str| ServeError::Upstream {
        url: redacted(url),
        reason: reason.to_owned(),
    };
    if let Some(name) = name {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ServeError::Name {
                name: name.to_owned(),
                reason: "a name is not empty and has no spaces".to_owned(),
            });
        }
    }
    if !url.contains("://") {
        return Err(bad(&format!(
            "it has no scheme (did you mean http://{}?)",
            redacted(url)
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(bad(
                "https is not supported by this example (it is built without TLS); \
                 put the worker on http or behind a local TLS terminator",
            ));
        }
        other => return Err(bad(&format!("the scheme must be http, not `{other}`"))),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ServeError::Credentials { url: redacted(url) });
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad("it has no host"));
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a worker's base URL takes no query or fragment"));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let name = name.map_or_else(|| format!("{host}:{port}"), str::to_owned);
    Ok(WorkerSpec {
        name,
        base: parsed.as_str().trim_end_matches('/').to_owned(),
    })
}

/// A running `serve` gateway.
#[derive(Debug)]
pub struct Serving {
    /// The address it listens on (the real port when `--listen` asked for port 0).
    pub addr: SocketAddr,
    gateway: Gateway,
    task: Option<JoinHandle<std::io::Result<()>>>,
    health: Option<JoinHandle<()>>,
}

impl Serving {
    /// The gateway (its breaker states, its metrics: also after it stopped).
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Serves until the server fails, or until the shutdown trigger given to
    /// [`start_until`] fired and the streams in flight ended (within the grace, or
    /// ended by it).
    pub async fn wait(mut self) -> Result<(), ServeError> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(ServeError::Serve),
                Err(join) => Err(ServeError::Serve(std::io::Error::other(join))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(health) = self.health.take() {
            health.abort();
        }
    }
}

/// Checks the flags, binds the listen address and starts serving in a task, until
/// dropped (no shutdown trigger: see [`start_until`]).
pub async fn start(args: &ServeArgs) -> Result<Serving, ServeError> {
    start_until(args, std::future::pending()).await
}

/// The workers of `--upstream`, checked, their names distinct.
pub fn workers(upstreams: &[String]) -> Result<Vec<WorkerSpec>, ServeError> {
    if upstreams.is_empty() {
        return Err(ServeError::NoUpstream);
    }
    let mut names = HashSet::new();
    let mut workers = Vec::new();
    for spec in upstreams {
        let worker = parse_upstream(spec)?;
        if !names.insert(worker.name.clone()) {
            return Err(ServeError::DuplicateName(worker.name));
        }
        workers.push(worker);
    }
    Ok(workers)
}

/// The workers of PD mode: each `--prefill URL [BOOTSTRAP_PORT]` (the port
/// [`DEFAULT_BOOTSTRAP_PORT`] if not given, none for `none`) and each `--decode URL`,
/// checked as `--upstream`, their names distinct across both pools.
///
/// `prefills` is every `--prefill` value in order, as clap collects them (one list
/// for all the flags): a value with `://` starts a worker, and a value without one
/// is the bootstrap port of the worker before it (a port never holds `://`).
pub fn pd_workers(
    prefills: &[String],
    decodes: &[String],
) -> Result<(Vec<PrefillSpec>, Vec<WorkerSpec>), ServeError> {
    if decodes.is_empty() {
        return Err(ServeError::Flag {
            flag: "decode",
            reason: "prefill/decode mode needs at least one --decode URL".to_owned(),
        });
    }
    let mut names = HashSet::new();
    let mut named = |worker: WorkerSpec| {
        if names.insert(worker.name.clone()) {
            Ok(worker)
        } else {
            Err(ServeError::DuplicateName(worker.name))
        }
    };
    let mut grouped: Vec<(&str, Option<&str>)> = Vec::new();
    for value in prefills {
        match grouped.last_mut() {
            Some((_, port @ None)) if !value.contains("://") => *port = Some(value),
            _ if value.contains("://") => grouped.push((value, None)),
            _ => {
                return Err(ServeError::Flag {
                    flag: "prefill",
                    reason: format!(
                        "`{}` is neither a worker's URL nor the bootstrap port of one",
                        redacted(value)
                    ),
                });
            }
        }
    }
    let mut prefill = Vec::new();
    for (url, port) in grouped {
        let bootstrap_port = match port {
            None => Some(DEFAULT_BOOTSTRAP_PORT),
            Some(none) if none.eq_ignore_ascii_case("none") => None,
            Some(port) => Some(port.parse::<u16>().map_err(|_| ServeError::Flag {
                flag: "prefill",
                reason: format!("`{port}` is not a bootstrap port (1-65535, or none)"),
            })?),
        };
        prefill.push(PrefillSpec {
            worker: named(parse_upstream(url)?)?,
            bootstrap_port,
        });
    }
    let decode = decodes
        .iter()
        .map(|spec| named(parse_upstream(spec)?))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((prefill, decode))
}

/// The health check `--health-check` and `--health-interval` ask for, if any.
fn health_check(args: &ServeArgs) -> Result<Option<HealthCheck>, ServeError> {
    let Some(path) = &args.health_check else {
        return Ok(None);
    };
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ServeError::Flag {
            flag: "health-check",
            reason: format!("`{path}` is not a path (it starts with / and has no spaces)"),
        });
    }
    if args.health_interval.is_zero() {
        return Err(ServeError::Flag {
            flag: "health-interval",
            reason: "it must be longer than zero".to_owned(),
        });
    }
    Ok(Some(HealthCheck::new(path.clone(), args.health_interval)))
}

/// The worker's progress timers the flags ask for (a zero one is off).
fn timeouts(args: &ServeArgs) -> Timeouts {
    let mut timeouts = Timeouts::new();
    if !args.first_token_timeout.is_zero() {
        timeouts = timeouts.first_token(args.first_token_timeout);
    }
    if !args.idle_timeout.is_zero() {
        timeouts = timeouts.idle(args.idle_timeout);
    }
    if !args.deadline.is_zero() {
        timeouts = timeouts.deadline(args.deadline);
    }
    timeouts
}

/// Like [`start`], with a shutdown trigger: when `shutdown` resolves, the server
/// stops accepting, lets the streams in flight finish within `--shutdown-grace`,
/// then ends the rest ([`Gateway::end_streams`]: Abandoned, cause `shutdown`), and
/// [`Serving::wait`] returns `Ok`.
pub async fn start_until(
    args: &ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Serving, ServeError> {
    let pd = !args.prefills.is_empty();
    let pools = if pd {
        Some(pd_workers(&args.prefills, &args.decodes)?)
    } else {
        None
    };
    let workers = if pd {
        Vec::new()
    } else {
        workers(&args.upstreams)?
    };
    if pd {
        // Not in PD mode yet: a failed pair is the client's error.
        let unsupported = if args.health_check.is_some() {
            Some("health-check")
        } else if args.retries > 0 {
            Some("retries")
        } else if !args.hedge_after.is_zero() {
            Some("hedge-after")
        } else {
            None
        };
        if let Some(flag) = unsupported {
            return Err(ServeError::Flag {
                flag,
                reason: "not supported in prefill/decode mode yet".to_owned(),
            });
        }
    }
    for (flag, timeout) in [
        ("header-timeout", args.header_timeout),
        ("client-header-timeout", args.client_header_timeout),
    ] {
        if timeout.is_zero() {
            return Err(ServeError::Flag {
                flag,
                reason: "it must be longer than zero".to_owned(),
            });
        }
    }
    let health = health_check(args)?;
    let config = Config::default()
        .failure_threshold(args.failure_threshold)
        .success_threshold(args.success_threshold)
        .open_duration(Duration::from_secs(args.open_secs));
    let options = Options {
        config,
        max_ejected_percent: args.max_ejected_percent,
        pick: args.pick.into(),
        engine: args.engine,
        header_timeout: args.header_timeout,
        timeouts: timeouts(args),
        retries: args.retries,
        retry_budget: RetryBudgetConfig::new().percent(args.retry_budget),
        hedge_after: (!args.hedge_after.is_zero()).then_some(args.hedge_after),
    };
    let gateway = match pools {
        Some((prefill, decode)) => {
            Gateway::new_pd(prefill, decode, options, StdClock::new(), None)?
        }
        None => Gateway::new(workers, options, StdClock::new(), None)?,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen,
        source,
    })?;
    let health = health.map(|check| tokio::spawn(gateway.health_checks(check)));
    let task = tokio::spawn(serve_until(
        listener,
        gateway.clone(),
        shutdown,
        args.shutdown_grace,
        args.client_header_timeout,
    ));
    Ok(Serving {
        addr,
        gateway,
        task: Some(task),
        health,
    })
}

/// Serves until `shutdown`, then for at most the grace (and [`AFTER_GRACE`]).
///
/// HTTP/1.1 through hyper with a timer, so that a client must send each request's
/// head within `client_header_timeout` (from its connection's start, or from the
/// previous answer on a kept-alive connection), or lose the connection: a client
/// that connects and sends nothing, or half a head, holds none for longer.
async fn serve_until(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    client_header_timeout: Duration,
) -> std::io::Result<()> {
    let router = gateway.router();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Each token is a small chunk: copied into one buffer and sent with one `send`,
    // it costs less than a vectored write of the chunk's three parts (hyper's choice
    // on a plain TCP stream): 22k instructions fewer on a stream of 64 tokens.
    http.timer(TokioTimer::new())
        .header_read_timeout(client_header_timeout)
        .writev(false);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => tokio::select! {
                () = accept_failed(&e) => continue,
                () = &mut shutdown => break,
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            // A client that breaks its connection is no error of the gateway's.
            let _ = connection.await;
        });
    }
    drop(listener);
    tracing::info!(
        grace = %format_duration(grace),
        "shutting down: no new connections; streams in flight have the grace to finish"
    );
    let grace_timer = async move {
        tokio::time::sleep(grace).await;
        let in_flight = gateway.end_streams();
        tracing::info!(
            in_flight,
            "shutdown grace over: ending the requests in flight (abandoned, cause shutdown)"
        );
        tokio::time::sleep(AFTER_GRACE).await;
    };
    tokio::select! {
        () = connections.shutdown() => {}
        () = grace_timer => {
            tracing::warn!("connections still open after the grace: stopping without them");
        }
    }
    Ok(())
}

/// After a failed `accept`: a connection that failed before it was accepted is
/// skipped at once; anything else (out of file descriptors) is waited out for a
/// second, rather than retried in a busy loop.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "accept failed; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Resolves at the first SIGTERM or Ctrl-C (SIGINT).
async fn terminate_or_interrupt() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => Some(term),
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}): Ctrl-C only");
                None
            }
        };
        let terminated = async {
            match term.as_mut() {
                Some(term) => drop(term.recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = terminated => tracing::info!("SIGTERM"),
            () = interrupted() => tracing::info!("interrupted"),
        }
    }
    #[cfg(not(unix))]
    interrupted().await;
}

/// Resolves at Ctrl-C; never, without a signal handler.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `serve`: starts, says where it listens, and serves until stopped by SIGTERM or
/// Ctrl-C (then shuts down gracefully and returns `Ok`).
pub async fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let serving = start_until(args, terminate_or_interrupt()).await?;
    let mut routes: Vec<&str> = Api::ALL.iter().map(|api| api.path()).collect();
    routes.dedup(); // the Gemini APIs share one route
    tracing::info!(
        listen = %serving.addr,
        upstreams = %serving.gateway.names().join(", "),
        routes = %routes.join(", "),
        pick = ?args.pick,
        max_ejected_percent = args.max_ejected_percent,
        engine = %args.engine,
        header_timeout = %format_duration(args.header_timeout),
        first_token_timeout = %format_timeout(args.first_token_timeout),
        idle_timeout = %format_timeout(args.idle_timeout),
        deadline = %format_timeout(args.deadline),
        health_check = args.health_check.as_deref().unwrap_or("off"),
        shutdown_grace = %format_duration(args.shutdown_grace),
        client_header_timeout = %format_duration(args.client_header_timeout),
        retries = args.retries,
        retry_budget_percent = args.retry_budget,
        hedge_after = %format_timeout(args.hedge_after),
        "sluice gateway serving (GET /metrics for the metrics)"
    );
    serving.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_host_and_port() {
        let w = parse_upstream("http://127.0.0.1:8000").expect("url");
        assert_eq!(
            (w.name.as_str(), w.base.as_str()),
            ("127.0.0.1:8000", "http://127.0.0.1:8000")
        );
        let w = parse_upstream("http://localhost/v1/").expect("url");
        assert_eq!(
            (w.name.as_str(), w.base.as_str()),
            ("localhost:80", "http://localhost/v1")
        );
        let w = parse_upstream("http://[::1]:9000").expect("url");
        assert_eq!(w.name, "[::1]:9000");
        let w = parse_upstream("alpha=http://10.0.0.1:8000").expect("named");
        assert_eq!(
            (w.name.as_str(), w.base.as_str()),
            ("alpha", "http://10.0.0.1:8000")
        );
        let w = parse_upstream("http://h:1/a=b").expect("an = in the path");
        assert_eq!(
            (w.name.as_str(), w.base.as_str()),
            ("h:1", "http://h:1/a=b")
        );
    }

    #[test]
    fn credentials_are_refused_and_never_echoed() {
        for url in [
            "http://user:hunter2@127.0.0.1:8000",
            "http://user@127.0.0.1:8000",
            "http://:hunter2@127.0.0.1:8000",
            "alpha=http://user:hunter2@127.0.0.1:8000/v1",
        ] {
            let err = parse_upstream(url).expect_err(url);
            assert!(
                matches!(err, ServeError::Credentials { .. }),
                "{url}: {err:?}"
            );
            let message = err.to_string();
            assert!(message.contains("credentials"), "{message}");
            assert!(message.contains("***@127.0.0.1:8000"), "{message}");
            assert!(
                !message.contains("hunter2") && !message.contains("user"),
                "{message}"
            );
        }
        // Without a scheme, the error redacts too.
        let err = parse_upstream("user:hunter2@127.0.0.1:8000").expect_err("no scheme");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_names_and_duplicates_are_refused() {
        let err = parse_upstream("=http://127.0.0.1:1").expect_err("empty name");
        assert!(matches!(err, ServeError::Name { .. }), "{err:?}");
        let err = parse_upstream("a b=http://127.0.0.1:1").expect_err("space");
        assert!(matches!(err, ServeError::Name { .. }), "{err:?}");
        let twice = [
            "http://127.0.0.1:1/a".to_owned(),
            "http://127.0.0.1:1/b".to_owned(),
        ];
        let err = workers(&twice).expect_err("same host:port");
        assert!(
            matches!(&err, ServeError::DuplicateName(n) if n == "127.0.0.1:1"),
            "{err:?}"
        );
        let named = [
            "a=http://127.0.0.1:1/a".to_owned(),
            "b=http://127.0.0.1:1/b".to_owned(),
        ];
        assert_eq!(workers(&named).expect("named apart").len(), 2);
    }
}

//! `serve`: the gateway as a server in front of real workers (vLLM, SGLang,
//! llama.cpp server, or anything that speaks the OpenAI HTTP API; the Anthropic and
//! Responses routes for engines that speak those too).

use std::net::SocketAddr;
use std::time::Duration;

use sluice::breaker::{Config, DEFAULT_MAX_EJECTED_PERCENT, Pick, StdClock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::gateway::{Api, Gateway, GatewayError, Options, WorkerSpec};

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

/// The `serve` flags.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of an upstream worker, e.g. http://127.0.0.1:8000 (repeat the flag
    /// for several workers). The request's path (/v1/chat/completions,
    /// /v1/completions, /v1/messages, /v1/responses) is appended to it.
    #[arg(long = "upstream", value_name = "URL", required = true)]
    pub upstreams: Vec<String>,

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
}

impl ServeArgs {
    /// The defaults of every flag, with these upstreams.
    pub fn new(upstreams: Vec<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstreams,
            pick: PickArg::RoundRobin,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            failure_threshold: 5,
            success_threshold: 2,
            open_secs: 30,
            engine: Engine::Generic,
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
        /// The URL as given.
        url: String,
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

/// Checks one `--upstream` value: an `http` URL with a host, no query or fragment.
/// Returns the base the request paths are appended to.
pub fn parse_upstream(url: &str) -> Result<String, ServeError> {
    let bad = |reason: &str| ServeError::Upstream {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if !url.contains("://") {
        return Err(bad(&format!(
            "it has no scheme (did you mean http://{url}?)"
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
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a worker's base URL takes no query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// A running `serve` gateway.
#[derive(Debug)]
pub struct Serving {
    /// The address it listens on (the real port when `--listen` asked for port 0).
    pub addr: SocketAddr,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Serving {
    /// Serves until the server fails.
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
    }
}

/// Checks the flags, binds the listen address and starts serving in a task.
pub async fn start(args: &ServeArgs) -> Result<Serving, ServeError> {
    if args.upstreams.is_empty() {
        return Err(ServeError::NoUpstream);
    }
    let mut workers = Vec::new();
    for url in &args.upstreams {
        let base = parse_upstream(url)?;
        workers.push(WorkerSpec {
            name: base.clone(),
            base,
        });
    }
    let config = Config::default()
        .failure_threshold(args.failure_threshold)
        .success_threshold(args.success_threshold)
        .open_duration(Duration::from_secs(args.open_secs));
    let options = Options {
        config,
        max_ejected_percent: args.max_ejected_percent,
        pick: args.pick.into(),
        engine: args.engine,
    };
    let gateway = Gateway::new(workers, options, StdClock::new(), None)?;
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
    let router = gateway.router();
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Serving {
        addr,
        task: Some(task),
    })
}

/// `serve`: starts, says where it listens, and serves until stopped or Ctrl-C.
pub async fn run(args: &ServeArgs) -> Result<(), ServeError> {
    let serving = start(args).await?;
    let routes: Vec<&str> = Api::ALL.iter().map(|api| api.path()).collect();
    tracing::info!(
        listen = %serving.addr,
        upstreams = %args.upstreams.join(", "),
        routes = %routes.join(", "),
        pick = ?args.pick,
        max_ejected_percent = args.max_ejected_percent,
        engine = %args.engine,
        "sluice gateway serving (GET /metrics for the metrics)"
    );
    let interrupted = async {
        // Without a signal handler, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serving.wait() => served,
        () = interrupted => {
            tracing::info!("interrupted: stopping (in-flight streams are dropped, their upstreams closed)");
            Ok(())
        }
    }
}

//! `sluice-gateway`: the scripted demo (no subcommand) or the gateway in front of
//! real engines (`serve`). See the library's docs for the routes, logs and engine
//! profiles.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use sluice_gateway::scenarios::{self, Line};
use sluice_gateway::serve::{self, ServeArgs};
use tracing_subscriber::EnvFilter;

/// A model gateway on sluice: honest stream verdicts, cancellation on client close,
/// a circuit breaker per worker with a cap on how many are ejected at once.
///
/// With no subcommand: a scripted demo (mock workers, the gateway, scripted clients,
/// all on 127.0.0.1) that prints a timeline and a ledger and exits. With `serve`: the
/// gateway in front of real OpenAI-compatible (or Anthropic-compatible) engines.
#[derive(Debug, Parser)]
#[command(name = "sluice-gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve real traffic: proxy POST /v1/chat/completions, /v1/completions,
    /// /v1/messages and /v1/responses (streaming or not) to the --upstream workers,
    /// picked among those whose breaker admits the call (503 with Retry-After when
    /// none does), and expose GET /metrics in the OpenMetrics text format. Logs go
    /// to stderr (RUST_LOG filters; default info). SIGTERM or Ctrl-C stops it
    /// gracefully (--shutdown-grace) with exit status 0.
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Serve(args)) => {
            logs(true);
            match runtime.block_on(serve::run(&args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            // The demo prints a timeline; its structured logs only when asked for.
            logs(false);
            demo(&runtime)
        }
    }
}

/// Structured logs on stderr, filtered by `RUST_LOG` (default `info` when
/// `default_on`; off otherwise unless `RUST_LOG` is set).
fn logs(default_on: bool) {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) if default_on => EnvFilter::new("info"),
        Err(_) => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn demo(runtime: &tokio::runtime::Runtime) -> ExitCode {
    let started = Instant::now();
    let mut progress = StatusLine::new();
    println!(
        "sluice gateway demo: mock workers alpha, bravo (flaky), charlie behind one gateway, \
         all on 127.0.0.1.\nEach worker has a circuit breaker: {} failures in a row open it \
         for {}s (on a manual clock), {} good probes close it.",
        scenarios::FAILURE_THRESHOLD,
        scenarios::OPEN_FOR.as_secs(),
        scenarios::SUCCESS_THRESHOLD,
    );
    let result = runtime.block_on(scenarios::run(|line| progress.line(line)));
    progress.clear();
    match result {
        Ok(ledger) => {
            println!("{ledger}");
            println!("done in {:.1}s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: the demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
/// The progress line on stderr: redrawn in place on a terminal, one line per
/// scenario otherwise.
struct StatusLine {
    terminal: bool,
    status: String,
}

impl StatusLine {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            status: String::new(),
        }
    }

    /// Prints a timeline line to stdout, keeping the progress line below it.
    fn line(&mut self, line: &Line) {
        if let Line::Scenario(n, s) = line {
            self.status = format!("[{n}/{}] {} ...", scenarios::Scenario::ALL.len(), s.title());
            if !self.terminal {
                eprintln!("progress: {}", self.status);
            }
        }
        self.clear();
        println!("{line}");
        let _ = std::io::stdout().flush();
        if self.terminal {
            eprint!("{}", self.status);
        }
    }

    /// Erases the progress line (on a terminal).
    fn clear(&self) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;
    use sluice_gateway::engine::Engine;
    use sluice_gateway::serve::PickArg;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_is_the_demo_and_serve_takes_the_flags() {
        let demo = Cli::try_parse_from(["sluice-gateway"]).expect("demo");
        assert!(demo.command.is_none());
        let cli = Cli::try_parse_from([
            "sluice-gateway",
            "serve",
            "--upstream",
            "http://127.0.0.1:8000",
            "--upstream",
            "http://127.0.0.1:8001",
            "--pick",
            "least-in-flight",
            "--max-ejected-percent",
            "34",
            "--engine",
            "sglang",
        ])
        .expect("serve");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.upstreams.len(), 2);
        assert_eq!(args.pick, PickArg::LeastInFlight);
        assert_eq!(args.max_ejected_percent, 34);
        assert_eq!(args.engine, Engine::Sglang);
        let defaults = ServeArgs::new(args.upstreams.clone());
        assert_eq!((args.listen, args.failure_threshold), (defaults.listen, 5));
        assert_eq!(args, defaults_with(&defaults, &args));
        assert_eq!(args.header_timeout, Duration::from_secs(30));
        assert_eq!(args.health_check, None);
        assert_eq!(args.health_interval, Duration::from_secs(5));
        assert_eq!(args.shutdown_grace, Duration::from_secs(30));
        assert_eq!(args.first_token_timeout, Duration::from_secs(60));
        assert_eq!(args.idle_timeout, Duration::from_secs(30));
        assert_eq!(args.deadline, Duration::from_secs(600));
        // serve needs an upstream.
        assert!(Cli::try_parse_from(["sluice-gateway", "serve"]).is_err());
    }

    /// `defaults` with the flags the test above set taken from `args`: the clap
    /// defaults and `ServeArgs::new` agree on every other flag.
    fn defaults_with(defaults: &ServeArgs, args: &ServeArgs) -> ServeArgs {
        ServeArgs {
            pick: args.pick,
            max_ejected_percent: args.max_ejected_percent,
            engine: args.engine,
            ..defaults.clone()
        }
    }

    #[test]
    fn duration_flags_take_units_and_refuse_bare_numbers() {
        let cli = Cli::try_parse_from([
            "sluice-gateway",
            "serve",
            "--upstream",
            "a=http://127.0.0.1:8000",
            "--header-timeout",
            "500ms",
            "--health-check",
            "/health",
            "--health-interval",
            "2m",
            "--shutdown-grace",
            "1h",
            "--first-token-timeout",
            "off",
            "--idle-timeout",
            "0",
            "--deadline",
            "2m",
        ])
        .expect("serve");
        let Some(Command::Serve(args)) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.header_timeout, Duration::from_millis(500));
        assert_eq!(args.health_check.as_deref(), Some("/health"));
        assert_eq!(args.health_interval, Duration::from_secs(120));
        assert_eq!(args.shutdown_grace, Duration::from_secs(3600));
        // A progress timer is switched off by `off` or `0`.
        assert_eq!(args.first_token_timeout, Duration::ZERO);
        assert_eq!(args.idle_timeout, Duration::ZERO);
        assert_eq!(args.deadline, Duration::from_secs(120));
        for flag in [
            "--header-timeout",
            "--health-interval",
            "--shutdown-grace",
            "--first-token-timeout",
            "--idle-timeout",
            "--deadline",
        ] {
            let err = Cli::try_parse_from([
                "sluice-gateway",
                "serve",
                "--upstream",
                "http://127.0.0.1:8000",
                flag,
                "30",
            ])
            .expect_err(flag);
            assert!(err.to_string().contains("no known unit"), "{flag}: {err}");
        }
    }
}

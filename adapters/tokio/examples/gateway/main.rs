//! A model gateway built on sluice, runnable in one command.
//!
//! `cargo run -p sluice-tokio --example gateway` plays a scripted demo in one process
//! on loopback: a mock pool of three inference workers (one flaky), the gateway
//! (axum + reqwest, one circuit breaker per worker) and scripted clients. It prints a
//! timeline (each scenario, each request's verdict, the tokens a worker produced after
//! its client left, each breaker transition and why) and a final ledger, then exits.
//!
//! `--serve --upstream http://127.0.0.1:8000` runs the same gateway as a server in
//! front of real workers; `--help` lists the flags.

mod gateway;
mod metrics;
mod mock;
mod scenarios;
mod serve;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::scenarios::Line;
use crate::serve::ServeArgs;

/// A model gateway on sluice: honest stream verdicts, cancellation on client close,
/// a circuit breaker per worker.
///
/// With no flags: a scripted demo (mock workers, the gateway, scripted clients, all
/// on 127.0.0.1) that prints a timeline and a ledger and exits. With --serve: a
/// gateway in front of real OpenAI-compatible workers.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about, long_about)]
struct Cli {
    /// Serve real traffic: proxy POST /v1/chat/completions and /v1/completions
    /// (streaming or not) to the --upstream workers, round-robin among those whose
    /// breaker admits the call (503 with Retry-After when none does), and expose
    /// GET /metrics in the Prometheus (OpenMetrics) text format.
    #[arg(long, requires = "upstreams")]
    serve: bool,

    #[command(flatten)]
    args: ServeArgs,
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
    if cli.serve {
        return match runtime.block_on(serve::run(&cli.args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    let mut progress = Progress::new();
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
struct Progress {
    terminal: bool,
    status: String,
}

impl Progress {
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

//! `consumer`: join the worker group and process chunks (or, with `game-rounds`, sink
//! game rounds into ClickHouse) until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardflow_config::{Config, telemetry};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "consumer",
    version,
    about = "Join the consumer group: transform and inverse-transform chunks into Parquet, index them in ClickHouse",
    long_about = "Join the consumer group: transform and inverse-transform chunks into Parquet, index them in ClickHouse.\n\n\
                  Start several processes (or use --workers) to share the work; at most one member per topic partition is busy.\n\
                  `consumer game-rounds` runs the other pipeline's sink instead: game rounds from the staging-bets topic into ClickHouse."
)]
struct Cli {
    /// Configuration file layered over config/default.toml (environment SHARDFLOW__SECTION__KEY wins over both).
    #[arg(long, env = "SHARDFLOW_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Group members to run in this process (chunks only; `consumer --workers 3 chunks` and
    /// `consumer chunks --workers 3` mean the same).
    #[arg(long, default_value_t = 1, global = true)]
    workers: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Transform chunks (what `consumer` does with no subcommand).
    Chunks,
    /// Insert game rounds from the rounds topic (staging-bets) into ClickHouse in batches.
    GameRounds,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, stopped) = watch::channel(false);
    let deadline = config.consumer.shutdown_timeout;
    let workers = cli.workers;
    let mut worker = match cli.command {
        None | Some(Command::Chunks) => tokio::spawn(until_started(stopped.clone(), move || {
            let run = shardflow_consumer::worker::run(config.clone(), workers, stopped.clone());
            async move {
                run.await.map_err(|e| {
                    use shardflow_consumer::worker::WorkerError::{Index, Kafka};
                    let waitable = matches!(e, Index(_) | Kafka(_));
                    (e.to_string(), waitable)
                })
            }
        })),
        Some(Command::GameRounds) => tokio::spawn(until_started(stopped.clone(), move || {
            let run = shardflow_rounds::sink::run(config.clone(), stopped.clone());
            async move {
                run.await.map_err(|e| {
                    use shardflow_rounds::sink::SinkError::{Index, Kafka};
                    let waitable = matches!(e, Index(_) | Kafka(_));
                    (e.to_string(), waitable)
                })
            }
        })),
    };
    let finished = tokio::select! {
        finished = &mut worker => finished,
        () = wait_for_signal() => {
            // Stop fetching, finish or abandon the chunk in hand, commit, leave the group.
            let _ = stop.send(true);
            match tokio::time::timeout(deadline, &mut worker).await {
                Ok(finished) => finished,
                Err(_) => {
                    eprintln!("consumer: shutdown deadline of {deadline:?} passed; in-flight chunks stay uncommitted");
                    return ExitCode::SUCCESS;
                }
            }
        }
    };
    match finished {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("consumer: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("consumer: worker panicked: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run `start` until it ends for good: a failure to reach ClickHouse or the broker at
/// start (`(reason, true)`) is tried again with backoff, logged, until they answer or
/// shutdown comes; any other failure is returned.
async fn until_started<F, Fut>(mut stopped: watch::Receiver<bool>, mut start: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), (String, bool)>>,
{
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match start().await {
            Ok(()) => return Ok(()),
            Err((reason, false)) => return Err(reason),
            Err((reason, true)) => tracing::warn!(error = %reason, retry_in = ?backoff, "waiting for the services"),
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

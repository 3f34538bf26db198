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
    let mut worker = match cli.command {
        None | Some(Command::Chunks) => {
            let run = shardflow_consumer::worker::run(config, cli.workers, stopped);
            tokio::spawn(async move { run.await.map_err(|e| e.to_string()) })
        }
        Some(Command::GameRounds) => {
            let run = shardflow_rounds::sink::run(config, stopped);
            tokio::spawn(async move { run.await.map_err(|e| e.to_string()) })
        }
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

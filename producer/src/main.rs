//! `producer`: generate shards, fit a model, publish shards, serve the API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::ProgressBar;
use shardflow_backends::{Config, Index, telemetry};
use shardflow_model::Model;
use shardflow_producer::api::{AppState, serve};
use shardflow_producer::client::ApiClient;
use shardflow_producer::fit::{fit_shards, list_shards, register, write_model};
use shardflow_producer::generate::{GenerateOptions, generate};
use shardflow_producer::publish::Publisher;
use shardflow_producer::shard::{AMOUNT, Shard};

#[derive(Parser)]
#[command(
    name = "producer",
    version,
    about = "Generate shards, fit the transform model, publish shards to Kafka, serve the HTTP API"
)]
struct Cli {
    /// Configuration file layered over config/default.toml (environment SHARDFLOW__SECTION__KEY wins over both).
    #[arg(long, global = true, env = "SHARDFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic Amount_Shard_{1..}.parquet files and a manifest.json.
    Generate {
        /// Rows in all.
        #[arg(long)]
        rows: u64,
        /// Rows per shard.
        #[arg(long, default_value_t = 10_000_000)]
        shard_rows: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed: the same seed gives the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fit the transform on a sample of every shard in a directory; write model.json and metadata.json; register the model.
    Fit {
        /// Directory of *.parquet shards.
        #[arg(long)]
        shards: PathBuf,
        /// Directory to write model.json and metadata.json into.
        #[arg(long)]
        out: PathBuf,
        /// Rows sampled per shard (default from config: fit.sample_rows_per_shard).
        #[arg(long)]
        sample_rows: Option<usize>,
        /// Do not register the model in ClickHouse.
        #[arg(long)]
        no_register: bool,
    },
    /// Publish shards as jobs: one Kafka message per chunk, transformed with a registered model.
    Publish {
        /// Parquet shards.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Model id (default: the latest registered for the dataset).
        #[arg(long)]
        model: Option<String>,
    },
    /// Inspect fitted models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Serve the HTTP API.
    Serve,
    /// List jobs from a running API, newest first.
    Jobs {
        /// Only jobs in this status: publishing, running, done, done_with_dead_letters, failed.
        #[arg(long)]
        status: Option<String>,
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Jobs to show.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// The API (default: http://<api.listen>).
        #[arg(long)]
        api: Option<String>,
    },
    /// Show one job from a running API; --watch follows it with a progress bar until it ends.
    Job {
        /// Job id.
        id: String,
        /// Follow the job until it is done or failed (exit 1 if it fails or has dead letters).
        #[arg(long)]
        watch: bool,
        /// The API (default: http://<api.listen>).
        #[arg(long)]
        api: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print a model's components as a table: weight, mean, standard deviation, kept or not.
    Show {
        /// A registered model id, or the path of a model.json.
        id: String,
    },
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!("{what} [{{bar:40}}] {{human_pos}}/{{human_len}} ({{per_sec}}, eta {{eta}})");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

fn threads() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("producer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Generate { rows, shard_rows, out, seed } => {
            let bar = progress(rows, "generate");
            let opts = GenerateOptions { rows, shard_rows, out: out.clone(), seed, threads: threads() };
            let manifest = tokio::task::spawn_blocking(move || generate(&opts, &bar)).await??;
            println!("wrote {} rows in {} shards to {}", manifest.rows, manifest.shards.len(), out.display());
        }
        Command::Fit { shards, out, sample_rows, no_register } => {
            let mut fit_config = config.fit.clone();
            if let Some(n) = sample_rows {
                fit_config.sample_rows_per_shard = n;
            }
            let files = list_shards(&shards)?;
            let bar = progress(files.len() as u64, "sample shards");
            let (model, metadata) =
                tokio::task::spawn_blocking(move || fit_shards(&files, AMOUNT, &fit_config, threads(), &bar)).await??;
            write_model(&out, &model, &metadata)?;
            if !no_register {
                let index = Index::connect(&config.clickhouse).await?;
                register(&index, &out, &model, &metadata).await?;
            }
            let column = &model.columns[0];
            println!(
                "model {} fitted on {} sampled rows: {} of {} components valid; wrote {}",
                model.model_id,
                metadata.columns[0].sampled,
                column.one_hot.len(),
                column.mixture.weights.len(),
                out.join("model.json").display()
            );
        }
        Command::Publish { files, model } => {
            // Check every shard before publishing any, keeping their row counts.
            let rows = files.iter().map(|f| Shard::open(f, AMOUNT).map(|s| s.rows())).collect::<Result<Vec<_>, _>>()?;
            let index = Index::connect(&config.clickhouse).await?;
            let row = match &model {
                Some(id) => index.model(id).await?.with_context(|| format!("no registered model {id}"))?,
                None => match index.latest_model(AMOUNT).await? {
                    Some(row) => row,
                    None => bail!("no model registered for {AMOUNT}: run `producer fit` first"),
                },
            };
            let model = Model::from_json(&row.model_json)?;
            let publisher = Publisher::new(&config, index).await?;
            for (file, rows) in files.into_iter().zip(rows) {
                let bar = progress(rows, "publish");
                let done = publisher.publish(&file, &model, &bar).await?;
                bar.finish_and_clear();
                println!(
                    "job {} published {} rows in {} chunks from {}",
                    done.job_id,
                    done.rows,
                    done.chunks,
                    file.display()
                );
            }
        }
        Command::Model(ModelCommand::Show { id }) => {
            let model = if std::path::Path::new(&id).is_file() {
                Model::from_json(&std::fs::read_to_string(&id).with_context(|| format!("reading {id}"))?)?
            } else {
                let index = Index::connect(&config.clickhouse).await?;
                let row = index.model(&id).await?.with_context(|| format!("no registered model {id}"))?;
                Model::from_json(&row.model_json)?
            };
            print!("{}", describe(&model));
        }
        Command::Jobs { status, dataset, limit, api } => {
            let client = ApiClient::new(&api.unwrap_or_else(|| default_api(&config)));
            let mut params = vec![("page_size", limit.to_string())];
            params.extend(status.map(|s| ("status", s)));
            params.extend(dataset.map(|d| ("dataset", d)));
            print!("{}", client.jobs_table(&params).await?);
        }
        Command::Job { id, watch, api } => {
            let client = ApiClient::new(&api.unwrap_or_else(|| default_api(&config)));
            print!("{}", client.job(&id, watch).await?);
        }
        Command::Serve => {
            let listen = config.api.listen;
            let state = AppState::new(config).await?;
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            tracing::info!(%listen, "API listening");
            serve(listener, state, shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// The configured API address as a URL (an unspecified address means this machine).
fn default_api(config: &Config) -> String {
    let mut address = config.api.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}")
}

/// The model as a table, one row per mixture component.
fn describe(model: &Model) -> String {
    let mut out = format!("model {} (dataset {}, format {})\n", model.model_id, model.dataset, model.format_version);
    for column in &model.columns {
        let m = &column.mixture;
        out += &format!(
            "\ncolumn {} ({:?}): {} of {} components kept, {} iterations, converged: {}, lower bound {:.6}\n",
            column.name,
            column.kind,
            column.one_hot.len(),
            m.weights.len(),
            m.n_iter,
            m.converged,
            m.lower_bound
        );
        out += &format!("{:>9} {:>10} {:>14} {:>14} {:>8}\n", "component", "weight", "mean", "std", "one-hot");
        for k in 0..m.weights.len() {
            let slot = column.one_hot.iter().position(|&j| j == k).map_or("-".to_string(), |p| p.to_string());
            out += &format!("{k:>9} {:>10.6} {:>14.6} {:>14.6} {slot:>8}\n", m.weights[k], m.means[k], m.stds[k]);
        }
    }
    out
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

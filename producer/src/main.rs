//! `producer`: generate shards, fit a model, publish shards, serve the API.

mod client;
mod convert;
mod inspect;
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::client::ApiClient;
use crate::convert::{Convert, convert};
use crate::inspect::{describe_with, load_model, load_with_metadata};
use crate::plot::{pick, plot};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::ProgressBar;
use shardflow_api::serve_starting;
use shardflow_config::{Config, FitStrategy, telemetry};
use shardflow_generate::{
    CreativeOptions, GenerateOptions, StocksOptions, creative_version, creative_versions, generate,
    generate_creative_packs, generate_stocks,
};
use shardflow_jobs::fit::{dataset_of, file_names, fit, record_dataset, register, write_model};
use shardflow_jobs::group_fit::{fit_on_group, requested_name};
use shardflow_jobs::service::JobService;
use shardflow_model::Model;
use shardflow_storage::shard::{AMOUNT, Shard};
use shardflow_storage::table::list_table_shards;
use shardflow_store::{Index, model_source};

use shardflow_pipeline::run::{Runner, STOCKS, StocksParams};
use shardflow_store::lineage::Lineage;

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
    /// Write a synthetic dataset: Amount_Shard_{1..}.parquet files and a manifest.json (the default), a new
    /// version of the creative-packs dataset (dataset_v{V}.parquet, dataset_v{V}.tfrecord, metadata_v{V}.json),
    /// or the stocks dataset (etfs/<SYMBOL>.parquet, stocks/<SYMBOL>.parquet, symbols.parquet, manifest.json).
    Generate {
        /// Dataset to write.
        #[arg(long, value_enum, default_value_t = DatasetKind::Amount)]
        dataset: DatasetKind,
        /// Rows in all (required for amount; creative-packs: 10000000, stocks: 1000000 when not given).
        #[arg(long)]
        rows: Option<u64>,
        /// Rows per shard (amount; default 10000000).
        #[arg(long)]
        shard_rows: Option<u64>,
        /// Symbols, one in five (at least one) an ETF, the rows split evenly between them (stocks; default 100).
        #[arg(long)]
        symbols: Option<usize>,
        /// Target stores (creative-packs; default 10).
        #[arg(long)]
        target_stores: Option<usize>,
        /// Creative packs, each in one random target store (creative-packs; default 100).
        #[arg(long)]
        creative_packs: Option<usize>,
        /// Version to write (creative-packs; default: the next free one). An existing version is refused.
        #[arg(long)]
        version: Option<u32>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed: the same seed gives the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List and show the versions of a creative-packs directory.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Fit the transform on a sample of every shard in a directory; write model.json and metadata.json; register the model.
    ///
    /// Shards of one numeric `Amount` column fit as before; any other table (several columns, CSV, or columns named
    /// in fit.columns / fit.kinds / fit.modes) is fitted column by column, each kind given or inferred.
    Fit {
        /// Directory of *.parquet or *.csv shards.
        #[arg(long)]
        shards: PathBuf,
        /// Dataset name recorded in the model (default: `Amount` for Amount shards, else the directory's name).
        #[arg(long)]
        dataset: Option<String>,
        /// Directory to write model.json and metadata.json into.
        #[arg(long)]
        out: PathBuf,
        /// Rows sampled per shard (default from config: fit.sample_rows_per_shard).
        #[arg(long)]
        sample_rows: Option<std::num::NonZeroUsize>,
        /// How the shards make one mixture: pooled, warm-start, streaming, or every-row (every row of every
        /// shard, exact statistics on a fine grid) (default from config: fit.strategy).
        #[arg(long, value_parser = parse_strategy)]
        strategy: Option<FitStrategy>,
        /// Do not register the model in ClickHouse.
        #[arg(long)]
        no_register: bool,
        /// Have the consumer group do the reading: one task per shard on the chunk topic, each shard sampled
        /// (and, for every-row, histogrammed) by whichever member gets it, from its own data roots. The shards
        /// must lie under a data root (storage.data_roots), where every member finds them by the same relative
        /// path; the model is the one the local fit makes, bit for bit.
        #[arg(long)]
        on_group: bool,
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
    /// Run pipelines of stages with lineage (docs/pipelines.md).
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Run SQL over one file and write the result in any format, or show its first rows.
    ///
    /// The input (CSV with its schema inferred, Parquet, NDJSON, Arrow IPC or Avro; a path or an s3://, az://,
    /// gs:// URL, credentials from [storage.s3|azure|gcs] and the environment) is the table `data`. The result
    /// streams batch by batch into the output (format from --format or its extension), with no row cap.
    Convert {
        /// The file to read: a path or a URL.
        #[arg(long)]
        input: String,
        /// Where to write the result: a path or a URL (without it, the first rows are shown).
        #[arg(long)]
        output: Option<String>,
        /// The query over the table `data`.
        #[arg(long, default_value = shardflow_query::SELECT_ALL)]
        sql: String,
        /// The output's format: csv, parquet, json (newline-delimited), arrow (IPC file) or avro (default: from
        /// the output's extension).
        #[arg(long)]
        format: Option<String>,
        /// The input's format (default: from its extension).
        #[arg(long)]
        input_format: Option<String>,
        /// The CSV input's field delimiter: one character, or `tab` (default `,`; `tab` for .tsv).
        #[arg(long)]
        delimiter: Option<String>,
        /// The CSV input has no header line (columns are then column_1, column_2, ...).
        #[arg(long)]
        no_header: bool,
        /// Print the first N rows of the result as a table on stdout (default: 20 without --output, else 0).
        #[arg(long)]
        show: Option<usize>,
        /// Memory the query's operators may hold, in bytes (K, M, G suffixes); sorts and aggregations spill to
        /// disk beyond it.
        #[arg(long, default_value = "1G")]
        memory_limit: String,
    },
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

/// The datasets `producer generate` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DatasetKind {
    /// Amount shards.
    Amount,
    /// Versioned creative-packs labels (Parquet and TFRecord).
    CreativePacks,
    /// Daily prices and volumes of ETFs and stocks, one Parquet file per symbol, with nulls and duplicates.
    Stocks,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// One line per version: version, rows, created, files.
    Versions {
        /// The directory `producer generate --dataset creative-packs --out` wrote.
        dir: PathBuf,
    },
    /// Print a version's metadata (probabilities per target store and pair, seed, rows, files and SHA-256) as JSON.
    Show {
        /// The directory `producer generate --dataset creative-packs --out` wrote.
        dir: PathBuf,
        /// The version.
        #[arg(long)]
        version: u32,
    },
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Run a pipeline: for `stocks`, features for ETFs and stocks at once, their merge, a random forest trained
    /// on a sample, registered as a model; a stage whose inputs, parameters and code are unchanged since it last
    /// succeeded is skipped. Prints each stage's status and the run's JSON report; fails with the failed stage's reason.
    Run {
        /// The pipeline.
        #[arg(value_enum)]
        pipeline: PipelineName,
        /// A directory `producer generate --dataset stocks` wrote (default: generate one, --rows and --symbols).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Rows to generate (without --input; default 1000000).
        #[arg(long)]
        rows: Option<u64>,
        /// Symbols to generate (without --input; default 100).
        #[arg(long)]
        symbols: Option<usize>,
        /// Seed of the generator, the sample, the split and the forest (default 42).
        #[arg(long)]
        seed: Option<u64>,
        /// Trees (default 100).
        #[arg(long)]
        trees: Option<usize>,
        /// Rows sampled from the merged features to train and test on (default 200000).
        #[arg(long)]
        sample_rows: Option<usize>,
        /// Fewest rows in a leaf (default 5).
        #[arg(long)]
        min_samples_leaf: Option<usize>,
        /// Where stage outputs go (default: pipelines/<pipeline> under the first local data root).
        #[arg(long)]
        work: Option<PathBuf>,
    },
}

/// The pipelines `producer pipeline run` knows.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PipelineName {
    /// Stock-market features, a random forest predicting Volume, registered.
    Stocks,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print a model: per column its kind (given or inferred) and its components, modal slots or categories.
    Show {
        /// A registered model id, a model directory, or the path of a model.json.
        id: String,
    },
    /// Make a registered model the one its dataset's jobs use (a dataset's first model is used until then).
    Use {
        /// A registered model id.
        id: String,
    },
    /// Write a PNG of a shard column's histogram with the fitted mixture density drawn over it.
    Plot {
        /// A registered model id, a model directory, or the path of a model.json.
        id: String,
        /// A Parquet or CSV shard holding the column.
        #[arg(long)]
        shard: PathBuf,
        /// Column to plot (default: the model's first continuous or mixed column).
        #[arg(long)]
        column: Option<String>,
        /// Output PNG (default: `model-<id>-<column>.png` in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A `--strategy` value: the configuration's names, with `-` or `_` between words.
fn parse_strategy(name: &str) -> Result<FitStrategy, String> {
    serde_json::from_value(serde_json::Value::String(name.replace('-', "_")))
        .map_err(|_| format!("unknown strategy `{name}` (pooled, warm-start, streaming, every-row)"))
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
        Command::Generate { dataset, rows, shard_rows, symbols, target_stores, creative_packs, version, out, seed } => {
            if symbols.is_some() && !matches!(dataset, DatasetKind::Stocks) {
                bail!("--symbols applies to --dataset stocks only");
            }
            match dataset {
                DatasetKind::Amount => {
                    if target_stores.is_some() || creative_packs.is_some() || version.is_some() {
                        bail!("--target-stores, --creative-packs and --version apply to --dataset creative-packs only");
                    }
                    let rows = rows.context("--rows is required for --dataset amount")?;
                    let shard_rows = shard_rows.unwrap_or(10_000_000);
                    let bar = progress(rows, "generate");
                    let opts = GenerateOptions { rows, shard_rows, out: out.clone(), seed, threads: threads() };
                    let manifest = tokio::task::spawn_blocking(move || generate(&opts, &bar)).await??;
                    println!("wrote {} rows in {} shards to {}", manifest.rows, manifest.shards.len(), out.display());
                }
                DatasetKind::CreativePacks => {
                    let defaults = CreativeOptions::new(out);
                    let opts = CreativeOptions {
                        rows: rows.unwrap_or(defaults.rows),
                        target_stores: target_stores.unwrap_or(defaults.target_stores),
                        creative_packs: creative_packs.unwrap_or(defaults.creative_packs),
                        version,
                        seed,
                        ..defaults
                    };
                    let bar = progress(opts.rows, "generate");
                    let out = opts.out.clone();
                    let metadata = tokio::task::spawn_blocking(move || generate_creative_packs(&opts, &bar)).await??;
                    println!(
                        "wrote version {} of creative-packs to {}: {} rows, {} target stores, {} creative packs",
                        metadata.version,
                        out.display(),
                        metadata.rows,
                        metadata.target_stores.len(),
                        metadata.pairs.len()
                    );
                }
                DatasetKind::Stocks => {
                    if target_stores.is_some() || creative_packs.is_some() || version.is_some() || shard_rows.is_some()
                    {
                        bail!(
                            "--shard-rows, --target-stores, --creative-packs and --version do not apply to --dataset stocks"
                        );
                    }
                    let defaults = StocksOptions::new(out);
                    let opts = StocksOptions {
                        rows: rows.unwrap_or(defaults.rows),
                        symbols: symbols.unwrap_or(defaults.symbols),
                        seed,
                        ..defaults
                    };
                    let bar = progress(opts.rows, "generate");
                    let out = opts.out.clone();
                    let manifest = tokio::task::spawn_blocking(move || generate_stocks(&opts, &bar)).await??;
                    println!(
                        "wrote stocks to {}: {} rows ({} with a null, {} duplicated) of {} ETFs and {} stocks",
                        out.display(),
                        manifest.rows,
                        manifest.nulls,
                        manifest.duplicates,
                        manifest.etfs,
                        manifest.stocks
                    );
                }
            }
        }
        Command::Dataset(DatasetCommand::Versions { dir }) => {
            let versions = creative_versions(&dir)?;
            if versions.is_empty() {
                eprintln!("no versions in {}", dir.display());
            }
            for metadata in versions {
                println!("{}", metadata.summary());
            }
        }
        Command::Dataset(DatasetCommand::Show { dir, version }) => {
            println!("{}", serde_json::to_string_pretty(&creative_version(&dir, version)?)?);
        }
        Command::Fit { shards, out, dataset, sample_rows, strategy, no_register, on_group } => {
            let mut fit_config = config.fit.clone();
            if let Some(n) = sample_rows {
                fit_config.sample_rows_per_shard = n;
            }
            if let Some(strategy) = strategy {
                fit_config.strategy = strategy;
            }
            let files = list_table_shards(&shards)?;
            let bar = progress(files.len() as u64, "sample shards");
            let name = match dataset {
                Some(name) => name,
                None => dataset_of(&shards, &files, &fit_config)?,
            };
            let (model, metadata) = if on_group {
                let storage = shardflow_api::open_storage(&config)?;
                let roots = storage.local_roots();
                let names: Vec<String> = files.iter().map(|f| requested_name(&roots, f)).collect();
                if let Some(outside) = names.iter().find(|n| std::path::Path::new(n).is_absolute()) {
                    bail!(
                        "--on-group: {outside} is under no data root (storage.data_roots), so members cannot find it"
                    );
                }
                let group = Config { fit: fit_config, ..config.clone() };
                let (model, metadata, report) =
                    fit_on_group(&group, &storage, &names, &file_names(&files), &name, &bar).await?;
                bar.finish_and_clear();
                let by: Vec<String> = report.tasks_by_worker.iter().map(|(w, n)| format!("{w}: {n}")).collect();
                println!(
                    "fit {} on consumer group {}: {} tasks by {} members ({})",
                    report.fit_id,
                    config.kafka.group_id,
                    report.tasks_by_worker.values().sum::<usize>(),
                    report.tasks_by_worker.len(),
                    by.join(", ")
                );
                (model, metadata)
            } else {
                tokio::task::spawn_blocking(move || fit(&files, &name, &fit_config, threads(), &bar)).await??
            };
            write_model(&out, &model, &metadata)?;
            if !no_register {
                let index = Index::connect(&config.clickhouse).await?;
                register(&index, &out, &model, &metadata).await?;
                match index.dataset(&model.dataset).await? {
                    Some(d) if d.model_id != model.model_id => println!(
                        "dataset {} keeps using model {}; `producer model use {}` switches it",
                        d.name, d.model_id, model.model_id
                    ),
                    _ => println!("dataset {} uses model {}", model.dataset, model.model_id),
                }
            }
            let sampled = metadata.columns.first().map_or(0, |c| c.sampled);
            println!(
                "model {} fitted on {sampled} sampled rows; wrote {}",
                model.model_id,
                out.join("model.json").display()
            );
            for column in &model.columns {
                let source = column.kind_source.map_or(String::new(), |s| format!(" ({s})"));
                let shape = match &column.mixture {
                    Some(m) => format!("{} of {} components valid", column.one_hot.len(), m.weights.len()),
                    None => format!("{} categories", column.categories.len()),
                };
                let modes = if column.modes.is_empty() {
                    String::new()
                } else {
                    format!(", {} modal slots", column.modes.len())
                };
                println!("  {}: {}{source}, {shape}{modes}", column.name, column.kind);
            }
        }
        Command::Publish { files, model } => {
            // Check every shard before publishing any, keeping their row counts.
            let rows = files.iter().map(|f| Shard::open(f, AMOUNT).map(|s| s.rows())).collect::<Result<Vec<_>, _>>()?;
            let index = Index::connect(&config.clickhouse).await?;
            let storage = shardflow_api::open_storage(&config)?;
            let service = JobService::new(config.clone(), index.clone(), storage).await?;
            let model = match &model {
                Some(id) => service.model(id).await?,
                None => match service.dataset_model(AMOUNT).await? {
                    Some(model) => model,
                    None => bail!("no model registered for {AMOUNT}: run `producer fit` first"),
                },
            };
            for (file, rows) in files.into_iter().zip(rows) {
                let bar = progress(rows, "publish");
                let done = service.publish_now(&file, &model, &bar).await?;
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
        Command::Pipeline(PipelineCommand::Run {
            pipeline: PipelineName::Stocks,
            input,
            rows,
            symbols,
            seed,
            trees,
            sample_rows,
            min_samples_leaf,
            work,
        }) => {
            let defaults = StocksParams::default();
            let params = StocksParams {
                input,
                rows: rows.unwrap_or(defaults.rows),
                symbols: symbols.unwrap_or(defaults.symbols),
                seed: seed.unwrap_or(defaults.seed),
                trees: trees.unwrap_or(defaults.trees),
                sample_rows: sample_rows.unwrap_or(defaults.sample_rows),
                min_samples_leaf: min_samples_leaf.unwrap_or(defaults.min_samples_leaf),
                ..defaults
            };
            params.check()?;
            let index = Index::connect(&config.clickhouse).await?;
            let storage = shardflow_api::open_storage(&config)?;
            let work = match work {
                Some(work) => work,
                None => config.storage.local_data_root().context("no local data root")?.join("pipelines").join(STOCKS),
            };
            let runner = Runner::new(index.clone(), Lineage::new(index, &config.lineage), work, storage.models);
            let run_id = Runner::new_run_id();
            let report = runner.run_stocks(&run_id, &params).await?;
            for stage in &report.stages {
                let summary = stage.outputs.as_ref().map(|o| o.summary.to_string()).unwrap_or_default();
                println!("{:<16} {:<9} {:>8.2}s {summary}", stage.stage, stage.status, stage.seconds);
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(error) = report.error {
                bail!("pipeline run {run_id} failed: {error}");
            }
        }
        Command::Model(ModelCommand::Use { id }) => {
            let index = Index::connect(&config.clickhouse).await?;
            let Some(row) = index.model(&id).await? else { bail!("no registered model {id}") };
            let model = Model::from_json(&row.model_json)?;
            let dataset = record_dataset(&index, &model, model_source::USE).await?;
            println!("dataset {} now uses model {}", dataset.name, dataset.model_id);
        }
        Command::Model(ModelCommand::Show { id }) => {
            let (model, metadata) = load_with_metadata(&id, &config).await?;
            print!("{}", describe_with(&model, metadata.as_ref()));
        }
        Command::Model(ModelCommand::Plot { id, shard, column, out }) => {
            let model = load_model(&id, &config).await?;
            let out = out.unwrap_or_else(|| {
                let name = pick(&model, column.as_deref()).map(|c| c.name.clone()).unwrap_or_default();
                PathBuf::from(format!("model-{}-{name}.png", model.model_id))
            });
            let shown = out.display().to_string();
            let done = tokio::task::spawn_blocking(move || plot(&model, column.as_deref(), &shard, &out)).await??;
            println!(
                "wrote {shown}: column {} ({} values binned, {} modal or null left out)",
                done.column, done.values, done.modal
            );
        }
        Command::Convert { input, output, sql, format, input_format, delimiter, no_header, show, memory_limit } => {
            let args = Convert { input, output, sql, format, input_format, delimiter, no_header, show, memory_limit };
            convert(&config, args).await?;
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
            config.api.check_exposure()?;
            let listen = config.api.listen;
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            tracing::info!(%listen, "API listening");
            // Waits for ClickHouse and the broker (with /readyz 503) rather than exiting.
            serve_starting(listener, config, shutdown_signal()).await?;
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

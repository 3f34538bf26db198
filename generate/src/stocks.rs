//! The stocks dataset: daily prices and volumes of ETFs and stocks, in the schema of the
//! Kaggle "stock market dataset" (one file per symbol), with dirt for a cleaning stage.
//!
//! Layout under the output directory: `etfs/<SYMBOL>.parquet`, `stocks/<SYMBOL>.parquet`,
//! `symbols.parquet` (`Symbol`, `Security Name`, `ETF` as `Y`/`N`, sorted by symbol) and
//! `manifest.json` ([`StocksManifest`]). A symbol file has the columns `Symbol`,
//! `Security Name`, `Date` (Utf8, `YYYY-MM-DD`, weekdays), `Open`, `High`, `Low`, `Close`,
//! `Adj Close` (Float64) and `Volume` (Int64).
//!
//! Every symbol covers a contiguous range of weekdays ending on [`LAST_DATE`]. Its close
//! is a geometric random walk with drift whose volatility clusters (GARCH(1,1)), reflected
//! to stay between $1 and $5,000; the open gaps from the previous close, the high and low
//! lie beyond both, and `Adj Close` is the close times a factor of the symbol's, at most 1.
//! `Volume` is a dollar volume of the symbol's divided by the close, times a factor that
//! grows with the recent absolute returns (an exponential average), times log-normal noise:
//! its recent mean and the price level both tell something about it.
//!
//! Dirt: about [`NULL_RATE`] of the rows have one null among the prices and `Volume`, and
//! about [`DUPLICATE_RATE`] of the rows repeat the row before them exactly (never a row
//! with a null). The manifest counts both per file.
//!
//! Symbol `i` (ETFs first, then stocks) draws from its own generator seeded by (seed, i),
//! and files are written in parallel on the current rayon pool: the bytes are the same
//! whatever the thread count.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use chrono::{Datelike, Days, NaiveDate, Weekday};
use indicatif::ProgressBar;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use shardflow_storage::write_atomically;

use crate::{GenerateError, ROW_GROUP_ROWS, shard_seed};

/// The dataset's name in its manifest and on the command line.
pub const DATASET: &str = "stocks";
/// The generator's name in the manifest.
pub const GENERATOR: &str = "shardflow-generate stocks";
/// Version of this generator; changes whenever the same seed would give other bytes.
pub const STOCKS_GENERATOR_VERSION: u32 = 1;
/// Rows in all when not given.
pub const DEFAULT_ROWS: u64 = 1_000_000;
/// Symbols when not given: 20 ETFs and 80 stocks.
pub const DEFAULT_SYMBOLS: usize = 100;
/// The last trading day of every symbol (the Kaggle dataset's last day).
pub const LAST_DATE: &str = "2020-04-01";
/// Share of rows with one null among the prices and `Volume`.
pub const NULL_RATE: f64 = 0.005;
/// Share of rows that repeat the row before them.
pub const DUPLICATE_RATE: f64 = 0.005;
/// The subdirectories of ETFs and of stocks.
pub const ETFS_DIR: &str = "etfs";
/// See [`ETFS_DIR`].
pub const STOCKS_DIR: &str = "stocks";
/// The symbols file.
pub const SYMBOLS_FILE: &str = "symbols.parquet";

/// Column names of the symbol files.
pub const SYMBOL: &str = "Symbol";
/// See [`SYMBOL`].
pub const SECURITY_NAME: &str = "Security Name";
/// See [`SYMBOL`].
pub const DATE: &str = "Date";
/// See [`SYMBOL`].
pub const OPEN: &str = "Open";
/// See [`SYMBOL`].
pub const HIGH: &str = "High";
/// See [`SYMBOL`].
pub const LOW: &str = "Low";
/// See [`SYMBOL`].
pub const CLOSE: &str = "Close";
/// See [`SYMBOL`].
pub const ADJ_CLOSE: &str = "Adj Close";
/// See [`SYMBOL`].
pub const VOLUME: &str = "Volume";
/// The column of `symbols.parquet` saying whether a symbol is an ETF (`Y`) or not (`N`).
pub const ETF: &str = "ETF";

const MAX_ROWS: u64 = 1_000_000_000_000;
const MAX_SYMBOLS: usize = 100_000;
const BATCH_ROWS: usize = 65_536;
const PRICE_FLOOR: f64 = 1.0;
const PRICE_CEILING: f64 = 5_000.0;
/// GARCH(1,1) weights of the last squared return and the last variance.
const GARCH: (f64, f64) = (0.08, 0.90);
/// Weight of the last day in the volume's average of absolute returns.
const ACTIVITY_WEIGHT: f64 = 0.1;
/// E|Z| of a standard normal: scales absolute returns to an activity of about 1.
const MEAN_ABS_NORMAL: f64 = 0.797_884_560_802_865_4;
const VOLUME_NOISE: f64 = 0.35;

/// What to generate.
#[derive(Clone, Debug)]
pub struct StocksOptions {
    /// Rows in all (every symbol file's rows, duplicates and rows with nulls included).
    pub rows: u64,
    /// Symbols: one in five (at least one) is an ETF, the rest stocks.
    pub symbols: usize,
    /// Seed: the same seed gives the same bytes.
    pub seed: u64,
    /// The output directory.
    pub out: PathBuf,
}

impl StocksOptions {
    /// The defaults ([`DEFAULT_ROWS`], [`DEFAULT_SYMBOLS`], seed 0) into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self { rows: DEFAULT_ROWS, symbols: DEFAULT_SYMBOLS, seed: 0, out: out.into() }
    }

    fn check(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Invalid(m));
        if !(2..=MAX_SYMBOLS).contains(&self.symbols) {
            return bad(format!("--symbols must be between 2 and {MAX_SYMBOLS}"));
        }
        if self.rows < self.symbols as u64 || self.rows > MAX_ROWS {
            return bad(format!("--rows must be between --symbols ({}) and 10^12", self.symbols));
        }
        Ok(())
    }
}

/// ETFs among `symbols` symbols: one in five, at least one.
pub fn etf_count(symbols: usize) -> usize {
    (symbols / 5).max(1)
}

/// `manifest.json`: how a stocks directory was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StocksManifest {
    /// [`DATASET`].
    pub dataset: String,
    /// [`GENERATOR`].
    pub generator: String,
    /// [`STOCKS_GENERATOR_VERSION`].
    pub generator_version: u32,
    /// Seed.
    pub seed: u64,
    /// Symbols in all.
    pub symbols: usize,
    /// ETFs among them.
    pub etfs: usize,
    /// Stocks among them.
    pub stocks: usize,
    /// Rows in all symbol files.
    pub rows: u64,
    /// Rows with a null.
    pub nulls: u64,
    /// Rows that repeat the row before them.
    pub duplicates: u64,
    /// The last date of every symbol.
    pub last_date: String,
    /// The symbol files, ETFs first, in the order their generators are numbered.
    pub files: Vec<SymbolFile>,
}

/// One symbol file in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SymbolFile {
    /// Path under the output directory (`etfs/SPY.parquet`).
    pub file: String,
    /// The symbol.
    pub symbol: String,
    /// Rows in the file.
    pub rows: u64,
    /// Rows with a null.
    pub nulls: u64,
    /// Rows that repeat the row before them.
    pub duplicates: u64,
    /// The first date.
    pub first_date: String,
}

/// The schema of a symbol file.
pub fn symbol_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SYMBOL, DataType::Utf8, false),
        Field::new(SECURITY_NAME, DataType::Utf8, false),
        Field::new(DATE, DataType::Utf8, false),
        Field::new(OPEN, DataType::Float64, true),
        Field::new(HIGH, DataType::Float64, true),
        Field::new(LOW, DataType::Float64, true),
        Field::new(CLOSE, DataType::Float64, true),
        Field::new(ADJ_CLOSE, DataType::Float64, true),
        Field::new(VOLUME, DataType::Int64, true),
    ]))
}

/// The schema of `symbols.parquet`.
pub fn symbols_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SYMBOL, DataType::Utf8, false),
        Field::new(SECURITY_NAME, DataType::Utf8, false),
        Field::new(ETF, DataType::Utf8, false),
    ]))
}

/// A symbol to write.
struct Listing {
    symbol: String,
    name: String,
    etf: bool,
    rows: u64,
}

impl Listing {
    fn file(&self) -> String {
        let dir = if self.etf { ETFS_DIR } else { STOCKS_DIR };
        format!("{dir}/{}.parquet", self.symbol)
    }
}

const STOCK_WORDS: [&str; 24] = [
    "Apex",
    "Blue Ridge",
    "Cedar",
    "Delta",
    "Evergreen",
    "Frontier",
    "Granite",
    "Harbor",
    "Ironwood",
    "Juniper",
    "Keystone",
    "Lakeside",
    "Meridian",
    "Northstar",
    "Oakmont",
    "Pinnacle",
    "Quarry",
    "Redwood",
    "Summit",
    "Tidewater",
    "Union",
    "Vanguard Point",
    "Westfield",
    "Zenith",
];
const STOCK_TRADES: [&str; 12] = [
    "Technologies",
    "Pharmaceuticals",
    "Energy",
    "Holdings",
    "Financial",
    "Industries",
    "Systems",
    "Therapeutics",
    "Foods",
    "Semiconductor",
    "Logistics",
    "Bancorp",
];
const STOCK_FORMS: [&str; 4] = ["Inc.", "Corporation", "Group, Inc.", "Ltd."];
const ETF_ISSUERS: [&str; 6] = ["iShares", "Vanguard", "SPDR", "Invesco", "Schwab", "First Trust"];
const ETF_THEMES: [&str; 12] = [
    "S&P 500",
    "Total Bond Market",
    "MSCI Emerging Markets",
    "Russell 2000",
    "Gold",
    "Nasdaq-100",
    "Dividend Appreciation",
    "Short-Term Treasury",
    "Real Estate",
    "Clean Energy",
    "Health Care",
    "MSCI EAFE",
];

/// The symbols of a seed: unique tickers of 1 to 4 capital letters (ETFs 3 or 4), names,
/// and the rows split evenly (the first `rows % symbols` get one more).
fn listings(opts: &StocksOptions) -> Vec<Listing> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed ^ 0x5700_C4DA_7A5E_7000);
    let etfs = etf_count(opts.symbols);
    let n = opts.symbols as u64;
    let mut seen = HashSet::with_capacity(opts.symbols);
    (0..opts.symbols)
        .map(|i| {
            let etf = i < etfs;
            let symbol = loop {
                let len = if etf {
                    rng.random_range(3..=4)
                } else {
                    match rng.random_range(0..100) {
                        0..2 => 1,
                        2..10 => 2,
                        10..50 => 3,
                        _ => 4,
                    }
                };
                let symbol: String = (0..len).map(|_| char::from(rng.random_range(b'A'..=b'Z'))).collect();
                if seen.insert(symbol.clone()) {
                    break symbol;
                }
            };
            let pick = |rng: &mut Xoshiro256PlusPlus, words: &[&'static str]| words[rng.random_range(0..words.len())];
            let name = if etf {
                format!("{} {} ETF", pick(&mut rng, &ETF_ISSUERS), pick(&mut rng, &ETF_THEMES))
            } else {
                let (word, trade, form) =
                    (pick(&mut rng, &STOCK_WORDS), pick(&mut rng, &STOCK_TRADES), pick(&mut rng, &STOCK_FORMS));
                format!("{word} {trade}, {form} - Common Stock")
            };
            let rows = opts.rows / n + u64::from((i as u64) < opts.rows % n);
            Listing { symbol, name, etf, rows }
        })
        .collect()
}

/// Standard normal draws by Box–Muller, two per pair of uniforms.
#[derive(Default)]
struct Normal {
    spare: Option<f64>,
}

impl Normal {
    fn sample(&mut self, rng: &mut Xoshiro256PlusPlus) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - rng.random::<f64>(); // in (0, 1]: its logarithm is finite
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * sin);
        r * cos
    }
}

/// What happens at one position of a symbol file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dirt {
    Clean,
    /// A null in value column `0..6` (Open, High, Low, Close, Adj Close, Volume).
    Null(u8),
    /// The row before, again.
    Duplicate,
}

/// The dirt of every position: a duplicate only follows a clean row.
fn plan_dirt(rng: &mut Xoshiro256PlusPlus, rows: u64) -> Vec<Dirt> {
    let mut plan = Vec::with_capacity(rows as usize);
    for i in 0..rows {
        let after_clean = i > 0 && plan.last() == Some(&Dirt::Clean);
        let dirt = if after_clean && rng.random::<f64>() < DUPLICATE_RATE {
            Dirt::Duplicate
        } else if rng.random::<f64>() < NULL_RATE {
            Dirt::Null(rng.random_range(0..6))
        } else {
            Dirt::Clean
        };
        plan.push(dirt);
    }
    plan
}

fn last_date() -> Result<NaiveDate, GenerateError> {
    NaiveDate::parse_from_str(LAST_DATE, "%Y-%m-%d")
        .map_err(|e| GenerateError::Invalid(format!("last date {LAST_DATE}: {e}")))
}

/// The weekday `n` weekdays before `date` (a weekday), if it is in year 1 or later.
fn weekdays_before(date: NaiveDate, n: u64) -> Option<NaiveDate> {
    let mut day = date.checked_sub_days(Days::new(n / 5 * 7))?;
    for _ in 0..n % 5 {
        day = day.pred_opt()?;
        while matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            day = day.pred_opt()?;
        }
    }
    (day.year() >= 1).then_some(day)
}

fn next_weekday(date: NaiveDate) -> NaiveDate {
    let step = if date.weekday() == Weekday::Fri { 3 } else { 1 };
    date.checked_add_days(Days::new(step)).unwrap_or(date)
}

/// `YYYY-MM-DD`, the year in four digits.
fn write_date(out: &mut impl std::fmt::Write, d: NaiveDate) -> std::fmt::Result {
    write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

fn format_date(d: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    let _ = write_date(&mut s, d); // writing to a String cannot fail
    s
}

/// One row: five prices and the volume, `None` where dirt put a null.
#[derive(Clone, Copy)]
struct Row {
    date: NaiveDate,
    prices: [Option<f64>; 5],
    volume: Option<i64>,
}

/// A symbol's prices and volumes, day by day.
struct Walk {
    rng: Xoshiro256PlusPlus,
    normal: Normal,
    drift: f64,
    base_sigma: f64,
    variance: f64,
    omega: f64,
    log_close: f64,
    activity: f64,
    dollar_volume: f64,
    adj_factor: f64,
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

impl Walk {
    /// The symbol's parameters, drawn first from its generator.
    fn new(mut rng: Xoshiro256PlusPlus, etf: bool) -> Self {
        let mut normal = Normal::default();
        let (median_price, price_spread, sigma_range, median_dollars) =
            if etf { (60.0, 0.6, (0.006, 0.016), 5e7) } else { (40.0, 0.9, (0.012, 0.035), 2e7) };
        let start = (f64::ln(median_price) + price_spread * normal.sample(&mut rng)).clamp(f64::ln(2.0), f64::ln(1e3));
        let base_sigma = rng.random_range(sigma_range.0..sigma_range.1);
        let drift = 0.000_3 + 0.000_2 * normal.sample(&mut rng);
        let dollar_volume = (f64::ln(median_dollars) + 1.1 * normal.sample(&mut rng)).exp();
        let adj_factor = if rng.random::<f64>() < 0.3 { 1.0 } else { rng.random_range(0.55..1.0) };
        let variance = base_sigma * base_sigma;
        let omega = variance * (1.0 - GARCH.0 - GARCH.1);
        Self {
            rng,
            normal,
            drift,
            base_sigma,
            variance,
            omega,
            log_close: start,
            activity: 1.0,
            dollar_volume,
            adj_factor,
        }
    }

    fn z(&mut self) -> f64 {
        self.normal.sample(&mut self.rng)
    }

    /// The next day's (open, high, low, close, adj close, volume).
    fn step(&mut self) -> ([f64; 5], i64) {
        let sigma = self.variance.sqrt();
        let previous_close = self.log_close;
        let (floor, ceiling) = (PRICE_FLOOR.ln(), PRICE_CEILING.ln());
        let mut log_close = previous_close + self.drift + sigma * self.z();
        if log_close < floor {
            log_close = 2.0 * floor - log_close;
        } else if log_close > ceiling {
            log_close = 2.0 * ceiling - log_close;
        }
        self.log_close = log_close;
        let ret = log_close - previous_close;
        let shock = ret - self.drift;
        self.variance = self.omega + GARCH.0 * shock * shock + GARCH.1 * self.variance;

        let open = round4((previous_close + 0.3 * sigma * self.z()).exp());
        let close = round4(log_close.exp());
        let high = round4(open.max(close) * (0.5 * sigma * self.z().abs()).exp());
        let low = round4(open.min(close) * (-0.5 * sigma * self.z().abs()).exp());
        let adj_close = close * self.adj_factor;

        let abs_return = ret.abs() / (self.base_sigma * MEAN_ABS_NORMAL);
        self.activity = (1.0 - ACTIVITY_WEIGHT) * self.activity + ACTIVITY_WEIGHT * abs_return;
        let noise = (VOLUME_NOISE * self.z() - VOLUME_NOISE * VOLUME_NOISE / 2.0).exp();
        let volume = (self.dollar_volume / close * (0.25 + 0.75 * self.activity) * noise).round() as i64;
        ([open, high, low, close, adj_close], volume)
    }
}

/// Counts of one written symbol file.
struct Written {
    nulls: u64,
    duplicates: u64,
    first_date: NaiveDate,
}

/// Builders of one batch of a symbol file.
struct Columns {
    symbol: StringBuilder,
    name: StringBuilder,
    date: StringBuilder,
    prices: [Float64Builder; 5],
    volume: Int64Builder,
}

impl Columns {
    fn new(rows: usize) -> Self {
        Self {
            symbol: StringBuilder::with_capacity(rows, rows * 4),
            name: StringBuilder::with_capacity(rows, rows * 40),
            date: StringBuilder::with_capacity(rows, rows * 10),
            prices: std::array::from_fn(|_| Float64Builder::with_capacity(rows)),
            volume: Int64Builder::with_capacity(rows),
        }
    }

    fn push(&mut self, listing: &Listing, row: &Row) -> std::io::Result<()> {
        self.symbol.append_value(&listing.symbol);
        self.name.append_value(&listing.name);
        write_date(&mut self.date, row.date).map_err(std::io::Error::other)?;
        self.date.append_value("");
        for (builder, price) in self.prices.iter_mut().zip(row.prices) {
            builder.append_option(price);
        }
        self.volume.append_option(row.volume);
        Ok(())
    }

    fn finish(mut self, schema: &SchemaRef) -> std::io::Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(self.symbol.finish()), Arc::new(self.name.finish()), Arc::new(self.date.finish())];
        columns.extend(self.prices.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.volume.finish()));
        RecordBatch::try_new(schema.clone(), columns).map_err(std::io::Error::other)
    }
}

/// Snappy; dictionaries only for the names, which repeat on every row (prices, volumes and
/// dates hardly repeat: their dictionaries cost time and, falling back, bytes).
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(ROW_GROUP_ROWS)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(SYMBOL), true)
        .set_column_dictionary_enabled(ColumnPath::from(SECURITY_NAME), true)
        .build()
}

/// Write symbol `index`'s file.
fn write_symbol(
    path: &Path,
    listing: &Listing,
    seed: u64,
    index: usize,
    progress: &ProgressBar,
) -> Result<Written, GenerateError> {
    let write_err = |source| GenerateError::Write { path: path.display().to_string(), source };
    let rng = Xoshiro256PlusPlus::seed_from_u64(shard_seed(seed, index as u64));
    let mut dirt_rng = rng.clone();
    dirt_rng.jump();
    let plan = plan_dirt(&mut dirt_rng, listing.rows);
    let duplicates = plan.iter().filter(|d| **d == Dirt::Duplicate).count() as u64;
    let nulls = plan.iter().filter(|d| matches!(d, Dirt::Null(_))).count() as u64;
    let days = listing.rows - duplicates;
    let first_date = weekdays_before(last_date()?, days.saturating_sub(1)).ok_or_else(|| {
        GenerateError::Invalid(format!(
            "{} rows a symbol reach back before year 1 (dates end on {LAST_DATE}): raise --symbols",
            listing.rows
        ))
    })?;

    let schema = symbol_schema();
    let mut walk = Walk::new(rng, listing.etf);
    write_atomically(path, |file| {
        let mut writer =
            ArrowWriter::try_new(file, schema.clone(), Some(writer_properties())).map_err(std::io::Error::other)?;
        let mut date = first_date;
        let mut last: Option<Row> = None;
        for chunk in plan.chunks(BATCH_ROWS) {
            let mut columns = Columns::new(chunk.len());
            for dirt in chunk {
                let row = match (dirt, last) {
                    (Dirt::Duplicate, Some(row)) => row,
                    _ => {
                        if last.is_some() {
                            date = next_weekday(date);
                        }
                        let (prices, volume) = walk.step();
                        let mut row = Row { date, prices: prices.map(Some), volume: Some(volume) };
                        match dirt {
                            Dirt::Null(5) => row.volume = None,
                            Dirt::Null(k) => row.prices[usize::from(*k)] = None,
                            _ => {}
                        }
                        row
                    }
                };
                columns.push(listing, &row)?;
                last = Some(row);
            }
            writer.write(&columns.finish(&schema)?).map_err(std::io::Error::other)?;
            progress.inc(chunk.len() as u64);
        }
        writer.close().map(|_| ()).map_err(std::io::Error::other)
    })
    .map_err(write_err)?;
    Ok(Written { nulls, duplicates, first_date })
}

fn write_symbols(path: &Path, listings: &[Listing]) -> std::io::Result<()> {
    let mut sorted: Vec<&Listing> = listings.iter().collect();
    sorted.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    let mut symbol = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut etf = StringBuilder::new();
    for listing in sorted {
        symbol.append_value(&listing.symbol);
        name.append_value(&listing.name);
        etf.append_value(if listing.etf { "Y" } else { "N" });
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(symbol.finish()), Arc::new(name.finish()), Arc::new(etf.finish())];
    let schema = symbols_schema();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(std::io::Error::other)?;
    write_atomically(path, |file| {
        let mut writer =
            ArrowWriter::try_new(file, schema, Some(writer_properties())).map_err(std::io::Error::other)?;
        writer.write(&batch).map_err(std::io::Error::other)?;
        writer.close().map(|_| ()).map_err(std::io::Error::other)
    })
}

/// Refuse symbol files this run would not write: another run's symbols in the same
/// directory would be read with this run's by the stages after it.
fn check_no_strangers(out: &Path, listings: &[Listing]) -> Result<(), GenerateError> {
    let ours: HashSet<String> = listings.iter().map(Listing::file).collect();
    for dir in [ETFS_DIR, STOCKS_DIR] {
        let path = out.join(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(GenerateError::Read { path: path.display().to_string(), source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| GenerateError::Read { path: path.display().to_string(), source })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && !name.starts_with('.') && !ours.contains(&format!("{dir}/{name}")) {
                return Err(GenerateError::Invalid(format!(
                    "{} holds {name}, which this run (seed, --rows, --symbols) would not write: use an empty --out",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Write the symbol files, `symbols.parquet` and `manifest.json` into `opts.out`, advancing
/// `progress` by rows. Symbol files are written in parallel on the current rayon pool.
///
/// # Errors
/// [`GenerateError::Invalid`] for options out of range (checked before anything is
/// written) or an output directory holding other symbol files; [`GenerateError::Write`]
/// for a failed write.
pub fn generate_stocks(opts: &StocksOptions, progress: &ProgressBar) -> Result<StocksManifest, GenerateError> {
    opts.check()?;
    let listings = listings(opts);
    let last = last_date()?;
    // Every symbol has about the same rows: check the longest reaches no further than year 1.
    let longest = listings.iter().map(|l| l.rows).max().unwrap_or(0);
    if weekdays_before(last, longest).is_none() {
        return Err(GenerateError::Invalid(format!(
            "{longest} rows a symbol reach back before year 1 (dates end on {LAST_DATE}): raise --symbols"
        )));
    }
    check_no_strangers(&opts.out, &listings)?;
    for dir in [ETFS_DIR, STOCKS_DIR] {
        let path = opts.out.join(dir);
        std::fs::create_dir_all(&path)
            .map_err(|source| GenerateError::Write { path: path.display().to_string(), source })?;
    }

    let written: Vec<Result<Written, GenerateError>> = listings
        .par_iter()
        .enumerate()
        .map(|(i, listing)| write_symbol(&opts.out.join(listing.file()), listing, opts.seed, i, progress))
        .collect();
    let mut files = Vec::with_capacity(listings.len());
    for (listing, written) in listings.iter().zip(written) {
        let written = written?;
        files.push(SymbolFile {
            file: listing.file(),
            symbol: listing.symbol.clone(),
            rows: listing.rows,
            nulls: written.nulls,
            duplicates: written.duplicates,
            first_date: format_date(written.first_date),
        });
    }

    let path = opts.out.join(SYMBOLS_FILE);
    write_symbols(&path, &listings)
        .map_err(|source| GenerateError::Write { path: path.display().to_string(), source })?;

    let etfs = etf_count(opts.symbols);
    let manifest = StocksManifest {
        dataset: DATASET.into(),
        generator: GENERATOR.into(),
        generator_version: STOCKS_GENERATOR_VERSION,
        seed: opts.seed,
        symbols: opts.symbols,
        etfs,
        stocks: opts.symbols - etfs,
        rows: opts.rows,
        nulls: files.iter().map(|f| f.nulls).sum(),
        duplicates: files.iter().map(|f| f.duplicates).sum(),
        last_date: LAST_DATE.into(),
        files,
    };
    let path = opts.out.join("manifest.json");
    let write_err = |source| GenerateError::Write { path: path.display().to_string(), source };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| write_err(e.into()))?;
    write_atomically(&path, |f| std::io::Write::write_all(f, &json)).map_err(write_err)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Float64Array, Int64Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn run(dir: &Path, threads: usize, rows: u64, symbols: usize) -> StocksManifest {
        let opts = StocksOptions { rows, symbols, seed: 11, out: dir.to_path_buf() };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| generate_stocks(&opts, &ProgressBar::hidden())).expect("generate")
    }

    fn read(path: &Path) -> RecordBatch {
        let file = std::fs::File::open(path).expect("open");
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
        let mut batches: Vec<RecordBatch> =
            builder.with_batch_size(1 << 22).build().expect("reader").collect::<Result<_, _>>().expect("batches");
        assert_eq!(batches.len(), 1, "test files are read as one batch");
        batches.remove(0)
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
        let column = batch.column_by_name(name).expect("column");
        let column = column.as_any().downcast_ref::<StringArray>().expect("Utf8");
        column.iter().map(|v| v.expect("no null").to_string()).collect()
    }

    fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
        let column = batch.column_by_name(name).expect("column");
        column.as_any().downcast_ref::<Float64Array>().expect("Float64").iter().collect()
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_threads() {
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let manifest = run(a.path(), 1, 12_345, 7);
        assert_eq!(run(b.path(), 3, 12_345, 7), manifest);
        let mut names: Vec<String> = manifest.files.iter().map(|f| f.file.clone()).collect();
        names.extend([SYMBOLS_FILE.to_string(), "manifest.json".to_string()]);
        for name in names {
            let bytes_a = std::fs::read(a.path().join(&name)).expect("read");
            assert_eq!(bytes_a, std::fs::read(b.path().join(&name)).expect("read"), "{name} differs");
        }
        // Another seed gives other prices.
        let c = tempfile::tempdir().expect("tempdir");
        let opts = StocksOptions { rows: 12_345, symbols: 7, seed: 12, out: c.path().to_path_buf() };
        let other = generate_stocks(&opts, &ProgressBar::hidden()).expect("generate");
        assert_ne!(other.files[0].symbol, manifest.files[0].symbol);
    }

    #[test]
    fn layout_schema_and_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = run(dir.path(), 2, 10_003, 10);
        assert_eq!((manifest.symbols, manifest.etfs, manifest.stocks, manifest.rows), (10, 2, 8, 10_003));
        assert_eq!(manifest.files.iter().map(|f| f.rows).sum::<u64>(), 10_003);
        assert_eq!(manifest.files.iter().map(|f| f.rows).collect::<Vec<_>>()[..4], [1_001, 1_001, 1_001, 1_000]);
        assert!(manifest.files[..2].iter().all(|f| f.file.starts_with("etfs/")));
        assert!(manifest.files[2..].iter().all(|f| f.file.starts_with("stocks/")));
        let names = ["Symbol", "Security Name", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"];
        let types = [DataType::Utf8, DataType::Utf8, DataType::Utf8]
            .into_iter()
            .chain(std::iter::repeat_n(DataType::Float64, 5))
            .chain([DataType::Int64])
            .collect::<Vec<_>>();
        for f in &manifest.files {
            let batch = read(&dir.path().join(&f.file));
            let schema = batch.schema();
            assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), names);
            assert_eq!(schema.fields().iter().map(|f| f.data_type().clone()).collect::<Vec<_>>(), types);
            assert_eq!(batch.num_rows() as u64, f.rows);
            assert!(strings(&batch, SYMBOL).iter().all(|s| *s == f.symbol));
            let dates = strings(&batch, DATE);
            assert_eq!(dates[0], f.first_date);
            assert_eq!(dates.last().map(String::as_str), Some(LAST_DATE));
        }
        let symbols = read(&dir.path().join(SYMBOLS_FILE));
        let schema = symbols.schema();
        assert_eq!(
            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
            ["Symbol", "Security Name", "ETF"]
        );
        let listed = strings(&symbols, SYMBOL);
        let mut expected: Vec<String> = manifest.files.iter().map(|f| f.symbol.clone()).collect();
        expected.sort();
        assert_eq!(listed, expected);
        let etf = strings(&symbols, ETF);
        assert_eq!(etf.iter().filter(|e| *e == "Y").count(), 2);
        assert_eq!(etf.iter().filter(|e| *e == "N").count(), 8);
        let json: StocksManifest =
            serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).expect("manifest")).expect("json");
        assert_eq!(json, manifest);
        assert_eq!((json.dataset.as_str(), json.generator_version, json.seed), ("stocks", 1, 11));
    }

    #[test]
    fn weekdays_increase_prices_hold_and_dirt_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = run(dir.path(), 2, 200_000, 4);
        let (mut nulls, mut duplicates) = (0u64, 0u64);
        for f in &manifest.files {
            let batch = read(&dir.path().join(&f.file));
            let dates = strings(&batch, DATE);
            let [open, high, low, close, adj] = [OPEN, HIGH, LOW, CLOSE, ADJ_CLOSE].map(|c| floats(&batch, c));
            let volume: Vec<Option<i64>> = batch
                .column_by_name(VOLUME)
                .expect("Volume")
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64")
                .iter()
                .collect();
            let (mut file_nulls, mut file_duplicates) = (0u64, 0u64);
            let mut factor = None;
            for i in 0..dates.len() {
                let date = NaiveDate::parse_from_str(&dates[i], "%Y-%m-%d").expect("date");
                assert!(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun), "{} is a weekend", dates[i]);
                let values = [open[i], high[i], low[i], close[i], adj[i]];
                let row_nulls = values.iter().filter(|v| v.is_none()).count() + usize::from(volume[i].is_none());
                assert!(row_nulls <= 1);
                file_nulls += row_nulls as u64;
                if i > 0 && dates[i] == dates[i - 1] {
                    let before = [open[i - 1], high[i - 1], low[i - 1], close[i - 1], adj[i - 1]];
                    assert_eq!((values, volume[i]), (before, volume[i - 1]), "a repeated date repeats its row");
                    assert_eq!(row_nulls, 0, "rows with nulls are never repeated");
                    file_duplicates += 1;
                } else if i > 0 {
                    assert!(dates[i] > dates[i - 1], "{} after {}", dates[i], dates[i - 1]);
                    let gap = (date - NaiveDate::parse_from_str(&dates[i - 1], "%Y-%m-%d").expect("date")).num_days();
                    assert!(gap == 1 || (gap == 3 && date.weekday() == Weekday::Mon), "gap {gap}");
                }
                for v in values.iter().flatten() {
                    assert!(*v > 0.0 && v.is_finite());
                }
                if let (Some(o), Some(h), Some(l), Some(c)) = (open[i], high[i], low[i], close[i]) {
                    assert!(h >= o.max(c) && l <= o.min(c), "row {i}: {o} {h} {l} {c}");
                }
                if let (Some(c), Some(a)) = (close[i], adj[i]) {
                    let f = a / c;
                    assert!(f <= 1.0 && f > 0.5);
                    let first = *factor.get_or_insert(f);
                    assert!((f - first).abs() < 1e-12, "one factor per symbol");
                }
                if let Some(v) = volume[i] {
                    assert!(v >= 0);
                }
            }
            assert_eq!((file_nulls, file_duplicates), (f.nulls, f.duplicates), "{}", f.file);
            nulls += file_nulls;
            duplicates += file_duplicates;
        }
        assert_eq!((nulls, duplicates), (manifest.nulls, manifest.duplicates));
        // About 0.5% each of 200,000 rows: 1,000, with a binomial sd of 32.
        for count in [nulls, duplicates] {
            assert!((850..1_150).contains(&count), "{count} dirty rows");
        }
    }

    /// Volume follows recent absolute returns and moves against the price level.
    #[test]
    fn volume_follows_volatility_and_price() {
        let mut walk = Walk::new(Xoshiro256PlusPlus::seed_from_u64(3), false);
        let days: Vec<([f64; 5], i64)> = (0..50_000).map(|_| walk.step()).collect();
        let log_volume: Vec<f64> = days.iter().map(|(_, v)| (*v as f64).ln()).collect();
        let log_close: Vec<f64> = days.iter().map(|(p, _)| p[3].ln()).collect();
        // The volume's activity factor: an average of recent absolute returns, as in `step`.
        let mut activity = 1.0;
        let recent: Vec<f64> = log_close
            .windows(2)
            .map(|w| {
                activity = 0.9 * activity + 0.1 * (w[1] - w[0]).abs();
                activity
            })
            .collect();
        let log_dollars: Vec<f64> = log_volume.iter().zip(&log_close).map(|(v, c)| v + c).collect();
        let corr = |x: &[f64], y: &[f64]| {
            let n = x.len() as f64;
            let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
            let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
            let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
            let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
            cov / (vx * vy).sqrt()
        };
        // The mean of the last 30 volumes against today's.
        let trailing: Vec<f64> =
            (30..log_volume.len()).map(|i| log_volume[i - 30..i].iter().sum::<f64>() / 30.0).collect();
        assert!(corr(&trailing, &log_volume[30..]) > 0.3, "trailing volume carries no signal");
        assert!(corr(&log_close, &log_volume) < -0.5, "price level carries no signal");
        let with_returns = corr(&recent, &log_dollars[1..]);
        assert!(with_returns > 0.3, "absolute returns carry no signal: {with_returns}");
    }

    #[test]
    fn refuses_bad_options_and_other_runs_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().to_path_buf();
        for (rows, symbols, message) in [
            (10, 1, "--symbols must be between 2"),
            (5, 10, "--rows must be between --symbols"),
            (2_000_000, 2, "before year 1"),
        ] {
            let opts = StocksOptions { rows, symbols, seed: 0, out: out.clone() };
            let e = generate_stocks(&opts, &ProgressBar::hidden()).expect_err("refused").to_string();
            assert!(e.contains(message), "{e}");
        }
        assert!(std::fs::read_dir(&out).expect("dir").next().is_none(), "nothing written");
        run(&out, 1, 100, 5);
        run(&out, 1, 100, 5); // the same run again overwrites its own files
        let opts = StocksOptions { rows: 100, symbols: 5, seed: 1, out: out.clone() };
        let e = generate_stocks(&opts, &ProgressBar::hidden()).expect_err("refused").to_string();
        assert!(e.contains("use an empty --out"), "{e}");
    }

    #[test]
    fn weekdays_before_counts_weekdays() {
        let wed = NaiveDate::from_ymd_opt(2020, 4, 1).expect("date");
        let day = |n| weekdays_before(wed, n).map(|d| d.to_string());
        assert_eq!(day(0).as_deref(), Some("2020-04-01"));
        assert_eq!(day(2).as_deref(), Some("2020-03-30"));
        assert_eq!(day(3).as_deref(), Some("2020-03-27"));
        assert_eq!(day(5).as_deref(), Some("2020-03-25"));
        assert_eq!(day(8).as_deref(), Some("2020-03-20"));
        assert_eq!(day(10_000_000), None);
        let fri = NaiveDate::from_ymd_opt(2020, 3, 27).expect("date");
        assert_eq!(next_weekday(fri).to_string(), "2020-03-30");
    }
}

//! `producer convert`, run as the binary: every pair of formats (csv, parquet, json,
//! arrow, avro) with queries that filter, project and aggregate, each result compared with
//! what DuckDB computes from the same CSV (`convert_check.py`, from `.services/venv`);
//! input and output on S3 (SeaweedFS); a CSV several times larger than the query's memory
//! limit, aggregated and filtered with the process's peak RSS measured; and each error a
//! user meets, one line and a non-zero exit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shardflow_testkit::TestEnv;
use shardflow_testkit::objects::ObjectDir;

const FORMATS: [&str; 5] = ["csv", "parquet", "json", "arrow", "avro"];

/// Filters, projects (a computed column) and aggregates.
const AGGREGATE: &str = "SELECT region, count(*) AS n, sum(amount) AS total, min(id) AS first_id, \
     avg(amount * 2) AS avg_doubled, sum(CASE WHEN flag THEN 1 ELSE 0 END) AS flagged \
     FROM data WHERE amount > 20 AND region <> 'lima' GROUP BY region ORDER BY region";

/// Filters and projects row by row: every value of the kept rows goes through the formats.
const ROWS: &str = "SELECT id, region, amount, flag, amount - id AS diff FROM data WHERE id % 7 = 3 ORDER BY id";

fn producer(config: &Path, args: &[&str]) -> Output {
    convert(Command::new(shardflow_testkit::bin("producer")), config, args).output().expect("run producer")
}

/// `command` with `--config <config> convert <args>` after what it has.
fn convert(mut command: Command, config: &Path, args: &[&str]) -> Command {
    command.arg("--config").arg(config).arg("convert").args(args).env("RUST_LOG", "warn");
    command
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `rows` rows of id, region (4 values), amount (two decimals), flag.
fn source_csv(path: &Path, rows: usize) {
    let regions = ["lima", "oslo", "paris", "quito"];
    let mut text = String::from("id,region,amount,flag\n");
    for i in 0..rows {
        let amount = ((i * 7_919) % 10_000) as f64 / 100.0;
        let flag = i % 3 == 0;
        writeln!(text, "{i},{},{amount},{flag}", regions[(i * 13) % 4]).expect("format");
    }
    std::fs::write(path, text).expect("write source");
}

/// Run `convert_check.py check` over `cases` (sql, output, format); the row count of each.
fn check(dir: &Path, source: &Path, cases: &[(String, PathBuf, String)]) -> Vec<u64> {
    let manifest = serde_json::json!({
        "source": source,
        "cases": cases.iter().map(|(sql, output, format)| serde_json::json!({
            "sql": sql, "output": output, "format": format,
        })).collect::<Vec<_>>(),
    });
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).expect("manifest");
    let out = Command::new(shardflow_testkit::python())
        .arg(script())
        .arg("check")
        .arg(&path)
        .output()
        .expect("run convert_check.py");
    let stdout = ok(&out, "convert_check.py check");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("check's JSON");
    assert_eq!(answer["cases"].as_u64(), Some(cases.len() as u64));
    answer["rows"].as_array().expect("rows").iter().map(|n| n.as_u64().expect("count")).collect()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/convert_check.py")
}

#[test]
fn every_pair_of_formats_gives_duckdbs_answer() {
    let env = TestEnv::new("convert_pairs");
    let dir = env.data();
    let source = dir.join("source.csv");
    source_csv(&source, 5_000);
    // The source in every format, through convert itself (checked below with the rest).
    // A scan of one file runs in several partitions: only ORDER BY fixes the order.
    let all = "SELECT * FROM data ORDER BY id";
    let mut cases = Vec::new();
    for format in FORMATS {
        let copy = dir.join(format!("source.{format}"));
        if format != "csv" {
            let written =
                producer(&env.config_path, &["--input", path(&source), "--output", path(&copy), "--sql", all]);
            ok(&written, &format!("csv -> {format}"));
            cases.push((all.to_string(), copy, format.to_string()));
        }
    }
    // --input-format for a name that does not tell it, and a CSV with another delimiter and no header.
    let unnamed = dir.join("source.bin");
    std::fs::copy(dir.join("source.parquet"), &unnamed).expect("copy");
    let semicolons = dir.join("semicolons.txt");
    let text = std::fs::read_to_string(&source).expect("source");
    let body: String = text.lines().skip(1).map(|l| format!("{}\n", l.replace(',', ";"))).collect();
    std::fs::write(&semicolons, body).expect("semicolons");
    for (input, extra) in [
        (&unnamed, vec!["--input-format", "parquet"]),
        (&semicolons, vec!["--input-format", "csv", "--delimiter", ";", "--no-header"]),
    ] {
        let to = dir.join(format!("{}.json", input.file_stem().and_then(|s| s.to_str()).unwrap_or("x")));
        let sql = if extra.contains(&"--no-header") {
            "SELECT column_1 AS id, column_2 AS region, column_3 AS amount, column_4 AS flag FROM data ORDER BY id"
        } else {
            all
        };
        let mut args = vec!["--input", path(input), "--output", path(&to), "--sql", sql];
        args.extend(extra);
        ok(&producer(&env.config_path, &args), "--input-format");
        cases.push((all.to_string(), to, "json".to_string()));
    }
    let copies = cases.len();
    for input in FORMATS {
        for output in FORMATS {
            for (name, sql) in [("aggregate", AGGREGATE), ("rows", ROWS)] {
                let from = dir.join(format!("source.{input}"));
                // An extension that is not the format's: --format names it.
                let to = dir.join(format!("{name}-{input}-{output}.out"));
                let written = producer(
                    &env.config_path,
                    &["--input", path(&from), "--output", path(&to), "--format", output, "--sql", sql],
                );
                let stderr = String::from_utf8_lossy(&written.stderr).into_owned();
                ok(&written, &format!("{input} -> {output}: {sql}"));
                assert!(stderr.contains(&format!("to {} ({output})", to.display())), "{stderr}");
                cases.push((sql.to_string(), to, output.to_string()));
            }
        }
    }
    let rows = check(dir, &source, &cases);
    assert!(rows[..copies].iter().all(|n| *n == 5_000), "{rows:?}");
    // Three regions pass the filter; one row in seven is kept.
    let kept = (0..5_000).filter(|i| i % 7 == 3).count() as u64;
    assert_eq!(rows.len(), copies + 2 * FORMATS.len() * FORMATS.len());
    for pair in rows[copies..].chunks(2) {
        assert_eq!(pair, [3, kept]);
    }

    // --show prints the first rows as a table on stdout; without --output nothing is written.
    let shown =
        producer(&env.config_path, &["--input", path(&dir.join("source.parquet")), "--sql", AGGREGATE, "--show", "2"]);
    let table = ok(&shown, "show");
    assert!(table.contains("| region |") && table.contains("| oslo "), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 3, "a header and two rows:\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_s3() {
    let s3 = ObjectDir::s3_seaweed("convert");
    let env = TestEnv::with("convert_s3", |c| c.storage.s3 = s3.options());
    let source = env.data().join("source.csv");
    source_csv(&source, 20_000);
    let parquet = env.data().join("source.parquet");
    ok(&producer(&env.config_path, &["--input", path(&source), "--output", path(&parquet)]), "csv -> parquet");
    let bytes = std::fs::read(&parquet).expect("read parquet");
    s3.store().put(&s3.path("in/source.parquet"), bytes.into()).await.expect("put input");

    let input = format!("{}/in/source.parquet", s3.url());
    let output = format!("{}/out/aggregate.csv", s3.url());
    ok(&producer(&env.config_path, &["--input", &input, "--output", &output, "--sql", AGGREGATE]), "s3 -> s3");
    assert_eq!(
        s3.keys().await.expect("keys"),
        [s3.path("in/source.parquet").to_string(), s3.path("out/aggregate.csv").to_string()],
        "the input and the output, nothing else"
    );
    let got = s3.store().get(&s3.path("out/aggregate.csv")).await.expect("get").bytes().await.expect("bytes");
    let local = env.data().join("aggregate.csv");
    std::fs::write(&local, &got).expect("write");
    assert_eq!(check(env.data(), &source, &[(AGGREGATE.to_string(), local, "csv".into())]), [3]);
}

/// Rows of the large CSV: about 420 MB.
const LARGE_ROWS: u64 = 16_000_000;

#[test]
fn a_csv_larger_than_memory_streams() {
    let env = TestEnv::new("convert_large");
    let source = env.data().join("large.csv");
    // id, a region of 5, an integer amount: the sums are exact.
    let (mut sums, mut counts, mut kept) = (BTreeMap::new(), BTreeMap::new(), 0u64);
    {
        let file = std::fs::File::create(&source).expect("create");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(b"id,region,amount,note\n").expect("header");
        let regions = ["lima", "oslo", "paris", "quito", "rome"];
        for i in 0..LARGE_ROWS {
            let region = regions[(i % 5) as usize];
            let amount = (i * 7_919) % 100_000;
            writeln!(out, "{i},{region},{amount},row-{:08}", i % 99_991).expect("row");
            *sums.entry(region).or_insert(0u64) += amount;
            *counts.entry(region).or_insert(0u64) += 1;
            kept += u64::from(amount >= 99_000);
        }
        out.flush().expect("flush");
    }
    let size = std::fs::metadata(&source).expect("size").len();
    assert!(size > 400_000_000, "{size} bytes");

    let aggregate = "SELECT region, count(*) AS n, sum(amount) AS total FROM data GROUP BY region ORDER BY region";
    let (stdout, peak) = measured(
        &env.config_path,
        &["--input", path(&source), "--sql", aggregate, "--show", "10", "--memory-limit", "64M"],
    );
    for (region, sum) in &sums {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("| {region} ")))
            .unwrap_or_else(|| panic!("{region}:\n{stdout}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells, [region.to_string(), counts[region].to_string(), sum.to_string()], "{stdout}");
    }
    assert!(peak < size / 4, "aggregate: peak RSS {peak} bytes for a {size}-byte CSV");

    let filtered = env.data().join("filtered.parquet");
    let sql = "SELECT id, amount, note FROM data WHERE amount >= 99000";
    let (_, peak) = measured(
        &env.config_path,
        &["--input", path(&source), "--output", path(&filtered), "--sql", sql, "--memory-limit", "64M"],
    );
    let file = std::fs::File::open(&filtered).expect("open the result");
    let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
    use parquet::file::reader::FileReader as _;
    assert_eq!(reader.metadata().file_metadata().num_rows() as u64, kept);
    assert!(peak < size / 4, "filter: peak RSS {peak} bytes for a {size}-byte CSV");
    std::fs::remove_file(&source).expect("remove the large CSV");
}

/// Run convert under `convert_check.py rss`: its stdout and peak RSS in bytes.
fn measured(config: &Path, args: &[&str]) -> (String, u64) {
    let mut python = Command::new(shardflow_testkit::python());
    python.arg(script()).args(["rss", "--"]).arg(shardflow_testkit::bin("producer"));
    let out = convert(python, config, args).output().expect("run convert_check.py rss");
    let answer: serde_json::Value = serde_json::from_str(ok(&out, "rss").trim()).expect("rss JSON");
    assert_eq!(answer["status"], 0, "{answer}");
    let peak = answer["maxrss_kib"].as_u64().expect("maxrss") * 1024;
    eprintln!("convert {args:?}: peak RSS {} MiB", peak >> 20);
    (answer["stdout"].as_str().unwrap_or_default().to_string(), peak)
}

/// The one line convert printed on stderr, after checking it failed.
fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_is_one_line_and_fails() {
    let s3 = ObjectDir::s3_seaweed("convert_errors");
    let env = TestEnv::with("convert_errors", |c| c.storage.s3 = s3.options());
    let source = env.data().join("source.csv");
    source_csv(&source, 100);
    let input = path(&source);
    let out = env.data().join("out.parquet");
    let run = |args: &[&str]| failure(&producer(&env.config_path, args));

    let unknown_column = run(&["--input", input, "--output", path(&out), "--sql", "SELECT nosuch FROM data"]);
    assert!(unknown_column.contains("bad query") && unknown_column.contains("nosuch"), "{unknown_column}");
    let bad_sql = run(&["--input", input, "--output", path(&out), "--sql", "SELEC * FROM data"]);
    assert!(bad_sql.contains("bad query") && bad_sql.contains("SELEC"), "{bad_sql}");
    let statement = run(&["--input", input, "--sql", "CREATE TABLE t AS SELECT 1"]);
    assert!(statement.contains("bad query"), "{statement}");
    assert!(!out.exists(), "a failed query writes nothing");

    let missing_file = run(&["--input", path(&env.data().join("nothing.csv"))]);
    assert!(missing_file.contains("no such file or object"), "{missing_file}");
    let missing_object = format!("{}/nothing.parquet", s3.url());
    let missing = run(&["--input", &missing_object]);
    assert!(missing.contains("no such file or object") && missing.contains(&missing_object), "{missing}");

    let unknown_format = run(&["--input", input, "--output", path(&out), "--format", "xls"]);
    assert!(unknown_format.contains("unknown format `xls`"), "{unknown_format}");
    let unknown_extension = run(&["--input", path(&env.data().join("sheet.xls"))]);
    assert!(unknown_extension.contains("unknown format `xls`"), "{unknown_extension}");

    // moto checks every signature: a wrong secret is refused.
    let moto = ObjectDir::s3_moto("convert_denied");
    moto.store().put(&moto.path("a.csv"), std::fs::read(&source).expect("source").into()).await.expect("put");
    let mut wrong = moto.options();
    wrong.insert("aws_secret_access_key".into(), "not-the-secret".into());
    let denied_env = TestEnv::with("convert_denied", |c| c.storage.s3 = wrong);
    let denied_url = format!("{}/a.csv", moto.url());
    let denied = failure(&producer(&denied_env.config_path, &["--input", &denied_url]));
    assert!(denied.contains("permission denied") && denied.contains(&denied_url), "{denied}");

    // Nothing listens on the endpoint: an error within seconds, not object_store's minutes of retries.
    let mut nowhere = s3.options();
    let port = shardflow_testkit::dataset::free_port();
    nowhere.insert("aws_endpoint".into(), format!("http://127.0.0.1:{port}"));
    let unreachable_env = TestEnv::with("convert_unreachable", |c| c.storage.s3 = nowhere);
    let started = Instant::now();
    let url = format!("{}/a.csv", s3.url());
    let unreachable = failure(&producer(&unreachable_env.config_path, &["--input", &url]));
    assert!(unreachable.contains("cannot reach") && unreachable.contains(&url), "{unreachable}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

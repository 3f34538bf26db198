//! Any table through the whole pipeline, against the real broker, consumers and
//! ClickHouse: a mixed table of every Arrow type the model covers, with nulls in each
//! column, submitted with a dataset name (fitted first as the job's step), transformed by
//! two consumer processes, and its inverse compared with the input column by column; what
//! the model does not know (other columns, a word in a number column, a new category, a
//! message that is not an OCF); and a message's bytes read by Python's fastavro.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::types::Int32Type;
use arrow_array::*;
use arrow_schema::DataType;
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use shardflow_model::{ALPHA_CLIP, ColumnKind, Model};
use shardflow_storage::part_name;
use shardflow_store::Index;
use shardflow_testkit::dataset::{post_job, read_part, read_table, serve_api};
use shardflow_testkit::{TestEnv, eventually};

const ROWS: usize = 20_000;
const CHUNK_ROWS: usize = 5_000;

/// Every `every`-th row (from `offset`) null, the others `value(i)`.
fn with_nulls<T>(every: usize, offset: usize, value: impl Fn(usize) -> T) -> Vec<Option<T>> {
    (0..ROWS).map(|i| (!(i + offset).is_multiple_of(every)).then(|| value(i))).collect()
}

/// A table of 18 columns, one per type the model covers, nulls in each.
fn mixed_table(seed: u64) -> RecordBatch {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let normal: Vec<f64> = (0..ROWS).map(|_| rng.random::<f64>() + rng.random::<f64>() + rng.random::<f64>()).collect();
    let pick: Vec<usize> = (0..ROWS).map(|_| rng.random_range(0..4)).collect();
    let words = ["alpha", "beta", "gamma", "delta"];
    let amount = |i: usize| if pick[i] == 0 { 0.0 } else { (normal[i] * 2.0).exp() * 10.0 };
    let dict: DictionaryArray<Int32Type> = with_nulls(11, 3, |i| words[pick[i]]).into_iter().collect();
    RecordBatch::try_from_iter([
        ("price", Arc::new(Float64Array::from(with_nulls(13, 0, |i| normal[i] * 100.0 - 40.0))) as ArrayRef),
        ("ratio", Arc::new(Float32Array::from(with_nulls(17, 1, |i| normal[i] as f32))) as ArrayRef),
        ("level", Arc::new(Int8Array::from(with_nulls(19, 2, |i| pick[i] as i8 - 2))) as ArrayRef),
        ("small", Arc::new(Int16Array::from(with_nulls(23, 3, |i| (normal[i] * 1000.0) as i16))) as ArrayRef),
        ("count", Arc::new(Int32Array::from(with_nulls(29, 4, |i| (normal[i] * 1e5) as i32))) as ArrayRef),
        ("big", Arc::new(Int64Array::from(with_nulls(31, 5, |i| (normal[i] * 1e9) as i64))) as ArrayRef),
        ("flag_u8", Arc::new(UInt8Array::from(with_nulls(37, 6, |i| pick[i] as u8))) as ArrayRef),
        ("u16", Arc::new(UInt16Array::from(with_nulls(41, 7, |i| (normal[i] * 300.0) as u16))) as ArrayRef),
        ("u32", Arc::new(UInt32Array::from(with_nulls(43, 8, |i| (normal[i] * 1e6) as u32))) as ArrayRef),
        ("u64", Arc::new(UInt64Array::from(with_nulls(47, 9, |i| (normal[i] * 1e8) as u64))) as ArrayRef),
        ("amount", Arc::new(Float64Array::from(with_nulls(53, 10, amount))) as ArrayRef),
        ("word", Arc::new(StringArray::from(with_nulls(7, 0, |i| words[pick[i]]))) as ArrayRef),
        ("large word", Arc::new(LargeStringArray::from(with_nulls(9, 1, |i| words[3 - pick[i]]))) as ArrayRef),
        ("yes", Arc::new(BooleanArray::from(with_nulls(5, 2, |i| pick[i].is_multiple_of(2)))) as ArrayRef),
        ("day", Arc::new(Date32Array::from(with_nulls(59, 11, |i| 19_000 + (normal[i] * 100.0) as i32))) as ArrayRef),
        (
            "at_ms",
            Arc::new(
                TimestampMillisecondArray::from(with_nulls(61, 12, |i| 1_700_000_000_000 + (normal[i] * 1e9) as i64))
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        (
            "at_ns",
            Arc::new(TimestampNanosecondArray::from(with_nulls(67, 13, |i| (normal[i] * 1e15) as i64))) as ArrayRef,
        ),
        ("tag", Arc::new(dict) as ArrayRef),
    ])
    .expect("mixed table")
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path).expect("create"), batch.schema(), None)
        .expect("parquet writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

async fn get(base: &str, path: &str) -> serde_json::Value {
    let response = reqwest::get(format!("{base}{path}")).await.expect("GET");
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("JSON")
}

/// The job's parts, in chunk order, joined: (transformed, inverse).
fn read_outputs(output_root: &Path, job: &str, chunks: u64) -> (RecordBatch, RecordBatch) {
    let join = |dir: PathBuf| {
        let parts: Vec<RecordBatch> = (0..chunks).map(|seq| read_part(&dir.join(part_name(seq)))).collect();
        arrow_select::concat::concat_batches(&parts[0].schema(), &parts).expect("concat")
    };
    (join(shardflow_storage::transform_dir(output_root, job)), join(shardflow_storage::inverse_dir(output_root, job)))
}

/// Column `name` of `batch` as f64 (its epoch count for dates and timestamps).
fn as_f64(batch: &RecordBatch, name: &str) -> Float64Array {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}"));
    let numeric = match column.data_type() {
        DataType::Date32 => arrow_cast::cast(column, &DataType::Int32).expect("days"),
        DataType::Timestamp(..) => arrow_cast::cast(column, &DataType::Int64).expect("epoch"),
        _ => column.clone(),
    };
    let floats = arrow_cast::cast(&numeric, &DataType::Float64).expect("as f64");
    floats.as_any().downcast_ref::<Float64Array>().expect("f64").clone()
}

/// The round trip the issue promises, column by column: the input's types; categorical,
/// modal and null values exact; continuous values to 1e-9 relative where alpha was not
/// clipped; integer columns (and dates) exact.
fn assert_round_trip(model: &Model, input: &RecordBatch, transformed: &RecordBatch, inverse: &RecordBatch) {
    assert_eq!(inverse.num_rows(), input.num_rows());
    for column in &model.columns {
        let name = &column.name;
        let (want, got) = (input.column_by_name(name).expect("input"), inverse.column_by_name(name).expect("inverse"));
        assert_eq!(got.data_type(), want.data_type(), "column `{name}` keeps its type");
        assert_eq!(got.logical_nulls(), want.logical_nulls(), "column `{name}`: nulls where the input has them");
        if column.kind == ColumnKind::Categorical {
            assert_eq!(got.as_ref(), want.as_ref(), "categorical column `{name}` comes back exactly");
            continue;
        }
        let alpha = transformed
            .column_by_name(&column.alpha_name())
            .and_then(|a| a.as_any().downcast_ref::<Float64Array>().cloned())
            .expect("alpha column");
        let input_type = input.column_by_name(name).map(|c| c.data_type().clone());
        let exact = matches!(input_type, Some(t) if t.is_integer() || t == DataType::Date32);
        let (want, got) = (as_f64(input, name), as_f64(inverse, name));
        let mut compared = 0;
        for i in 0..want.len() {
            if want.is_null(i) || alpha.is_valid(i) && alpha.value(i).abs() >= ALPHA_CLIP {
                continue;
            }
            let (w, g) = (want.value(i), got.value(i));
            if exact {
                assert_eq!(g, w, "column `{name}` row {i}");
            } else {
                assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "column `{name}` row {i}: {g} for {w}");
            }
            compared += 1;
        }
        assert!(compared > want.len() / 2, "column `{name}`: only {compared} rows compared");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_table_rides_the_whole_pipeline_column_by_column() {
    let env = TestEnv::with("any_table", |c| c.publish.chunk_rows = shardflow_testkit::nz(CHUNK_ROWS));
    let input = mixed_table(7);
    let file = env.data().join("mixed").join("mixed.parquet");
    write_parquet(&file, &input);
    let _first = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let _second = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let base = serve_api(&env.config).await;

    // No model yet: the job fits one from the table first, then publishes it.
    let (status, job) = post_job(
        &base,
        serde_json::json!({ "file_path": file.to_str().expect("utf-8"), "dataset": "mixed", "wait": true }),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    let job_id = job["job_id"].as_str().expect("job id").to_string();
    let chunks = ROWS.div_ceil(CHUNK_ROWS) as u64;
    assert_eq!((job["rows"].as_u64(), job["chunks_total"].as_u64()), (Some(ROWS as u64), Some(chunks)));
    assert_eq!(job["dataset"], "mixed");
    assert_eq!(job["value_issues"], serde_json::json!([]), "nothing unknown in the fitted table");

    // One outputs row per chunk, each part where the index says.
    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse");
    let outputs = index.outputs(&job_id).await.expect("outputs");
    assert_eq!(outputs.iter().map(|o| o.chunk).collect::<Vec<_>>(), (0..chunks).collect::<Vec<_>>());
    assert_eq!(outputs.iter().map(|o| o.rows).sum::<u64>(), ROWS as u64);

    // The dataset is registered with its columns, its model and the job.
    let model_id = job["model_id"].as_str().expect("model id").to_string();
    let dataset = get(&base, "/datasets/mixed").await;
    assert_eq!(dataset["model_id"], model_id.as_str());
    assert_eq!(dataset["model_source"], "first fit");
    assert_eq!(dataset["columns"].as_array().map(Vec::len), Some(input.num_columns()));
    assert_eq!(dataset["columns"][0]["name"], "price");
    assert_eq!(dataset["models"][0]["model_id"], model_id.as_str());
    assert_eq!(dataset["jobs"][0]["job_id"], job_id.as_str());
    let all = get(&base, "/datasets").await;
    assert!(all["data"].as_array().expect("list").iter().any(|d| d["name"] == "mixed"), "{all}");

    let row = index.model(&model_id).await.expect("model").expect("registered");
    let model = Model::from_json(&row.model_json).expect("model");
    let kinds: Vec<ColumnKind> = model.columns.iter().map(|c| c.kind).collect();
    for kind in [ColumnKind::Continuous, ColumnKind::Categorical, ColumnKind::Mixed] {
        assert!(kinds.contains(&kind), "the table exercises {kind} columns: {kinds:?}");
    }
    let (transformed, inverse) = read_outputs(env.output_root(), &job_id, chunks);
    assert_eq!(transformed.schema(), model.transformed_schema());
    // A message as it sits in the topic, read by a reader that is not ours.
    let payload = message_payload(&env.config, &job_id, 1);
    assert_fastavro_reads(&payload, &input.slice(CHUNK_ROWS, CHUNK_ROWS));
    assert_eq!(inverse.schema().fields(), input.schema().fields(), "the inverse has the input's schema");
    assert_round_trip(&model, &input, &transformed, &inverse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_model_does_not_know_is_refused_counted_or_dead_lettered() {
    let env = TestEnv::with("any_table_unknown", |c| c.publish.chunk_rows = shardflow_testkit::nz(CHUNK_ROWS));
    let known = RecordBatch::try_from_iter([
        ("x", Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| (i % 100) as f64 * 1.5))) as ArrayRef),
        ("colour", Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| ["red", "blue"][i % 2]))) as ArrayRef),
    ])
    .expect("table");
    let file = env.data().join("known.parquet");
    write_parquet(&file, &known);
    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let base = serve_api(&env.config).await;
    let (status, first) = post_job(
        &base,
        serde_json::json!({ "file_path": file.to_str().expect("utf-8"), "dataset": "known", "wait": true }),
    )
    .await;
    assert_eq!(status, 200, "{first}");

    // Other columns: 422 naming what is missing and what is not expected.
    let other = RecordBatch::try_from_iter([
        ("x", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
        ("shade", Arc::new(StringArray::from(vec!["red"])) as ArrayRef),
    ])
    .expect("table");
    let other_file = env.data().join("other.parquet");
    write_parquet(&other_file, &other);
    let (status, refused) =
        post_job(&base, serde_json::json!({ "file_path": other_file.to_str().expect("utf-8"), "dataset": "known" }))
            .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "columns_mismatch");
    let message = refused["error"]["message"].as_str().expect("message");
    assert!(message.contains("missing `colour`") && message.contains("unexpected `shade`"), "{message}");
    let (status, refused) =
        post_job(&base, serde_json::json!({ "file_path": file.to_str().expect("utf-8"), "dataset": "" })).await;
    assert_eq!((status, &refused["error"]["code"]), (422, &serde_json::json!("bad_dataset")), "{refused}");

    // A word in the number column and a colour never seen: counted per column, not a crash.
    let odd = RecordBatch::try_from_iter([
        ("x", Arc::new(StringArray::from(vec![Some("1.5"), Some("abc"), None, Some("3")])) as ArrayRef),
        ("colour", Arc::new(StringArray::from(vec!["red", "green", "blue", "green"])) as ArrayRef),
    ])
    .expect("table");
    let odd_file = env.data().join("odd.parquet");
    write_parquet(&odd_file, &odd);
    let (status, job) = post_job(
        &base,
        serde_json::json!({ "file_path": odd_file.to_str().expect("utf-8"), "dataset": "known", "wait": true }),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["rows_done"], 4);
    assert_eq!(
        job["value_issues"],
        serde_json::json!([
            { "column": "colour", "kind": "unseen", "rows": 2 },
            { "column": "x", "kind": "invalid", "rows": 1 },
        ])
    );

    // A second model fitted for the dataset is registered, not used, until it is told to.
    let first_model = first["model_id"].as_str().expect("model id").to_string();
    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse");
    let mut fit_config = env.config.fit.clone();
    fit_config.mixture.n_components = 3;
    let (second_model, metadata) = shardflow_jobs::fit::fit(
        std::slice::from_ref(&file),
        "known",
        &fit_config,
        1,
        &indicatif::ProgressBar::hidden(),
    )
    .expect("fit");
    assert_ne!(second_model.model_id, first_model);
    let dir = env.model_root().join(&second_model.model_id);
    shardflow_jobs::fit::write_model(&dir, &second_model, &metadata).expect("write");
    shardflow_jobs::fit::register(&index, &dir, &second_model, &metadata).await.expect("register");
    let dataset = get(&base, "/datasets/known").await;
    assert_eq!((&dataset["model_id"], &dataset["model_source"]), (&first["model_id"], &serde_json::json!("first fit")));
    assert_eq!(dataset["models"].as_array().map(Vec::len), Some(2));
    let put = |body: serde_json::Value| {
        let base = base.clone();
        async move {
            let response = reqwest::Client::new()
                .put(format!("{base}/datasets/known/model"))
                .json(&body)
                .send()
                .await
                .expect("PUT");
            (response.status().as_u16(), response.json::<serde_json::Value>().await.expect("JSON"))
        }
    };
    let (status, answer) = put(serde_json::json!({ "model_id": "0000000000000000" })).await;
    assert_eq!((status, &answer["error"]["code"]), (404, &serde_json::json!("not_found")), "{answer}");
    let (status, answer) = put(serde_json::json!({ "model_id": second_model.model_id })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["model_id"].as_str(), answer["model_source"].as_str()),
        (Some(second_model.model_id.as_str()), Some("use"))
    );
    let (status, job) = post_job(
        &base,
        serde_json::json!({ "file_path": file.to_str().expect("utf-8"), "dataset": "known", "wait": true }),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["model_id"].as_str(), Some(second_model.model_id.as_str()), "the job records the model it ran with");

    // A message that says it is an OCF and is not: dead-lettered with the reason.
    let producer = shardflow_kafka::producer(&env.config.kafka).expect("producer");
    let bogus_job = uuid::Uuid::now_v7().to_string();
    let model_id = first["model_id"].as_str().expect("model id");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "job_id", value: Some(bogus_job.as_str()) })
        .insert(Header { key: "chunk", value: Some("0") })
        .insert(Header { key: "model_id", value: Some(model_id) })
        .insert(Header { key: "format", value: Some(shardflow_schemas::ocf::OCF_FORMAT) });
    let record =
        FutureRecord::to(&env.config.kafka.topic).key("bogus").payload(&b"not an avro file"[..]).headers(headers);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("sent");
    let dead = eventually("the bogus message to be dead-lettered", Duration::from_secs(60), || {
        let (index, job) = (index.clone(), bogus_job.clone());
        async move { index.dead_letters(&job).await.ok().filter(|d| !d.is_empty()) }
    })
    .await;
    assert!(dead[0].error.contains(shardflow_schemas::ocf::OCF_FORMAT), "{}", dead[0].error);

    // A job id that is not a UUID (300 bytes would make a file name too long on every
    // attempt) is a bad message: dead-lettered at once, never retried (issue #13, point 3).
    let long_job = "j".repeat(300);
    let payload = shardflow_schemas::ocf::encode(&known.slice(0, 10)).expect("encode");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "job_id", value: Some(long_job.as_str()) })
        .insert(Header { key: "chunk", value: Some("0") })
        .insert(Header { key: "model_id", value: Some(model_id) })
        .insert(Header { key: "format", value: Some(shardflow_schemas::ocf::OCF_FORMAT) });
    let record = FutureRecord::to(&env.config.kafka.topic).key("long").payload(&payload).headers(headers);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("sent");
    let dead = eventually("the message with a 300-byte job id to be dead-lettered", Duration::from_secs(60), || {
        let index = index.clone();
        async move { index.dead_letters("").await.ok().filter(|d| !d.is_empty()) }
    })
    .await;
    assert!(dead[0].error.contains("job_id header"), "{}", dead[0].error);
}

/// What fastavro, a reader that is not ours, makes of one chunk's bytes: the writer
/// schema's field names and the rows as JSON.
fn fastavro_rows(payload: &[u8], dir: &Path) -> serde_json::Value {
    let path = dir.join("chunk.avro");
    std::fs::write(&path, payload).expect("write payload");
    let script = "import sys, json, fastavro\n\
                  with open(sys.argv[1], 'rb') as f:\n\
                  \x20   r = fastavro.reader(f)\n\
                  \x20   rows = [{k: (v.isoformat() if hasattr(v, 'isoformat') else v) for k, v in row.items()} for row in r]\n\
                  \x20   print(json.dumps({'fields': [f['name'] for f in r.writer_schema['fields']], 'rows': rows}))\n";
    let out = std::process::Command::new(shardflow_testkit::python())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python");
    assert!(out.status.success(), "fastavro failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

/// fastavro reads `payload` and gets `input`'s rows (a mixed table's), column by column.
fn assert_fastavro_reads(payload: &[u8], input: &RecordBatch) {
    let dir = tempfile::tempdir().expect("dir");
    let read = fastavro_rows(payload, dir.path());
    let fields: Vec<&str> = read["fields"].as_array().expect("fields").iter().filter_map(|f| f.as_str()).collect();
    assert_eq!(fields.len(), input.num_columns());
    assert_eq!(fields[12], "large_word", "a name made a valid Avro name");
    let rows = read["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), input.num_rows());
    for (i, row) in rows.iter().enumerate() {
        let price = input.column(0).as_any().downcast_ref::<Float64Array>().expect("f64");
        assert_eq!(row["price"].as_f64(), price.is_valid(i).then(|| price.value(i)), "price row {i}");
        let big = input.column(5).as_any().downcast_ref::<Int64Array>().expect("i64");
        assert_eq!(row["big"].as_i64(), big.is_valid(i).then(|| big.value(i)), "big row {i}");
        let u64s = input.column(9).as_any().downcast_ref::<UInt64Array>().expect("u64");
        assert_eq!(row["u64"].as_u64(), u64s.is_valid(i).then(|| u64s.value(i)), "u64 row {i}");
        let word = input.column(11).as_any().downcast_ref::<StringArray>().expect("utf8");
        assert_eq!(row["word"].as_str(), word.is_valid(i).then(|| word.value(i)), "word row {i}");
        let yes = input.column(13).as_any().downcast_ref::<BooleanArray>().expect("bool");
        assert_eq!(row["yes"].as_bool(), yes.is_valid(i).then(|| yes.value(i)), "yes row {i}");
        let tag = arrow_cast::cast(input.column(17), &DataType::Utf8).expect("dict as text");
        let tag = tag.as_any().downcast_ref::<StringArray>().expect("utf8");
        assert_eq!(row["tag"].as_str(), tag.is_valid(i).then(|| tag.value(i)), "tag row {i}");
        // fastavro gives dates and zoned timestamps as dates: compare their text.
        let day = input.column(14).as_any().downcast_ref::<Date32Array>().expect("date");
        let expected = day.is_valid(i).then(|| day.value_as_date(i).expect("date").to_string());
        assert_eq!(row["day"].as_str().map(str::to_string), expected, "day row {i}");
    }
}

#[test]
fn fastavro_reads_an_encoded_chunk_and_gets_the_same_rows() {
    let input = mixed_table(3).slice(0, 50);
    assert_fastavro_reads(&shardflow_schemas::ocf::encode(&input).expect("encode"), &input);
}

/// The payload of chunk `seq` of `job`, read back from the topic by a reader of its own.
fn message_payload(config: &shardflow_config::Config, job: &str, seq: u64) -> Vec<u8> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("{}.reader", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..config.kafka.partitions {
        partitions.add_partition_offset(&config.kafka.topic, p, rdkafka::Offset::Beginning).expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (job, seq) = (job.as_bytes(), seq.to_string());
    while std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("message");
        let header = |key: &str| {
            message.headers().and_then(|hs| hs.iter().find(|h| h.key == key).and_then(|h| h.value.map(<[u8]>::to_vec)))
        };
        if header("job_id").as_deref() == Some(job) && header("chunk").as_deref() == Some(seq.as_bytes()) {
            return message.payload().expect("payload").to_vec();
        }
    }
    panic!("chunk {seq} not found in the topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_chunk_left_in_the_topic_is_still_transformed() {
    let env = TestEnv::new("any_table_v1");
    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse");
    // An Amount model, fitted and registered as `producer fit` does.
    let shard = env.data().join("Amount_Shard_1.parquet");
    let amounts: Vec<Option<f64>> =
        (0..2_000u32).map(|i| (!i.is_multiple_of(10)).then(|| ((i % 97) as f64).powi(2) + 1.0)).collect();
    let batch =
        RecordBatch::try_from_iter([("Amount", Arc::new(Float64Array::from(amounts)) as ArrayRef)]).expect("batch");
    write_parquet(&shard, &batch);
    let (model, metadata) = shardflow_jobs::fit::fit(
        std::slice::from_ref(&shard),
        "Amount",
        &env.config.fit,
        1,
        &indicatif::ProgressBar::hidden(),
    )
    .expect("fit");
    let dir = env.model_root().join(&model.model_id);
    shardflow_jobs::fit::write_model(&dir, &model, &metadata).expect("write");
    shardflow_jobs::fit::register(&index, &dir, &model, &metadata).await.expect("register");

    // What an older producer sent: one Avro datum, a `schema` header and no `format`.
    let v1 = shardflow_schemas::ChunkCodec::amount().expect("v1 codec");
    let job = uuid::Uuid::now_v7().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "job_id", value: Some(job.as_str()) })
        .insert(Header { key: "chunk", value: Some("0") })
        .insert(Header { key: "model_id", value: Some(model.model_id.as_str()) })
        .insert(Header { key: "schema", value: Some(v1.schema_name()) });
    let payload = v1.encode(&batch).expect("encode");
    shardflow_kafka::ensure_topic(&env.config.kafka, &env.config.kafka.topic).await.expect("topic");
    let producer = shardflow_kafka::producer(&env.config.kafka).expect("producer");
    let record = FutureRecord::to(&env.config.kafka.topic).key("v1").payload(&payload).headers(headers);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("sent");

    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let output = eventually("the version-1 chunk's outputs", Duration::from_secs(60), || {
        let (index, job) = (index.clone(), job.clone());
        async move { index.outputs(&job).await.ok().and_then(|o| o.into_iter().next()) }
    })
    .await;
    assert_eq!(output.rows, 2_000);
    let transformed = read_part(Path::new(&output.transform_path));
    let inverse = read_part(Path::new(&output.inverse_path));
    assert_round_trip(&model, &batch, &transformed, &inverse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creative_packs_dataset_rides_the_pipeline() {
    let env = TestEnv::with("any_table_creative", |c| c.publish.chunk_rows = shardflow_testkit::nz(CHUNK_ROWS));
    let dir = env.data().join("creative-packs");
    let options = shardflow_generate::CreativeOptions {
        rows: ROWS as u64,
        target_stores: 4,
        creative_packs: 12,
        ..shardflow_generate::CreativeOptions::new(&dir)
    };
    shardflow_generate::generate_creative_packs(&options, &indicatif::ProgressBar::hidden()).expect("generate");
    let file = dir.join("dataset_v1.parquet");
    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);
    let base = serve_api(&env.config).await;
    let (status, job) = post_job(
        &base,
        serde_json::json!({ "file_path": file.to_str().expect("utf-8"), "dataset": "creative-packs", "wait": true }),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    let job_id = job["job_id"].as_str().expect("job id");
    let index = Index::connect(&env.config.clickhouse).await.expect("ClickHouse");
    let row = index.model(job["model_id"].as_str().expect("model")).await.expect("model").expect("registered");
    let model = Model::from_json(&row.model_json).expect("model");
    assert!(model.columns.iter().all(|c| c.kind == ColumnKind::Categorical), "ids and the label are categories");
    let input = read_table(&file);
    let (transformed, inverse) = read_outputs(env.output_root(), job_id, ROWS.div_ceil(CHUNK_ROWS) as u64);
    assert_round_trip(&model, &input, &transformed, &inverse);
}

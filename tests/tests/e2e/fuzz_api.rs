//! Property-based fuzzing of the API from its own OpenAPI document, with schemathesis
//! (installed into .services/venv by scripts/pytools.sh, which `make test` runs). The API
//! runs against the real broker and ClickHouse with a consumer process, so that jobs can
//! finish; whatever schemathesis sends, bounded in examples, no answer may be a 5xx.

use shardflow_testkit::dataset as common;

use std::path::PathBuf;
use std::time::Duration;

use shardflow_testkit::TestEnv;

const TOKEN: &str = "fuzz-token";

fn schemathesis() -> PathBuf {
    std::env::var_os("SHARDFLOW_SCHEMATHESIS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.services/venv/bin/schemathesis"),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_gets_a_server_error() {
    let tool = schemathesis();
    assert!(tool.is_file(), "{} is missing: run scripts/pytools.sh (make test does)", tool.display());
    let env = TestEnv::with("fuzz_api", |c| {
        c.api.token = Some(shardflow_config::Secret::new(TOKEN));
        c.api.max_generated_rows = 5_000;
        c.api.max_upload_bytes = 1 << 20;
        c.api.wait_timeout = Duration::from_secs(60);
        c.fit.sample_rows_per_shard = shardflow_testkit::nz(2_000);
        c.publish.chunk_rows = shardflow_testkit::nz(1_000);
    });
    let base = common::serve_api(&env.config).await;
    // Jobs submitted with "wait" finish only if someone transforms them.
    let _consumer = shardflow_testkit::consumer(&env.config_path, &[], &[]);

    let run = tokio::process::Command::new(&tool)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "not_a_server_error", "--max-examples", "15", "--seed", "7"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--request-timeout", "90"])
        .env("NO_COLOR", "1")
        .current_dir(env.dir.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes in 10 min")
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{report}");
    assert!(output.status.success(), "schemathesis found failures:\n{report}");
    // Every operation of the document was exercised, with many generated cases.
    let figure = |label: &str| -> Option<u64> {
        let after = &report[report.find(label)? + label.len()..];
        after.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let tested = figure("Tested:").unwrap_or_else(|| panic!("no operation count in the report:\n{report}"));
    assert!(tested >= 18, "schemathesis tested {tested} operations, the API has 18:\n{report}");
    let cases = figure("Test cases:").unwrap_or_else(|| panic!("no case count in the report:\n{report}"));
    assert!(cases >= 100, "schemathesis generated only {cases} cases:\n{report}");
}

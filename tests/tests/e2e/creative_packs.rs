//! `producer generate --dataset creative-packs`, `producer dataset versions` and `producer
//! dataset show`, run as the binary (no broker, no ClickHouse): versions are numbered 1,
//! 2, ..., an existing version is refused with a one-line reason, a non-zero status and
//! its files untouched, and bad input ends with a one-line reason, never a panic.

use std::path::Path;
use std::process::{Command, Output};

fn producer(args: &[&str]) -> Output {
    Command::new(shardflow_testkit::bin("producer")).args(args).output().expect("run producer")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

/// The one line of a failed run.
fn failure(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().into_string().expect("utf8"), std::fs::read(e.path()).expect("read"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn versions_are_listed_shown_and_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("packs");
    let out = dir.to_str().expect("utf8");
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--dataset", "creative-packs", "--rows", "5000", "--out", out];
        args.extend_from_slice(extra);
        producer(&args)
    };
    let first = ok(generate(&["--target-stores", "3", "--creative-packs", "5", "--seed", "7"]));
    assert!(first.starts_with("wrote version 1 of creative-packs to "), "{first}");
    assert!(first.trim_end().ends_with("5000 rows, 3 target stores, 5 creative packs"), "{first}");
    let before = snapshot(&dir);
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["dataset_v1.parquet", "dataset_v1.tfrecord", "metadata_v1.json"]
    );

    let line = failure(generate(&["--version", "1"]));
    assert!(line.starts_with("producer: version 1 already exists in "), "{line}");
    assert_eq!(snapshot(&dir), before, "a refused run changed the directory");

    assert!(ok(generate(&[])).starts_with("wrote version 2 "));
    let listed = ok(producer(&["dataset", "versions", out]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("v1  5000 rows  ") && lines[1].starts_with("v2  5000 rows  "), "{listed}");
    assert!(lines[0].ends_with("dataset_v1.parquet dataset_v1.tfrecord metadata_v1.json"), "{listed}");

    let shown: serde_json::Value =
        serde_json::from_str(&ok(producer(&["dataset", "show", out, "--version", "1"]))).expect("JSON");
    assert_eq!(shown["seed"], 7);
    assert_eq!(shown["rows"], 5000);
    assert_eq!(shown["target_stores"].as_array().map(Vec::len), Some(3));
    assert_eq!(shown["pairs"].as_array().map(Vec::len), Some(5));
    assert_eq!(shown["files"][1]["name"], "dataset_v1.tfrecord");

    let missing = tmp.path().join("missing");
    let missing = missing.to_str().expect("utf8");
    for (args, reason) in [
        (&["dataset", "show", out, "--version", "9"][..], "has no version 9 (versions: 1, 2)"),
        (&["dataset", "versions", missing], "is not a directory"),
        (&["dataset", "show", missing, "--version", "1"], "is not a directory"),
        (&["generate", "--dataset", "creative-packs", "--rows", "0", "--out", out], "--rows must be"),
        (&["generate", "--dataset", "creative-packs", "--target-stores", "0", "--out", out], "--target-stores must be"),
        (
            &["generate", "--dataset", "creative-packs", "--creative-packs", "0", "--out", out],
            "--creative-packs must be",
        ),
        (&["generate", "--dataset", "creative-packs", "--version", "0", "--out", out], "--version must be"),
        (&["generate", "--rows", "10", "--version", "2", "--out", out], "apply to --dataset creative-packs only"),
    ] {
        let line = failure(producer(args));
        assert!(line.starts_with("producer: ") && line.contains(reason), "{args:?}: {line}");
    }
    assert_eq!(ok(producer(&["dataset", "versions", out])).lines().count(), 2, "bad input wrote a version");
}

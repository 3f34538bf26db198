//! No torn or stray files: a consumer killed (SIGKILL) while it writes a part leaves its
//! temporary behind; readers of the output directories (pyarrow datasets, DuckDB) must
//! still see every row once, and the next consumer sweeps old temporaries at start.

use shardflow_testkit::dataset as common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::Dataset;
use shardflow_storage::{inverse_dir, transform_dir};

const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// Files in the job's two output directories that are not finished parts.
fn temporaries(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !entry.file_name().to_string_lossy().ends_with(".parquet") {
                found.push(entry.path());
            }
        }
    }
    found
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Rows that pyarrow's dataset reader and DuckDB see in `dir`: `[pyarrow, duckdb]`. Both
/// decode every column of every part (the parts' encodings are the consumer's: delta
/// flags, plain floats, Snappy) and must agree on each column's sum.
fn rows_read(dir: &Path) -> [u64; 2] {
    let script = "import sys, json, math, pyarrow.dataset as ds, pyarrow.compute as pc, duckdb\n\
                  d = sys.argv[1]\n\
                  t = ds.dataset(d, format='parquet').to_table()\n\
                  sums = ', '.join(f'sum(\"{c}\")::DOUBLE' for c in t.column_names)\n\
                  m = duckdb.sql(f\"SELECT count(*), {sums} FROM read_parquet('{d}/*.parquet')\").fetchall()[0]\n\
                  for c, s in zip(t.column_names, m[1:]):\n    \
                      a = float(pc.sum(t[c]).as_py() or 0)\n    \
                      assert math.isclose(a, float(s or 0), rel_tol=1e-9, abs_tol=1e-6), (c, a, s)\n\
                  print(json.dumps([t.num_rows, m[0]]))\n";
    let out = std::process::Command::new(shardflow_testkit::python())
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "pyarrow/duckdb failed on {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_leaves_nothing_readers_take_for_data() {
    let data = Dataset::new("torn", 600_000, 20_000, |_| {}).await;
    let job = data.publish().await;
    let root = data.env.output_root().to_path_buf();
    std::fs::create_dir_all(&root).expect("output root");
    let root = root.canonicalize().expect("output root");
    let dirs = [transform_dir(&root, &job.job_id), inverse_dir(&root, &job.job_id)];
    let mut first = data.consumer();
    let pid = first.id().expect("running");

    // Poll (tightly: a part is written in milliseconds) until a temporary exists, stop the
    // process, and kill it only if the temporary is still there: the kill then happens
    // mid-write, deterministically.
    let deadline = Instant::now() + JOB_TIMEOUT;
    let stray = loop {
        assert!(Instant::now() < deadline, "no temporary file was ever seen");
        if temporaries(&dirs).is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        signal(pid, "-STOP");
        let seen = temporaries(&dirs);
        if let Some(stray) = seen.first() {
            signal(pid, "-KILL");
            break stray.clone();
        }
        signal(pid, "-CONT");
    };
    first.wait().await.expect("reaped");
    println!("killed mid-write, leaving {}", stray.display());

    // A temporary left long ago by another dead writer: the next start sweeps it. (The one
    // just left is young, so the sweep leaves it, as it would a live writer's.)
    let old = stray.with_file_name(format!("{}-old", stray.file_name().expect("name").to_string_lossy()));
    std::fs::copy(&stray, &old).expect("copy");
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&old).expect("open").set_modified(hour_ago).expect("mtime");

    let _second = data.consumer();
    data.wait_indexed(&job.job_id, job.chunks, JOB_TIMEOUT).await;
    data.assert_exactly_once(&job).await;
    for dir in &dirs {
        assert_eq!(rows_read(dir), [job.rows, job.rows], "rows pyarrow and DuckDB read in {}", dir.display());
    }
    let left = temporaries(&dirs);
    assert!(!left.contains(&old), "an old temporary is swept at start: {left:?}");
    for path in &left {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with('.'), "a temporary that readers do not skip: {name}");
    }
}

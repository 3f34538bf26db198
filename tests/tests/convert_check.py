"""Checks for tests/tests/e2e/convert.rs, from outside shardflow (DuckDB, pyarrow, fastavro).

  convert_check.py check MANIFEST.json
      MANIFEST: {"source": CSV, "cases": [{"sql": ..., "output": PATH, "format": F}, ...]}.
      DuckDB runs each case's SQL over the source CSV (as the view `data`); the output,
      read by pyarrow (csv, parquet, json, arrow) or fastavro (avro), must hold the same
      column names and the same rows in the same order (floats to 1e-9 relative).
      Prints {"cases": N, "rows": [rows of each case]} and exits 1 on the first mismatch.

  convert_check.py rss -- COMMAND...
      Runs COMMAND alone and prints {"status", "maxrss_kib", "stdout", "stderr"}: the peak
      resident set of that one child (getrusage of this process's children).
"""

import json
import math
import resource
import subprocess
import sys


def read_output(path, fmt):
    if fmt == "avro":
        import fastavro

        with open(path, "rb") as f:
            reader = fastavro.reader(f)
            names = [field["name"] for field in reader.writer_schema["fields"]]
            rows = [tuple(record[n] for n in names) for record in reader]
        return names, rows
    import pyarrow.csv
    import pyarrow.ipc
    import pyarrow.json
    import pyarrow.parquet

    if fmt == "csv":
        table = pyarrow.csv.read_csv(path)
    elif fmt == "parquet":
        table = pyarrow.parquet.read_table(path)
    elif fmt == "json":
        table = pyarrow.json.read_json(path)
    elif fmt == "arrow":
        with pyarrow.ipc.open_file(path) as reader:
            table = reader.read_all()
    else:
        raise SystemExit(f"unknown format {fmt}")
    names = table.column_names
    columns = [table.column(n).to_pylist() for n in names]
    return names, [tuple(row) for row in zip(*columns)] if columns else []


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def check(manifest_path):
    import duckdb

    with open(manifest_path) as f:
        manifest = json.load(f)
    db = duckdb.connect()
    db.execute(f"CREATE VIEW data AS SELECT * FROM read_csv('{manifest['source']}', header = true)")
    counts = []
    for case in manifest["cases"]:
        result = db.execute(case["sql"])
        want_names = [d[0] for d in result.description]
        want = [tuple(r) for r in result.fetchall()]
        names, got = read_output(case["output"], case["format"])
        where = f"{case['output']} ({case['format']}) for {case['sql']!r}"
        if names != want_names:
            raise SystemExit(f"{where}: columns {names}, DuckDB's {want_names}")
        if len(got) != len(want):
            raise SystemExit(f"{where}: {len(got)} rows, DuckDB {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            if len(g) != len(w) or not all(same(x, y) for x, y in zip(g, w)):
                raise SystemExit(f"{where}: row {i} is {g}, DuckDB's {w}")
        counts.append(len(got))
    print(json.dumps({"cases": len(counts), "rows": counts}))


def rss(command):
    done = subprocess.run(command, capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"status": done.returncode, "maxrss_kib": peak, "stdout": done.stdout, "stderr": done.stderr}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "rss" and sys.argv[2] == "--":
        rss(sys.argv[3:])
    else:
        raise SystemExit(__doc__)

"""Set shardflow's random forest (pipeline/src/forest.rs) beside scikit-learn's
RandomForestRegressor, fitted and scored on the same train and test Parquet files.

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -r bench/python/requirements.txt pyarrow==22.0.0
    cargo build --release -p shardflow-pipeline --example forest
    # synthetic files with the pipeline's columns, if the real ones are not at hand:
    /tmp/bench-venv/bin/python bench/python/forest.py --train /tmp/train.parquet \\
        --test /tmp/test.parquet --make-synthetic 200000,50000
    /tmp/bench-venv/bin/python bench/python/forest.py --train /tmp/train.parquet \\
        --test /tmp/test.parquet --seeds 1,2,3 --threads 1 --min-samples-leaf 1,5,20

(bench/python/requirements.txt pins scikit-learn; pyarrow is pinned as in
scripts/requirements-tests.txt.) For every min_samples_leaf and seed it fits
RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=threads,
min_samples_leaf=...) and runs the Rust example binary with the same arguments, each in a
process of its own, so that peak memory is per run: ru_maxrss of the scikit-learn process
(getrusage, not tracemalloc, so numpy's and the trees' C allocations count) and VmHWM of the
Rust process, both read after predicting and before the model is serialized. Model size is
the pickle (protocol 5) against the Parquet model file. It prints mean [min-max] over seeds
side by side and writes everything to bench/results/forest-<UTC time>.json.
"""
import argparse
import datetime
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS = [
    ("r2", "test R²", "{:.4f}"),
    ("mae", "MAE", "{:,.0f}"),
    ("rmse", "RMSE", "{:,.0f}"),
    ("fit_s", "fit s", "{:.2f}"),
    ("predict_s", "predict s", "{:.3f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:,.0f}"),
    ("model_mib", "model MiB", "{:,.1f}"),
    ("nodes_m", "nodes (M)", "{:.2f}"),
]


def make_synthetic(train, test, sizes, seed=0):
    """Volume as a noisy function of its moving average and, a little, of the price."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    for path, rows in zip((train, test), sizes):
        vol_avg = rng.lognormal(13.5, 1.2, rows)
        price = rng.lognormal(3.5, 1.0, rows)
        volume = vol_avg * rng.lognormal(0.0, 0.35, rows) * (1.0 + 0.15 * np.sin(price / 10.0))
        table = pa.table({
            "vol_moving_avg": pa.array(vol_avg, pa.float64()),
            "adj_close_rolling_med": pa.array(price, pa.float64()),
            "Volume": pa.array(np.round(volume).astype(np.int64), pa.int64()),
        })
        pq.write_table(table, path)
        print(f"wrote {rows} rows to {path}", file=sys.stderr)


def load(path, features, target):
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=features + [target])
    x = np.column_stack([table[f].to_numpy().astype(np.float64) for f in features])
    return x, table[target].to_numpy().astype(np.float64)


def one_sklearn(args):
    """One scikit-learn run in this process: print its JSON line."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    features = args.features.split(",")
    x_train, y_train = load(args.train, features, args.target)
    x_test, y_test = load(args.test, features, args.target)
    model = RandomForestRegressor(
        n_estimators=args.trees, random_state=args.seed, n_jobs=args.threads,
        min_samples_leaf=args.one_min_samples_leaf, max_depth=args.max_depth,
    )
    start = time.perf_counter()
    model.fit(x_train, y_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = model.predict(x_test)
    predict_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pkl"
        with open(path, "wb") as f:
            pickle.dump(model, f, protocol=5)
        model_bytes = path.stat().st_size
    print(json.dumps({
        "seed": args.seed, "r2": r2_score(y_test, pred), "mae": mean_absolute_error(y_test, pred),
        "rmse": mean_squared_error(y_test, pred) ** 0.5, "fit_s": fit_s, "predict_s": predict_s,
        "model_bytes": model_bytes, "nodes": int(sum(e.tree_.node_count for e in model.estimators_)),
        "peak_rss_mib": peak,
    }))


def run_json(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def common(args):
    cmd = ["--train", args.train, "--test", args.test, "--features", args.features, "--target", args.target,
           "--threads", str(args.threads), "--trees", str(args.trees)]
    if args.max_depth is not None:
        cmd += ["--max-depth", str(args.max_depth)]
    return cmd


def summary(runs):
    out = {}
    for key, _, _ in METRICS:
        values = [r[key] for r in runs]
        out[key] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return out


def cell(stats, fmt):
    mean, lo, hi = (fmt.format(stats[k]) for k in ("mean", "min", "max"))
    return mean if lo == hi else f"{mean} [{lo}–{hi}]"


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average": os.getloadavg()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--features", default="vol_moving_avg,adj_close_rolling_med")
    parser.add_argument("--target", default="Volume")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--min-samples-leaf", default="1", help="comma-separated: one comparison per value")
    parser.add_argument("--max-depth", type=int)
    parser.add_argument("--rust-bin", default=str(ROOT / "target/release/examples/forest"))
    parser.add_argument("--make-synthetic", metavar="TRAIN_ROWS,TEST_ROWS",
                        help="write synthetic --train and --test files and stop")
    parser.add_argument("--out", help="JSON results (default bench/results/forest-<UTC time>.json)")
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-min-samples-leaf", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_synthetic:
        make_synthetic(args.train, args.test, [int(n) for n in args.make_synthetic.split(",")])
        return
    if args.one_seed is not None:
        args.seed = args.one_seed
        one_sklearn(args)
        return

    import numpy
    import pyarrow
    import sklearn

    seeds = [int(s) for s in args.seeds.split(",")]
    leaves = [int(n) for n in args.min_samples_leaf.split(",")]
    load_before = os.getloadavg()
    columns = []
    for msl in leaves:
        for name in ("sklearn", "shardflow"):
            runs = []
            for seed in seeds:
                if name == "sklearn":
                    cmd = [sys.executable, __file__, *common(args), "--one-seed", str(seed),
                           "--one-min-samples-leaf", str(msl)]
                else:
                    cmd = [args.rust_bin, *common(args), "--seeds", str(seed), "--min-samples-leaf", str(msl)]
                [run] = run_json(cmd)
                run["model_mib"] = run["model_bytes"] / 2**20
                run["nodes_m"] = run["nodes"] / 1e6
                print(json.dumps({"impl": name, "min_samples_leaf": msl, **run}), file=sys.stderr, flush=True)
                runs.append(run)
            columns.append({"impl": name, "min_samples_leaf": msl, "runs": runs, "summary": summary(runs)})

    headers = [f"{c['impl']} leaf≥{c['min_samples_leaf']}" for c in columns]
    rows = [[label] + [cell(c["summary"][key], fmt) for c in columns] for key, label, fmt in METRICS]
    widths = [max(len(r[i]) for r in rows + [["metric"] + headers]) for i in range(len(headers) + 1)]
    for row in [["metric"] + headers] + rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"mean [min–max] over seeds {seeds}; {args.threads} thread(s); {args.trees} trees; "
          f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(args.out) if args.out else ROOT / "bench/results" / f"forest-{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "when": now.isoformat(timespec="seconds"), "machine": machine(), "load_average_before": load_before,
        "versions": {"sklearn": sklearn.__version__, "numpy": numpy.__version__, "pyarrow": pyarrow.__version__},
        "args": vars(args), "memory": "sklearn: getrusage ru_maxrss of its own process; shardflow: VmHWM; "
                                      "both after predict, before serializing the model",
        "results": columns,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

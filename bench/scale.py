#!/usr/bin/env python3
"""A scale run of the whole pipeline on the real services, repeatable by anyone.

    make scale ROWS=100000000 CONSUMERS=2      # or: bench/scale.py --rows N --consumers K

Generates `Amount` shards, fits one model over them (`producer fit`; `--fit group` has the K
consumers fit it, `producer fit --on-group`, and `--fit both` does both, checks that the two
`model.json` files are byte-equal and times each), starts K consumers and the API, submits every shard, follows the jobs with a progress bar until every row is
indexed, and prints rows per second end to end and per stage, the p50/p99 latency of a chunk
from its publish to its index (the consumers' `publish_to_index_seconds` histogram, so a
quantile is the upper bound of its bucket), the peak RSS of every process, and the bytes the
broker and the outputs took on disk. The same figures go to a JSON summary under
`bench/results/` (or `--results DIR`).

Needs `scripts/services.sh up` and `cargo build --profile release --bins` (as `make scale`
does). Uses only the standard library. Every name it makes (topic, group, database, work
directory) is its own; the database and the work directory are removed at the end unless
`--keep` (the topic stays: the standard library has no Kafka client; the test that runs this
script passes its own topic, which the test removes).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLICKHOUSE = os.environ.get("SHARDFLOW_BENCH_CLICKHOUSE", "http://127.0.0.1:8123/")
BROKER_FILES = ROOT / ".services" / "tansu"


def fail(reason):
    print(f"scale: {reason}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def clickhouse(sql):
    request = urllib.request.Request(CLICKHOUSE, data=sql.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def eventually(what, seconds, probe):
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def tree_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def peak_rss(pid):
    """Peak resident set (bytes) of a running process, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def run_timed(argv, log):
    """Run a command to its end: (seconds, peak RSS in bytes)."""
    started = time.monotonic()
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        fail(f"{' '.join(map(str, argv))} failed; see {log}:\n{Path(log).read_text()[-2000:]}")
    return seconds, usage.ru_maxrss * 1024


def assigned(metrics_port):
    """The partitions a consumer holds (its `shardflow_consumer_assigned_partitions` gauge)."""
    status, body = http("GET", f"http://127.0.0.1:{metrics_port}/metrics")
    if status != 200:
        return 0
    for line in body.decode().splitlines():
        if line.startswith("shardflow_consumer_assigned_partitions"):
            return float(line.split()[-1])
    return 0


def histogram(text, name):
    """Cumulative buckets [(upper bound, count)] of one Prometheus histogram."""
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return sorted(buckets.items())


def quantile(buckets, q):
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return buckets[-1][0]


class Bar:
    """One line on stderr, redrawn in place on a terminal, every few seconds otherwise."""

    def __init__(self, total):
        self.total, self.tty, self.last = total, sys.stderr.isatty(), 0.0

    def show(self, done, started, note=""):
        now = time.monotonic()
        if not self.tty and now - self.last < 5 and done < self.total:
            return
        self.last = now
        share = done / self.total if self.total else 1
        filled = int(share * 30)
        rate = done / max(now - started, 1e-9)
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {done:>13,}/{self.total:,} rows {rate:>12,.0f} rows/s {note}"
        print(("\r" if self.tty else "") + line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self):
        if self.tty:
            print(file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--shard-rows", type=int, default=0, help="rows per shard (default: rows/10, at most 10M)")
    parser.add_argument("--partitions", type=int, default=0, help="topic partitions (default: 2 per consumer)")
    parser.add_argument("--bin", type=Path, default=ROOT / "target" / "release")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the jobs may take")
    parser.add_argument("--topic", help="topic and consumer group (default: bench.scale.<pid>_<time>)")
    parser.add_argument("--database", help="ClickHouse database (default: bench_scale_<pid>_<time>)")
    parser.add_argument("--fit", choices=("local", "group", "both"), default="local",
                        help="fit on this machine, on the consumer group, or both (compared byte for byte)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and database")
    args = parser.parse_args()
    if args.rows <= 0 or args.consumers <= 0:
        fail("--rows and --consumers must be positive")
    shard_rows = args.shard_rows or max(1, min(10_000_000, -(-args.rows // 10)))
    partitions = args.partitions or 2 * args.consumers
    if -(-args.rows // shard_rows) > 1000:
        fail("more than 1000 shards: raise --shard-rows")
    for binary in ("producer", "consumer"):
        if not (args.bin / binary).exists():
            fail(f"{args.bin / binary} is missing: run `cargo build --profile release --bins` first")
    if http("GET", CLICKHOUSE + "ping")[0] != 200:
        fail(f"ClickHouse does not answer at {CLICKHOUSE}: run `scripts/services.sh up` first")

    tag = f"{os.getpid()}_{int(time.time())}"
    name = args.database or f"bench_scale_{tag}"
    topic = args.topic or f"bench.scale.{tag}"
    work = Path(tempfile.mkdtemp(prefix="shardflow-scale."))
    data = work / "data"
    (data / "amount").mkdir(parents=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    config = work / "config.toml"
    config.write_text(
        f"""[kafka]
topic = "{topic}"
group_id = "{topic}"
partitions = {partitions}
[clickhouse]
database = "{name}"
[storage]
data_roots = ["{data}"]
output_root = "{data}/outputs"
model_root = "{data}/models"
[api]
listen = "127.0.0.1:{port}"
"""
    )
    processes = []

    def cleanup():
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.keep:
            try:
                clickhouse(f"DROP DATABASE IF EXISTS {name}")
            except OSError:
                pass
            shutil.rmtree(work, ignore_errors=True)

    try:
        summary = run(args, shard_rows, partitions, work, data, config, api, processes)
    finally:
        cleanup()
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"scale-{args.rows}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out}")


def run(args, shard_rows, partitions, work, data, config, api, processes):
    producer = [str(args.bin / "producer"), "--config", str(config)]
    broker_before = tree_bytes(BROKER_FILES)
    stages = {}
    print(f"scale: {args.rows:,} rows in shards of {shard_rows:,}, {args.consumers} consumer(s), "
          f"{partitions} partitions, work in {work}", file=sys.stderr)

    seconds, rss = run_timed(producer + ["generate", "--rows", str(args.rows), "--shard-rows", str(shard_rows),
                                         "--out", str(data / "amount"), "--seed", "42"], work / "generate.log")
    stages["generate"] = {"seconds": seconds, "rows_per_second": args.rows / seconds, "peak_rss_bytes": rss}
    shards = sorted((data / "amount").glob("*.parquet"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if args.fit in ("local", "both"):
        seconds, rss = run_timed(producer + ["fit", "--shards", str(data / "amount"), "--out",
                                             str(data / "models" / "amount")], work / "fit.log")
        stages["fit"] = {"seconds": seconds, "rows_per_second": args.rows / seconds, "peak_rss_bytes": rss}

    metrics_ports = []
    for i in range(args.consumers):
        metrics_port = free_port()
        metrics_ports.append(metrics_port)
        env = dict(os.environ, SHARDFLOW__CONSUMER__LISTEN=f"127.0.0.1:{metrics_port}")
        with open(work / f"consumer-{i + 1}.log", "wb") as log:
            processes.append(subprocess.Popen([str(args.bin / "consumer"), "--config", str(config)], stdout=log,
                                              stderr=subprocess.STDOUT, env=env))
    eventually("every consumer to be ready", 120,
               lambda: all(http("GET", f"http://127.0.0.1:{p}/readyz")[0] == 200 for p in metrics_ports))

    if args.fit in ("group", "both"):
        # Every consumer holds partitions first, so that the fit's tasks are shared out.
        eventually("every consumer to hold partitions", 120,
                   lambda: all(assigned(p) > 0 for p in metrics_ports))
        out = data / "models" / ("amount-group" if args.fit == "both" else "amount")
        seconds, rss = run_timed(producer + ["fit", "--shards", str(data / "amount"), "--out", str(out), "--on-group"],
                                 work / "fit-on-group.log")
        stages["fit_on_group"] = {"seconds": seconds, "rows_per_second": args.rows / seconds, "peak_rss_bytes": rss}
        if args.fit == "both":
            local = (data / "models" / "amount" / "model.json").read_bytes()
            if (out / "model.json").read_bytes() != local:
                fail("the consumer group's model.json differs from the local fit's")
            stages["fit_on_group"]["model_equal_to_local"] = True

    with open(work / "api.log", "wb") as log:
        processes.append(subprocess.Popen(producer + ["serve"], stdout=log, stderr=subprocess.STDOUT))
    eventually("the API to be ready", 120, lambda: http("GET", f"{api}/readyz")[0] == 200)

    started = time.monotonic()
    jobs = []
    for shard in shards:
        status, body = http("POST", f"{api}/jobs", {"file_path": f"amount/{shard.name}"})
        if status not in (200, 201, 202):
            fail(f"POST /jobs for {shard.name}: {status} {body[:300]!r}")
        jobs.append(json.loads(body)["job_id"])
    bar = Bar(args.rows)
    published_at = None
    deadline = started + args.timeout
    while True:
        # The bench's database holds its jobs only: one page lists them all.
        status, body = http("GET", f"{api}/jobs?page_size=1000")
        if status != 200:
            fail(f"GET /jobs: {status} {body[:300]!r}")
        views = json.loads(body)["data"]
        if len(views) != len(jobs):
            fail(f"GET /jobs lists {len(views)} jobs, {len(jobs)} were submitted")
        failed = [v for v in views if v["status"] == "failed"]
        if failed:
            fail(f"job {failed[0]['job_id']} failed: {failed[0].get('error')}")
        done = sum(v["rows_done"] for v in views)
        if published_at is None and all(v["status"] not in ("fitting", "publishing") for v in views):
            published_at = time.monotonic()
        bar.show(done, started, "publishing" if published_at is None else "consuming")
        if all(v["status"] in ("done", "done_with_dead_letters") for v in views):
            break
        if time.monotonic() > deadline:
            fail(f"the jobs took longer than {args.timeout} s")
        time.sleep(0.5)
    ended, ended_wall = time.monotonic(), time.time()
    bar.close()
    rows = sum(v["rows"] for v in views)
    rows_done = sum(v["rows_done"] for v in views)
    dead = sum(v["chunks_dead_lettered"] for v in views)
    if rows != args.rows or rows_done != args.rows or dead:
        fail(f"published {rows}, indexed {rows_done}, dead-lettered {dead} chunks: expected {args.rows} rows")

    latency = []
    for p in metrics_ports:
        status, body = http("GET", f"http://127.0.0.1:{p}/metrics")
        if status != 200:
            fail(f"consumer metrics at {p}: {status}")
        latency.append(histogram(body.decode(), "shardflow_consumer_publish_to_index_seconds"))
    merged = {}
    for buckets in latency:
        for bound, count in buckets:
            merged[bound] = merged.get(bound, 0) + count
    merged = sorted(merged.items())
    busy = {"decode_ms": 0.0, "transform_ms": 0.0, "write_ms": 0.0}
    chunks = 0
    first_indexed = ended_wall
    for job in jobs:
        status, body = http("GET", f"{api}/jobs/{job}")
        for output in json.loads(body)["outputs"]:
            chunks += 1
            first_indexed = min(first_indexed, datetime.fromisoformat(output["created_at"]).timestamp())
            for k in busy:
                busy[k] += output[k]
    rss = {"api": peak_rss(processes[-1].pid)}
    for i, p in enumerate(processes[:-1]):
        rss[f"consumer-{i + 1}"] = peak_rss(p.pid)
    wall = ended - started
    stages["publish"] = {"seconds": published_at - started, "rows_per_second": args.rows / (published_at - started)}
    # From the first chunk indexed (`created_at` has whole seconds) to the last.
    consuming = max(ended_wall - first_indexed, 1e-3)
    stages["consume"] = {
        "seconds": consuming,
        "rows_per_second": args.rows / consuming,
        "busy_seconds": {k.removesuffix("_ms"): v / 1000 for k, v in busy.items()},
    }
    summary = {
        "rows": args.rows,
        "shards": len(shards),
        "shard_rows": shard_rows,
        "consumers": args.consumers,
        "partitions": partitions,
        "chunks": chunks,
        "end_to_end": {"seconds": wall, "rows_per_second": args.rows / wall},
        "stages": stages,
        "chunk_latency_seconds": {"p50": quantile(merged, 0.5), "p99": quantile(merged, 0.99), "chunks": merged[-1][1] if merged else 0},
        "peak_rss_bytes": {**{k: v["peak_rss_bytes"] for k, v in stages.items() if "peak_rss_bytes" in v}, **rss},
        "bytes": {
            "shards": tree_bytes(data / "amount"),
            "outputs": tree_bytes(data / "outputs"),
            "broker_growth": tree_bytes(BROKER_FILES) - broker_before,
        },
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report(summary)
    return summary


def report(s):
    mib = 1 << 20
    print(f"\n{s['rows']:,} rows, {s['shards']} shards, {s['consumers']} consumer(s), {s['chunks']} chunks")
    print(f"{'stage':<14} {'seconds':>9} {'rows/s':>14}")
    for name, stage in s["stages"].items():
        print(f"{name:<14} {stage['seconds']:>9.2f} {stage['rows_per_second']:>14,.0f}")
    e = s["end_to_end"]
    print(f"{'end to end':<14} {e['seconds']:>9.2f} {e['rows_per_second']:>14,.0f}   (submit to every row indexed)")
    busy = s["stages"]["consume"]["busy_seconds"]
    print("consumer busy seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in busy.items()))
    lat = s["chunk_latency_seconds"]
    print(f"chunk latency publish to index: p50 <= {lat['p50']} s, p99 <= {lat['p99']} s over {lat['chunks']:.0f} chunks")
    print("peak RSS: " + ", ".join(f"{k} {v / mib:.0f} MiB" for k, v in s["peak_rss_bytes"].items()))
    b = s["bytes"]
    print(f"bytes: shards {b['shards'] / mib:.0f} MiB, outputs {b['outputs'] / mib:.0f} MiB, broker +{b['broker_growth'] / mib:.0f} MiB")


if __name__ == "__main__":
    main()

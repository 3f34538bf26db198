#!/usr/bin/env bash
# Rows per second end to end (POST /jobs with wait, through the broker, two consumers,
# Parquet parts and the ClickHouse index) with the output root on the local disk and in S3
# (SeaweedFS on loopback, started by scripts/services.sh up), alternated in one run.
#
#   scripts/services.sh up && cargo build --release --bins
#   bench/outputs.sh            # BENCH_ROWS=1000000 BENCH_REPEAT=2
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${BENCH_ROWS:-1000000}
repeat=${BENCH_REPEAT:-2}
bin=$PWD/target/release
work=$(mktemp -d /tmp/shardflow-bench.XXXXXX)
port=$((20000 + RANDOM % 20000))
api=http://127.0.0.1:$port
name=bench_outputs_$$
prefix="bench-outputs-$$"
# The SeaweedFS endpoint and keys scripts/services.sh starts it with (testkit/src/objects.rs).
s3_options='aws_endpoint = "http://127.0.0.1:8333"
aws_access_key_id = "shardflow"
aws_secret_access_key = "shardflow-seaweed-secret"
aws_region = "us-east-1"
aws_allow_http = "true"'
config() { # $1: local | s3
  local output="$work/data/outputs"
  [ "$1" = s3 ] && output="s3://shardflow/$prefix/outputs"
  cat <<TOML
[kafka]
topic = "bench.outputs.$$.$1"
group_id = "bench.outputs.$$.$1"
[clickhouse]
database = "$name"
[storage]
data_roots = ["$work/data"]
output_root = "$output"
model_root = "$work/data/models"
[storage.s3]
$s3_options
[api]
listen = "127.0.0.1:$port"
[consumer]
listen = "127.0.0.1:0"
TOML
}
mkdir -p "$work/data/amount"
config local >"$work/local.toml"
config s3 >"$work/s3.toml"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  curl -fsS http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }

say "generating $rows Amount rows in $work"
"$bin/producer" --config "$work/local.toml" generate --rows "$rows" --shard-rows "$rows" --out "$work/data/amount" --seed 42 >/dev/null
"$bin/producer" --config "$work/local.toml" fit --shards "$work/data/amount" --out "$work/data/models/amount" >/dev/null

# Start two consumers and the API on $1's config; wait until they are ready.
start() {
  pids=()
  for i in 1 2; do
    "$bin/consumer" --config "$work/$1.toml" >"$work/consumer-$1-$i.log" 2>&1 & pids+=($!)
  done
  "$bin/producer" --config "$work/$1.toml" serve >"$work/api-$1.log" 2>&1 & pids+=($!)
  local deadline=$((SECONDS + 60))
  until curl -fsS "$api/readyz" >/dev/null 2>&1 && [ "$(grep -l "partitions assigned" "$work"/consumer-"$1"-*.log 2>/dev/null | wc -l)" -ge 1 ]; do
    [ $SECONDS -lt $deadline ] || { say "the API or consumers did not start; see $work"; exit 1; }
    sleep 0.2
  done
}
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

run() {
  local started ended
  started=$(date +%s.%N)
  curl -fsS -X POST "$api/jobs" -H 'content-type: application/json' \
    -d '{"file_path": "amount/Amount_Shard_1.parquet", "wait": true}' -o "$work/answer.json" \
    || { say "job failed: $(cat "$work/answer.json" 2>/dev/null)"; exit 1; }
  ended=$(date +%s.%N)
  grep -q '"status":"done"' "$work/answer.json" || { say "job not done: $(cat "$work/answer.json")"; exit 1; }
  awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.3f", b - a }'
}

printf '%-28s %10s %9s %12s\n' "outputs" "rows" "seconds" "rows/s"
for round in $(seq "$repeat"); do
  for output in local s3; do
    start "$output"
    t=$(run)
    awk -v n="$output (round $round)" -v r="$rows" -v t="$t" 'BEGIN { printf "%-28s %10d %9.2f %12.0f\n", n, r, t, r / t }'
    stop
  done
done

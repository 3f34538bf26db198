#!/usr/bin/env bash
# Rows per second end to end (POST /jobs with wait, through the broker, two consumers,
# Parquet and the ClickHouse index), in one run on the same services: the Amount dataset
# on the version-1 wire (one Avro datum per chunk) and on today's (an Avro OCF per chunk),
# alternated, then a 10-column table (bench/python/table10.py) on today's wire.
#
#   scripts/services.sh up && cargo build --release --bins && scripts/pytools.sh
#   bench/pipeline.sh            # BENCH_ROWS=1000000 BENCH_REPEAT=2
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${BENCH_ROWS:-1000000}
repeat=${BENCH_REPEAT:-2}
bin=$PWD/target/release
python=$PWD/.services/venv/bin/python
work=$(mktemp -d /tmp/shardflow-bench.XXXXXX)
port=$((20000 + RANDOM % 20000))
api=http://127.0.0.1:$port
name=bench_pipeline_$$
cat >"$work/config.toml" <<TOML
[kafka]
topic = "bench.pipeline.$$"
group_id = "bench.pipeline.$$"
[clickhouse]
database = "$name"
[storage]
data_roots = ["$work/data"]
output_root = "$work/data/outputs"
model_root = "$work/data/models"
[api]
listen = "127.0.0.1:$port"
[consumer]
listen = "127.0.0.1:0"
TOML
mkdir -p "$work/data/amount" "$work/data/table"

pids=()
api_pid=""
cleanup() {
  for p in "${pids[@]}" $api_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  curl -fsS http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }

say "generating $rows Amount rows and a $rows-row 10-column table in $work"
"$bin/producer" --config "$work/config.toml" generate --rows "$rows" --shard-rows "$rows" --out "$work/data/amount" --seed 42 >/dev/null
"$python" bench/python/table10.py "$rows" "$work/data/table/table10.parquet"
"$bin/producer" --config "$work/config.toml" fit --shards "$work/data/amount" --out "$work/data/models/amount" >/dev/null
"$bin/producer" --config "$work/config.toml" fit --shards "$work/data/table" --dataset table10 --out "$work/data/models/table10" >/dev/null

for i in 1 2; do
  "$bin/consumer" --config "$work/config.toml" >"$work/consumer-$i.log" 2>&1 & pids+=($!)
done

start_api() {
  SHARDFLOW__PUBLISH__WIRE=$1 "$bin/producer" --config "$work/config.toml" serve >"$work/api-$1.log" 2>&1 &
  api_pid=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS "$api/readyz" >/dev/null 2>&1 && grep -q "partitions assigned" "$work"/consumer-*.log; do
    [ $SECONDS -lt $deadline ] || { say "the API or consumers did not start; see $work"; exit 1; }
    sleep 0.2
  done
}
stop_api() { kill "$api_pid"; wait "$api_pid" 2>/dev/null || true; api_pid=""; }

# One job, waited for; prints the seconds it took.
run() {
  local body=$1 started ended
  started=$(date +%s.%N)
  curl -fsS -X POST "$api/jobs" -H 'content-type: application/json' -d "$body" -o "$work/answer.json" \
    || { say "job failed: $(cat "$work/answer.json" 2>/dev/null)"; exit 1; }
  ended=$(date +%s.%N)
  grep -q '"status":"done"' "$work/answer.json" || { say "job not done: $(cat "$work/answer.json")"; exit 1; }
  awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.3f", b - a }'
}

amount='{"file_path": "amount/Amount_Shard_1.parquet", "wait": true}'
table='{"file_path": "table/table10.parquet", "dataset": "table10", "wait": true}'
printf '%-36s %10s %9s %12s\n' "run" "rows" "seconds" "rows/s"
report() { awk -v n="$1" -v r="$rows" -v t="$2" 'BEGIN { printf "%-36s %10d %9.2f %12.0f\n", n, r, t, r / t }'; }
for round in $(seq "$repeat"); do
  for wire in amount-datum ocf; do
    start_api "$wire"
    report "Amount, wire $wire (round $round)" "$(run "$amount")"
    [ "$wire" = ocf ] && report "10-column table, wire ocf (round $round)" "$(run "$table")"
    stop_api
  done
done

#!/usr/bin/env bash
# The main job end to end: generate shards, fit, start the API and two consumers,
# submit a shard through the API, print the answer and where the outputs are.
# Run through `make demo`, which starts the services and builds first.
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${DEMO_ROWS:-4000000}
shard_rows=${DEMO_SHARD_ROWS:-1000000}
bin=target/release
logs=.demo
api=http://127.0.0.1:8000
mkdir -p "$logs" data
export SHARDFLOW__CLICKHOUSE__DATABASE=${SHARDFLOW__CLICKHOUSE__DATABASE:-shardflow_demo}
export SHARDFLOW__KAFKA__TOPIC=${SHARDFLOW__KAFKA__TOPIC:-shardflow.demo}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "generate $rows rows in shards of $shard_rows"
"$bin/producer" generate --rows "$rows" --shard-rows "$shard_rows" --out data/shards --seed 42

step "fit the transform on a sample of every shard"
"$bin/producer" fit --shards data/shards --out data/models/demo

step "start the API and two consumers (logs in $logs/)"
"$bin/producer" serve >"$logs/api.log" 2>&1 & pids+=($!)
"$bin/consumer" >"$logs/consumer-1.log" 2>&1 & pids+=($!)
"$bin/consumer" >"$logs/consumer-2.log" 2>&1 & pids+=($!)
ready() {
  curl -fsS "$api/readyz" >/dev/null 2>&1 &&
    grep -q "partitions assigned" "$logs/consumer-1.log" && grep -q "partitions assigned" "$logs/consumer-2.log"
}
deadline=$((SECONDS + 90))
until ready; do
  [ $SECONDS -lt $deadline ] || { echo "API or consumers did not start; see $logs/" >&2; exit 1; }
  sleep 0.2
done

step "POST /transforming_data {\"file_path\": \"shards/Amount_Shard_1.parquet\"}"
response=$(curl -fsS -X POST "$api/transforming_data" -H 'content-type: application/json' \
  -d '{"file_path": "shards/Amount_Shard_1.parquet"}')
echo "$response"
job=$(printf '%s' "$response" | sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p')
transformed=$(printf '%s' "$response" | sed -n 's/.*"transformed_file_path":"\([^"]*\)".*/\1/p')
inverse=$(printf '%s' "$response" | sed -n 's/.*"inverse_transformed_file_path":"\([^"]*\)".*/\1/p')
took=$(printf '%s' "$response" | sed -n 's/.*"total_time_taken":"\([0-9.]*\) seconds".*/\1/p')
job_rows=$(printf '%s' "$response" | sed -n 's/.*"rows":\([0-9]*\).*/\1/p')

step "GET /jobs/$job"
curl -fsS "$api/jobs/$job" | sed 's/"outputs":\[.*\]/"outputs":[...]/'
echo

step "outputs"
echo "transformed: $transformed ($(ls "$transformed" | wc -l) parts)"
echo "inverse:     $inverse ($(ls "$inverse" | wc -l) parts)"

step "work per consumer (from ClickHouse)"
curl -fsS "http://127.0.0.1:8123/" --data-binary "SELECT worker, count() AS chunk_count, sum(rows) AS row_count,
  round(sum(decode_ms)) AS decode_total_ms, round(sum(transform_ms)) AS transform_total_ms, round(sum(write_ms)) AS write_total_ms,
  round(sum(rows) / (sum(decode_ms + transform_ms + write_ms) / 1000)) AS rows_per_busy_second
  FROM $SHARDFLOW__CLICKHOUSE__DATABASE.outputs FINAL WHERE job_id = '$job' GROUP BY worker FORMAT PrettyCompactNoEscapes"
awk -v r="$job_rows" -v t="$took" 'BEGIN { printf "\n%d rows in %.2f s through the API: %.0f rows/s end to end\n", r, t, r / t }'

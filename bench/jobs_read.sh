#!/usr/bin/env bash
# What GET /jobs/{id} costs beside a small and a large history: one job (8 chunks with
# outputs, 2 dead-lettered) among 10, then 100,000, rows of other jobs' outputs and dead
# letters (half each, payloads of a few hundred bytes, other jobs' rows in `jobs` too). The API serves from
# its own database; each size is read BENCH_REQUESTS times (after a few warm-up reads)
# with curl and the median and 90th percentile are printed in milliseconds.
#
#   scripts/services.sh up && cargo build --bins      # or --release; BENCH_BIN picks the dir
#   bench/jobs_read.sh                                 # BENCH_REQUESTS=200
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${BENCH_REQUESTS:-200}
producer=${BENCH_PRODUCER:-${BENCH_BIN:-$PWD/target/debug}/producer}
work=$(mktemp -d /tmp/shardflow-bench.XXXXXX)
port=$((20000 + RANDOM % 20000))
api=http://127.0.0.1:$port
name=bench_jobs_read_$$
job=0190aaaa-0000-7000-8000-000000000001
cat >"$work/config.toml" <<TOML
[kafka]
topic = "bench.jobs_read"
group_id = "bench.jobs_read"
[game_rounds]
topic = "bench.jobs_read.rounds"
[clickhouse]
database = "$name"
[storage]
data_roots = ["$work/data"]
output_root = "$work/data/outputs"
model_root = "$work/data/models"
[api]
listen = "127.0.0.1:$port"
TOML
mkdir -p "$work/data"

api_pid=""
cleanup() {
  [ -z "$api_pid" ] || kill "$api_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  curl -fsS http://127.0.0.1:8123/ --data-binary "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }
sql() { curl -fsS http://127.0.0.1:8123/ --data-binary "$1"; }

"$producer" --config "$work/config.toml" serve >"$work/api.log" 2>&1 &
api_pid=$!
deadline=$((SECONDS + 60))
until curl -fsS "$api/readyz" >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { say "the API did not start; see $work/api.log"; exit 1; }
  sleep 0.2
done

# The job read: published, 8 chunks with outputs and 2 dead letters (re-inserted by `history`).
sql "INSERT INTO $name.jobs (job_id, dataset, source, model_id, status, rows, chunks, created_at, updated_at, version)
     VALUES ('$job', 'Amount', 'a.parquet', 'm', 'published', 1000, 10, now(), now(), 1)"

# Other jobs' history: `rows` rows in all, half outputs, half dead letters, 100 per job.
history() {
  local rows=$1 half=$(($1 / 2))
  sql "TRUNCATE TABLE $name.outputs"
  sql "TRUNCATE TABLE $name.dead_letters"
  sql "INSERT INTO $name.outputs (job_id, chunk, rows, transform_path, inverse_path, worker, created_at)
       SELECT '$job', number, 100, 't', 'i', 'w', now() FROM system.numbers LIMIT 8"
  sql "INSERT INTO $name.dead_letters (topic, partition, offset, job_id, chunk, error, payload, worker, created_at)
       SELECT 'bench', 0, number, '$job', 8 + number, 'bad', arrayStringConcat(arrayMap(x -> hex(number * 7 + x), range(64))), 'w', now() FROM system.numbers LIMIT 2"
  sql "INSERT INTO $name.jobs (job_id, dataset, source, model_id, status, rows, chunks, created_at, updated_at, version)
       SELECT concat('other-', toString(number)), 'Amount', 'a.parquet', 'm', 'published', 10000, 100, now(), now(), 1
       FROM system.numbers LIMIT $(((rows + 99) / 100))"
  sql "INSERT INTO $name.outputs (job_id, chunk, rows, transform_path, inverse_path, worker, created_at)
       SELECT concat('other-', toString(intDiv(number, 50))), number % 50, 100, 't', 'i', 'w', now()
       FROM system.numbers LIMIT $half"
  sql "INSERT INTO $name.dead_letters (topic, partition, offset, job_id, chunk, error, payload, worker, created_at)
       SELECT 'bench', 1, number, concat('other-', toString(intDiv(number, 50))), 50 + number % 50, 'bad',
              arrayStringConcat(arrayMap(x -> hex(number * 7 + x), range(64))), 'w', now()
       FROM system.numbers LIMIT $((rows - half))"
}

# Median and 90th percentile of `requests` reads, in ms.
measure() {
  for _ in 1 2 3 4 5; do curl -fsS "$api/jobs/$job" -o /dev/null; done
  for _ in $(seq "$requests"); do
    curl -fsS "$api/jobs/$job" -o /dev/null -w '%{time_total}\n'
  done | sort -n | awk '{ t[NR] = $1 * 1000 } END { printf "median %.2f ms, p90 %.2f ms", t[int((NR + 1) / 2)], t[int(NR * 0.9)] }'
}

for rows in 10 100000; do
  history "$rows"
  answer=$(curl -sS "$api/jobs/$job")
  grep -q '"chunks_dead_lettered":2' <<<"$answer" || { say "unexpected answer: $answer"; exit 1; }
  printf 'GET /jobs/{id} beside %6d rows of other jobs: %s over %d requests\n' "$rows" "$(measure)" "$requests"
done

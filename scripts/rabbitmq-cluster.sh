#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server package, for `make faults-cluster`:
#   scripts/rabbitmq-cluster.sh start    start every node that is not running, join the ones not yet clustered
#   scripts/rabbitmq-cluster.sh stop     stop every node (their data stays under var/rabbitmq-cluster)
#   scripts/rabbitmq-cluster.sh status   each node: running or not, its beam pid and ports; the cluster's members
#
# Node i (1..3) is push-cluster-i@localhost: AMQP on 127.0.0.1:$((BASE_PORT + i - 1)), management on
# 10000 more, Erlang distribution on 20000 more, data, logs, pid file and config under var/rabbitmq-cluster/node-i,
# and one Erlang cookie in var/rabbitmq-cluster/home (HOME of the nodes and of the CLI commands run here).
# The machine's own node (rabbit@localhost on 5672, its cookie in /var/lib/rabbitmq, its /etc/rabbitmq files)
# is never touched: every path, name and port is set here. Only epmd, Erlang's port mapper, is shared.
# A node killed (kill -9 of the pid in its pid file) comes back with `start` and rejoins from its data.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
#: AMQP port of node 1; nodes 2 and 3 take the next ones.
BASE_PORT="${RABBITMQ_CLUSTER_BASE_PORT:-5681}"
DIR="${RABBITMQ_CLUSTER_DIR:-$ROOT/var/rabbitmq-cluster}"
NODES=3
#: Seconds a node may take to boot (three nodes boot at once on a shared 2-core machine).
BOOT_TIMEOUT=180
SBIN=/usr/lib/rabbitmq/bin

node_name() { echo "push-cluster-$1@localhost"; }
amqp_port() { echo $((BASE_PORT + $1 - 1)); }
management_port() { echo $((BASE_PORT + 10000 + $1 - 1)); }
dist_port() { echo $((BASE_PORT + 20000 + $1 - 1)); }
node_dir() { echo "$DIR/node-$1"; }

ensure_package() {
  [ -x "$SBIN/rabbitmq-server" ] && return 0
  echo "installing rabbitmq-server (Debian package)..." >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
}

# The environment of node $1 (server and CLI): nothing falls back to the machine's /etc/rabbitmq or cookie.
node_env() {
  local n="$1" d
  d="$(node_dir "$n")"
  export HOME="$DIR/home"
  export RABBITMQ_NODENAME; RABBITMQ_NODENAME="$(node_name "$n")"
  export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$d/mnesia"
  export RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_PID_FILE="$d/rabbitmq.pid"
  export RABBITMQ_DIST_PORT; RABBITMQ_DIST_PORT="$(dist_port "$n")"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT; RABBITMQ_NODE_PORT="$(amqp_port "$n")"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

write_files() {
  mkdir -p "$DIR/home"
  if [ ! -s "$DIR/home/.erlang.cookie" ]; then
    head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$DIR/home/.erlang.cookie"
  fi
  chmod 400 "$DIR/home/.erlang.cookie"
  : >"$DIR/rabbitmq-env.conf"
  echo "[rabbitmq_management]." >"$DIR/enabled_plugins"
  local n d
  for n in $(seq 1 "$NODES"); do
    d="$(node_dir "$n")"
    mkdir -p "$d/mnesia" "$d/log"
    echo "[]." >"$d/advanced.config"
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(management_port "$n")
# Quorum queue leaders spread over the nodes, not all on the node their declaring client reached.
queue_leader_locator = balanced
# Explicit: every delayed message the workers hold stays under it (shared/broker.py RABBITMQ_CONSUMER_TIMEOUT_MS).
consumer_timeout = 1800000
# A 3-node cluster: the minority side of a partition pauses instead of diverging.
cluster_partition_handling = pause_minority
# Three nodes share this machine: flush the quorum queues' write-ahead log at 64 MB, not 512 MB.
raft.wal_max_size_bytes = 64000000
EOF
  done
}

pid_of() {
  local f
  f="$(node_dir "$1")/rabbitmq.pid"
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

running() { ( node_env "$1"; "$SBIN/rabbitmq-diagnostics" -q check_running >/dev/null 2>&1 ); }

ctl() { local n="$1"; shift; ( node_env "$n"; "$SBIN/rabbitmqctl" "$@" ); }

clustered_with_first() {
  ( node_env 1; "$SBIN/rabbitmqctl" -q cluster_status --formatter json 2>/dev/null ) |
    python3 -c "import json,sys; print('\n'.join(json.load(sys.stdin).get('disk_nodes', [])))" 2>/dev/null |
    grep -qx "$(node_name "$1")"
}

start() {
  ensure_package
  write_files
  local n started=()
  for n in $(seq 1 "$NODES"); do
    if [ -n "$(pid_of "$n" || true)" ]; then continue; fi
    ( node_env "$n"; "$SBIN/rabbitmq-server" -detached >>"$(node_dir "$n")/log/start.out" 2>&1 )
    started+=("$n")
  done
  local deadline=$((SECONDS + BOOT_TIMEOUT))
  for n in $(seq 1 "$NODES"); do
    until running "$n"; do
      if [ "$SECONDS" -gt "$deadline" ]; then
        echo "node $(node_name "$n") did not start within ${BOOT_TIMEOUT}s (see $(node_dir "$n")/log)" >&2
        exit 1
      fi
      sleep 1
    done
  done
  for n in $(seq 2 "$NODES"); do
    clustered_with_first "$n" && continue
    echo "joining $(node_name "$n") to $(node_name 1)..." >&2
    ctl "$n" -q stop_app
    ctl "$n" -q join_cluster "$(node_name 1)"
    ctl "$n" -q start_app
  done
  for n in $(seq 1 "$NODES"); do
    until running "$n"; do sleep 1; done
  done
  echo "cluster running: started ${#started[@]} node(s)" >&2
  status
}

stop() {
  local n pid
  for n in $(seq 1 "$NODES"); do
    pid="$(pid_of "$n" || true)"
    [ -z "$pid" ] && continue
    ctl "$n" -q stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "stopped $(node_name "$n")" >&2
  done
}

status() {
  local n pid state
  for n in $(seq 1 "$NODES"); do
    pid="$(pid_of "$n" || true)"
    if [ -n "$pid" ] && running "$n"; then state=running; elif [ -n "$pid" ]; then state=booting; else state=stopped; fi
    echo "$(node_name "$n") $state pid=${pid:--} amqp=127.0.0.1:$(amqp_port "$n") management=127.0.0.1:$(management_port "$n") dist=$(dist_port "$n")"
  done
  for n in $(seq 1 "$NODES"); do
    if running "$n"; then
      ctl "$n" -q cluster_status --formatter json | python3 -c "import json,sys; s=json.load(sys.stdin); print('members:', ' '.join(s['disk_nodes']), '| running:', ' '.join(s['running_nodes']))"
      return 0
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

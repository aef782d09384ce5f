#!/usr/bin/env bash
# Make sure a RabbitMQ answers on 127.0.0.1:5672: install Debian's rabbitmq-server
# and start it when nothing does. Idempotent; used by `make run` and `make test`.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
management_open() { (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; }

# Queue depth (/admin/queues, /metrics, ops.queues) reads the management API: enable its plugin
# on a running broker that lacks it (a machine's preinstalled RabbitMQ), online, without a restart.
ensure_management() {
  management_open && return 0
  echo "enabling rabbitmq_management..." >&2
  rabbitmq-plugins enable rabbitmq_management >/dev/null 2>&1 || { echo "could not enable rabbitmq_management" >&2; return 0; }
  for _ in $(seq 1 60); do management_open && return 0; sleep 1; done
  echo "rabbitmq_management did not answer on 15672" >&2
}

if port_open; then
  ensure_management
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server (Debian package)..." >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
fi

echo "starting rabbitmq-server..." >&2
# The management plugin serves queue depth to /metrics and to ops.
rabbitmq-plugins --offline enable rabbitmq_management >/dev/null 2>&1 || true
rabbitmq-server -detached >/dev/null 2>&1 || true
# `rabbitmqctl await_startup` right after a detached start fails; poll instead.
for _ in $(seq 1 120); do
  if rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && port_open; then
    ensure_management
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not start within 120 s" >&2
exit 1

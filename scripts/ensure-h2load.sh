#!/usr/bin/env bash
# Debian's nghttp2-client for h2load, which `make bench` drives the API's HTTP server (bench/http_rate.py) and the simulators (bench/simulators.py) with.
# Idempotent; used by `make bench`.
set -euo pipefail

command -v h2load >/dev/null 2>&1 && exit 0
echo "installing nghttp2-client (Debian package) for h2load..." >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
command -v h2load >/dev/null 2>&1 || { echo "h2load not found after installing nghttp2-client" >&2; exit 1; }

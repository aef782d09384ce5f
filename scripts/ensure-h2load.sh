#!/bin/sh
# h2load (Debian's nghttp2-client), the C HTTP/2 load generator bench/simulators.py measures the simulators with.
set -e
command -v h2load >/dev/null 2>&1 && exit 0
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client

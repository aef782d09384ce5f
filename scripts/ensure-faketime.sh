#!/usr/bin/env bash
# Debian's faketime (libfaketime) for the clock-skew tests (tests/integration/test_clock_skew.py): API and worker
# processes started with their clocks 120 s behind and ahead. Those tests fail, naming this package, without it.
set -uo pipefail

ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 && exit 0
echo "installing faketime (Debian package) for the clock-skew tests..." >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends faketime >/dev/null; }; then
  echo "faketime not installed: the clock-skew tests will fail" >&2
fi
exit 0

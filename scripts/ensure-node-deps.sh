#!/usr/bin/env bash
# The npm packages of the SDK tests (tests/node: walletconnect@0.7.28 and js-walletconnect-core@0.7.28,
# pinned by its package-lock.json), installed with `npm ci` from the npm registry when missing or when the
# lock file changed. Needs Node 20 or newer (installed from Debian's nodejs package when there is none).
set -euo pipefail

DIR="$(cd "$(dirname "$0")/../tests/node" && pwd)"
STAMP="$DIR/node_modules/.installed-$(sha1sum "$DIR/package-lock.json" | cut -c1-12)"
#: The oldest Node major the SDK flow runs on (its global fetch).
MIN_NODE_MAJOR=20

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm (Debian packages) for the SDK tests..." >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt "$MIN_NODE_MAJOR" ]; then
  echo "the SDK tests need Node $MIN_NODE_MAJOR or newer, this machine has $(node --version)" >&2
  exit 1
fi
[ -e "$STAMP" ] && exit 0
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
touch "$STAMP"

#!/usr/bin/env bash
# Installs dependencies, builds, and runs the snapshotter in the foreground with its embedded
# defaults (socket /run/lazypull/lazypull.sock, root /var/lib/lazypull). Extra arguments are
# passed to lazypull-snapshotter (e.g. --config /etc/lazypull/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec ./"${BUILD_DIR:-build}"/bin/lazypull-snapshotter "$@"

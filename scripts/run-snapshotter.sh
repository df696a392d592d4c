#!/usr/bin/env bash
# Installs what the daemon needs (install-deps.sh run), builds only the daemon and the CLI
# (build.sh --daemon: Release, no tests or benchmarks, into ${BUILD_DIR:-build-release}), and
# runs the snapshotter in the foreground with its embedded defaults (socket
# /run/lazypull/lazypull.sock, root /var/lib/lazypull). Extra arguments are passed to
# lazypull-snapshotter (e.g. --config /etc/lazypull/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh run
bash scripts/build.sh --daemon
exec ./"${BUILD_DIR:-build-release}"/bin/lazypull-snapshotter "$@"

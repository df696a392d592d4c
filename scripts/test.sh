#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit, root/FUSE, containerd end to end,
# containerd's conformance suite, bounded fuzzing) with ctest, printing ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
# A failed test is run once more (--repeat until-pass:2): the end-to-end tests drive real
# containerd/runc/registry processes whose own races (e.g. ctr's stdout copy) are not ours. A
# test that fails twice fails the run; ctest's output shows every failed attempt.
ctest --output-on-failure --timeout 1200 -j "${CTEST_JOBS:-2}" --repeat until-pass:2 "$@"

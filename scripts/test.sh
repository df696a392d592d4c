#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test (unit, root/FUSE, containerd end to end,
# containerd's conformance suite, bounded fuzzing, the unit tests again under ASan+UBSan) with
# ctest, printing ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 1200 -j "${CTEST_JOBS:-2}" "$@"

#!/bin/bash
# Builds the libFuzzer targets with clang (ASan + UBSan) into BUILD_DIR (a sub-build of just
# the fuzz project) and runs each for LAZYPULL_FUZZ_SECONDS (default 25) seconds from a
# generated seed corpus. Exits non-zero on a build failure or any finding (crash, leak, UB,
# timeout, OOM); findings are kept in BUILD_DIR/artifacts.
# Usage: run_fuzzers.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
out=$2
secs=${LAZYPULL_FUZZ_SECONDS:-25}
targets="estargz_fuzzer zstd_chunked_fuzzer toc_json_fuzzer codec_fuzzer erofs_writer_fuzzer
  tar_fuzzer oci_fuzzer byteranges_fuzzer elf_fuzzer ld_so_cache_fuzzer elf_walk_fuzzer
  ztoc_fuzzer zinfo_fuzzer fine_index_fuzzer pyc_fuzzer"

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(cd "$src/.." && pwd)} CCACHE_NOHASHDIR=1
fi
cmake -S "$src/tests/fuzz/project" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" \
  >"$out.configure.log" 2>&1 ||
  { cat "$out.configure.log"; exit 1; }
ninja -C "$out" -j2 $targets seed_gen

rm -rf "$out/seeds" "$out/corpus" "$out/artifacts"
mkdir -p "$out/corpus" "$out/artifacts"
"$out/seed_gen" "$out/seeds"
# -fno-sanitize-recover already makes UB fatal; the stack says where.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
for t in $targets; do
  mkdir -p "$out/corpus/$t"
  echo "== $t: ${secs}s"
  if ! "$out/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=262144 \
      -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" \
      "$out/corpus/$t" "$out/seeds/$t" >"$out/$t.log" 2>&1; then
    echo "FINDING in $t:"
    tail -n 60 "$out/$t.log"
    failed=1
  else
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$out/$t.log" | tail -n 2 || true
  fi
done
exit $failed

#!/usr/bin/env bash
# ci_fuzz.sh — bounded fuzzing of every libFuzzer target, for CI: ingestion
# (bytes -> image -> model tensor), the GGUF model loader, the worker frame
# decoder, the question parser and the Orthanc plugin's request parsing, each
# for CXR_FUZZ_SECONDS (default 30)
# with OSS-Fuzz-like limits (-rss_limit_mb=2048 -malloc_limit_mb=2048
# -timeout=10, -max_len per target). Fails on any crash, leak, timeout,
# out-of-memory or sanitizer report, and prints inputs tried and CPU seconds
# per target.
#
# Build: the fuzz build tests/fuzz/run_fuzz.sh configures (clang,
# -DCXR_FUZZ=ON -DCXR_SANITIZE=ON, the library compiled with
# -fsanitize=fuzzer-no-link) in build-fuzz/ (override: CXR_FUZZ_BUILD); when
# that build does not exist yet, run_fuzz.sh is run once for 1 s to create
# it, then every fuzz target is built there. The fuzz_question target comes
# from cmake/hardening.cmake, which the top-level CMakeLists.txt includes.
#
# Seeds (never written to): ingestion — tests/fuzz/corpus, sample_data and
# the malformed suite (tests/malformed/generate.py, written into the build
# folder; CXR_FUZZ_MALFORMED_SEEDS=0 skips it); GGUF — tests/fuzz/corpus_gguf;
# frames — tests/fuzz/corpus_frame; questions — tests/data/questions.tsv, one
# file per question; plus tests/fuzz/regressions/<target>/ for each. New
# inputs go to BUILD/fuzz-work/ci/<target>/corpus, crashes to
# .../artifacts (emptied at the start of each run).
#
# A crash found: minimise it (the command is printed), save the result as
# tests/fuzz/regressions/<target>/<what> — ctest replays that folder
# (cmake/hardening.cmake) — and fix the bug.
#
# Usage: tests/fuzz/ci_fuzz.sh [TARGET...]   (default: all five)
# Environment: CXR_FUZZ_SECONDS, CXR_FUZZ_BUILD, CXR_FUZZ_BUILD_JOBS (2).
# Exit status: 0 when every target ran its time without a finding, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECS=${CXR_FUZZ_SECONDS:-30}
BUILD=${CXR_FUZZ_BUILD:-build-fuzz}
export CXR_FUZZ_BUILD=$BUILD
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
  echo "ci_fuzz: CXR_FUZZ_SECONDS must be a positive integer" >&2
  exit 2
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_ingest fuzz_gguf fuzz_frame fuzz_question fuzz_plugin_request)
WORK=$BUILD/fuzz-work/ci
mkdir -p "$WORK"

# ---- build (configured by run_fuzz.sh, not here)
if ! grep -qs '^CXR_FUZZ:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  echo "ci_fuzz: configuring $BUILD through tests/fuzz/run_fuzz.sh (1-second smoke run)"
  tests/fuzz/run_fuzz.sh 1 >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log"; echo "ci_fuzz: run_fuzz.sh failed" >&2; exit 1; }
fi
if ! cmake --build "$BUILD" -j "${CXR_FUZZ_BUILD_JOBS:-2}" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1; then
  tail -30 "$WORK/build.log"
  grep -q "fuzz_question" "$WORK/build.log" && grep -qi "unknown target" "$WORK/build.log" &&
    echo "ci_fuzz: no fuzz_question target: the top-level CMakeLists.txt must include cmake/hardening.cmake" >&2
  echo "ci_fuzz: build failed" >&2
  exit 1
fi

# ---- seeds that are generated, not committed
QSEEDS=$WORK/question-seeds
rm -rf "$QSEEDS" && mkdir -p "$QSEEDS"
awk -F '\t' -v dir="$QSEEDS" '!/^#/ && NF { f = sprintf("%s/q%04d", dir, NR); printf "%s", $1 > f; close(f) }' \
  tests/data/questions.tsv
MSEEDS=$WORK/malformed-seeds
if [ "${CXR_FUZZ_MALFORMED_SEEDS:-1}" != 0 ] && [[ " ${TARGETS[*]} " == *" fuzz_ingest "* ]]; then
  rm -rf "$MSEEDS"
  /usr/bin/python3 tests/malformed/generate.py "$MSEEDS" >/dev/null 2>"$WORK/malformed-seeds.log" ||
    echo "ci_fuzz: malformed seeds not generated (see $WORK/malformed-seeds.log)"
  rm -f "$MSEEDS/manifest.json"
fi

seeds_for() {
  case $1 in
    fuzz_ingest) echo tests/fuzz/corpus sample_data "$MSEEDS" ;;
    fuzz_gguf) echo tests/fuzz/corpus_gguf ;;
    fuzz_frame) echo tests/fuzz/corpus_frame ;;
    fuzz_question) echo "$QSEEDS" ;;
    fuzz_plugin_request) echo tests/fuzz/corpus_plugin ;;
  esac
}
max_len_for() {
  case $1 in
    fuzz_ingest) echo 4194304 ;;   # run_fuzz.sh's; the malformed bombs are ~4 MB
    fuzz_gguf) echo 262144 ;;      # twice the largest seed model
    fuzz_frame) echo 65536 ;;
    fuzz_question) echo 4160 ;;    # past CXR_QUESTION_MAX_BYTES (2048), the "too long" path
    fuzz_plugin_request) echo 70000 ;; # past OP_MAX_BODY_BYTES (64 KiB), the 413 path
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
TIMEFORMAT='%U %S'
fail=0
summary=()
for t in "${TARGETS[@]}"; do
  bin=$BUILD/tests/fuzz/$t
  [ -x "$bin" ] || bin=$BUILD/$t
  if [ ! -x "$bin" ]; then
    echo "ci_fuzz: $t was not built" >&2
    fail=1
    summary+=("$(printf '%-14s %12s %10s  %s' "$t" - - "NOT BUILT")")
    continue
  fi
  dir=$WORK/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  rm -f "$dir/artifacts/"*
  seeds=()
  for s in $(seeds_for "$t") "tests/fuzz/regressions/$t"; do [ -d "$s" ] && seeds+=("$s"); done
  echo "ci_fuzz: $t for $SECS s, seeds: ${seeds[*]}"
  log=$dir/fuzz.log
  { time "$bin" -max_total_time="$SECS" -max_len="$(max_len_for "$t")" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" "${seeds[@]}" \
      >"$log" 2>&1; } 2>"$dir/cpu"
  rc=$?
  read -r u s <"$dir/cpu"
  cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.1f", u + s }')
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  found=$(find "$dir/artifacts" -type f | wc -l)
  verdict=ok
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    verdict="FAILED (exit $rc, $found artifact(s))"
    fail=1
    grep -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY" "$log" | head -5
    for a in "$dir/artifacts/"*; do
      [ -f "$a" ] || continue
      echo "  artifact $a"
      echo "  minimise: $bin -minimize_crash=1 -runs=100000 -exact_artifact_path=$a.min $a"
      echo "  then: cp $a.min tests/fuzz/regressions/$t/<what>  (and fix the bug)"
    done
    echo "  log: $log"
  fi
  summary+=("$(printf '%-14s %12s %10s %8s  %s' "$t" "${runs:-?}" "$cpu" "${cov:-?}" "$verdict")")
done

echo
printf '%-14s %12s %10s %8s  %s\n' target "inputs tried" "CPU s" coverage result
printf '%s\n' "${summary[@]}"
exit "$fail"

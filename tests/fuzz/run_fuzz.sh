#!/usr/bin/env bash
# run_fuzz.sh SECONDS [SEED_DIR...] — build the libFuzzer target and fuzz the
# ingestion path for SECONDS seconds.
#
# Build: clang, -fsanitize=fuzzer,address,undefined (cmake -DCXR_FUZZ=ON
# -DCXR_SANITIZE=ON; the library is compiled with -fsanitize=fuzzer-no-link so
# its code is coverage-guided too) in build-fuzz/ (override: CXR_FUZZ_BUILD).
# Seeds: tests/fuzz/corpus, sample_data and every SEED_DIR given that exists
# (e.g. ../shared/data/dicom). The committed corpus is never written to: new
# inputs go to BUILD/fuzz-work/corpus, crashes to BUILD/fuzz-work/artifacts.
# A crash found becomes a regression input: copy it to
# tests/fuzz/corpus/regress-<what>, fix the bug, and ctest replays it
# (fuzz_ingest_replay).
#
# Exit status: 0 no crash in the time given; libFuzzer's status otherwise.
# Environment: CXR_FUZZ_JOBS=N runs N fuzzing processes (-fork=N, crashes do
# not stop the run: check the artifacts directory); CXR_FUZZ_CONFIGURE_ONLY=1
# configures BUILD and stops (ci_fuzz.sh then builds only the targets it runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [SEED_DIR...]" >&2
  exit 2
fi
SECS=$1
shift
BUILD=${CXR_FUZZ_BUILD:-build-fuzz}
JOBS=${CXR_FUZZ_JOBS:-1}

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCXR_FUZZ=ON -DCXR_SANITIZE=ON \
  -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link >/dev/null
[ "${CXR_FUZZ_CONFIGURE_ONLY:-0}" = 1 ] && exit 0
cmake --build "$BUILD" --target fuzz_ingest

WORK=$BUILD/fuzz-work
mkdir -p "$WORK/corpus" "$WORK/artifacts"
SEEDS=(tests/fuzz/corpus)
[ -d sample_data ] && SEEDS+=(sample_data)
for d in "$@"; do
  if [ -d "$d" ]; then SEEDS+=("$d"); else echo "run_fuzz: seed directory $d absent, skipped"; fi
done

ARGS=(-rss_limit_mb=2048 -timeout=10 -max_len=4194304 -max_total_time="$SECS"
      -artifact_prefix="$WORK/artifacts/" -print_final_stats=1)
if [ "$JOBS" -gt 1 ]; then ARGS+=(-fork="$JOBS" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1); fi

echo "run_fuzz: $SECS s, seeds: ${SEEDS[*]}"
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$BUILD/tests/fuzz/fuzz_ingest" "${ARGS[@]}" "$WORK/corpus" "${SEEDS[@]}" || status=$?

found=$(find "$WORK/artifacts" -type f | wc -l)
echo "run_fuzz: status $status, $found artifact(s) in $WORK/artifacts"
find "$WORK/artifacts" -type f -printf '  %p (%s bytes)\n'
exit "$status"
